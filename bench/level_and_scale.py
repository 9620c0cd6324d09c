"""DiHyFo's two answers to "relearns too fast": which level it aims at, and the scale of its generated layers.

    python bench/level_and_scale.py --work DIR [--method dihyfo1] [--modes endpoints …] [--classes 0 1 …]
        [--tune-steps 0 300 …] [--refit-steps 300 1000 …] [--json PATH]

Why: on MNIST-60k LeNet-5 DiHyFo-1 (fc1–fc3 generated) relearnt a forgotten class 2–3× faster than a retrain on
exactly the classes where its level matching reached the zoo's target, and passed elsewhere only by staying far
below a retrain's level (docs/results/mnist-lenet.md). Two things were found to differ from a retrain: the target
(the zoo's head_retrain endpoints, under partial generation, leave the class shallower than a true retrain), and
the scale of the generated hidden layers (fc1 up to 2.2× θ0's activation L1, which Adam's relearning reads).
This answers every class of DIR's project (one `bench/class_verdicts.py` built) with each combination, gated as
the product gates it (`answer.unlearn` against DIR's pool, `release.gate`), and reads each answer's hidden
activation scale against θ0's, beside that of DIR's held-out true retrain:

- `endpoints`: the level of the zoo's endpoints, no rescale (DiHyFo-1 before `match_scale` and level retrains);
- `endpoints_scaled`: the same target, the generated layers at θ0's scale (`unlearn/scale.py`);
- `retrains`: the level of the zoo's level retrains (`zoo.level_retrains`, true retrains), no rescale;
- `retrains_scaled`: both (what `configs/mnist-lenet-dense.yaml` now runs);
- `scaled_no_level`: the rescale with no level matching at all;
- `retrains_scaled_row_half`, `retrains_scaled_row`: `retrains_scaled` with the level carried half (λ = 0.5) or
  wholly (λ = 1) by the forgotten row's scale instead of its bias (`level_row_share`, `unlearn/level.py`).

`--tune-steps` runs each mode with each number of fine-tune steps (`tune_steps`, `unlearn/tune.py`: every generated
layer trained on D_r right after sampling, for the retained accuracy a sample loses); a mode at N > 0 steps is
reported as `MODE+tuneN`. `--refit-steps` does the same with the head refit's length (`refit_steps`,
`unlearn/rows.py`), reported as `MODE+refitN` where N is not the project's own.

The `endpoints` modes hide the zoo's level retrains from the method in this process only (DIR's zoo must hold
them for the `retrains` modes). No target is read from the pool's retrains that judge the answers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hyperforget.base.runtime import configure

configure()  # before torch loads, as the CLI does

import torch  # noqa: E402

from hyperforget.base.artifacts import Artifacts  # noqa: E402
from hyperforget.base.io import write_json  # noqa: E402
from hyperforget.config.overlays import load_params  # noqa: E402
from hyperforget.config.params import ForgetConfig  # noqa: E402
from hyperforget.data.datasets import load_dataset  # noqa: E402
from hyperforget.models.nets import load_model  # noqa: E402
from hyperforget.pipeline import answer  # noqa: E402
from hyperforget.publish import release  # noqa: E402
from hyperforget.unlearn import dihyfo  # noqa: E402
from hyperforget.zoo import levels  # noqa: E402

SAMPLE = 4096  # retained training images the hidden layers' scale is read on

MODES = {  # mode: (level source, match_scale, match_level, level_row_share)
    "endpoints": ("endpoints", False, True, 0.0),
    "endpoints_scaled": ("endpoints", True, True, 0.0),
    "retrains": ("retrains", False, True, 0.0),
    "retrains_scaled": ("retrains", True, True, 0.0),
    "scaled_no_level": ("retrains", True, False, 0.0),
    "retrains_scaled_row_half": ("retrains", True, True, 0.5),
    "retrains_scaled_row": ("retrains", True, True, 1.0),
}


@torch.no_grad()
def hidden_scale(model, theta0, x: torch.Tensor) -> list[float]:
    """Mean L1 norm of relu(fc1) and relu(fc2) of `model` over the images x, each over θ0's: where a model's
    hidden layers sit against θ0's scale (a retrain's, or an answer's after every repair)."""
    def l1(m):
        a1 = m.trunk(x)
        return float(a1.abs().sum(1).mean()), float(m.last_block(a1).abs().sum(1).mean())
    return [a / b for a, b in zip(l1(model.eval()), l1(theta0), strict=True)]


@torch.no_grad()
def row_pull(model, data, c: int) -> dict[str, float]:
    """Where the forgotten class's level comes from: its head bias b_c, and the mean of w_c·h (its row through the
    features) over the class's test images (a retrain: b_c ≈ its initial value, the level all in the row)."""
    model.eval()
    head = getattr(model, model.head)
    z = model(data.x_test[data.y_test == c])[:, c]
    return {"bias": float(head.bias[c]), "row_mean": float((z - head.bias[c]).mean())}


def at(per_class: dict, c: int) -> float:
    """A per-class entry, keyed by int in memory or by str once read back from JSON."""
    return per_class[c] if c in per_class else per_class[str(c)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="project folder (holds params.yaml and its pool)")
    ap.add_argument("--method", default="dihyfo1", choices=["dihyfo1", "dihyfo2"])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--classes", nargs="+", type=int, default=list(range(10)))
    ap.add_argument("--tune-steps", nargs="+", type=int, default=[0], help="fine-tune steps, each mode at each")
    ap.add_argument("--refit-steps", nargs="+", type=int, default=None, help="head refit steps, each mode at each "
                    "(default: the project's)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    params = load_params(args.work / "params.yaml")
    art = Artifacts.for_params(args.work / "params.yaml")
    if not levels.read(art.zoo) and any(MODES[m][0] == "retrains" for m in args.modes):
        raise SystemExit(f"the zoo in {art.zoo} holds no level retrains: set zoo.level_retrains and build the zoo")
    theta0 = load_model(art.model)[0].eval()
    data = load_dataset(art.prepare)
    read_retrains = dihyfo.zoo_level_retrains.read
    retained = {}  # per class, the retained training images every model's scale is read on (the same for all)
    for c in args.classes:
        keep = (data.y_train != c).nonzero().flatten()
        retained[c] = data.x_train[keep[torch.randperm(len(keep), generator=torch.Generator().manual_seed(0))[:SAMPLE]]]
    held_out = {}  # a true retrain per class (`bench/class_verdicts.py`'s held-out control), where DIR has one
    for c in args.classes:
        path = art.requests / f"classes-{c}" / "retrain" / "runs" / "bench-retrain" / "model.safetensors"
        if path.exists():
            model = load_model(path)[0]
            held_out[c] = {"hidden_l1_vs_theta0": hidden_scale(model, theta0, retained[c]),
                           "forgotten_row": row_pull(model, data, c)}
    out: dict[str, list] = {}
    own_refit = getattr(params.unlearn, args.method).refit_steps
    for mode, steps, refit in ((m, n, r) for m in args.modes for n in args.tune_steps
                               for r in args.refit_steps or [own_refit]):
        source, scale, level, row_share = MODES[mode]
        dihyfo.zoo_level_retrains.read = read_retrains if source == "retrains" else (lambda _zoo: {})
        opts = getattr(params.unlearn, args.method).model_copy(update={"match_scale": scale, "match_level": level,
                                                                       "level_row_share": row_share,
                                                                       "tune_steps": steps, "refit_steps": refit})
        mode = mode + (f"+tune{steps}" if steps else "") + (f"+refit{refit}" if refit != own_refit else "")
        base = params.model_copy(update={"unlearn": params.unlearn.model_copy(update={args.method: opts})})
        out[mode] = []
        for c in args.classes:
            p = base.model_copy(update={"forget": ForgetConfig(classes=[c], seed=params.forget.seed)})
            rec = answer.unlearn(p, art, args.method, run=f"bench-{args.method}-{mode}")
            gate, v, info = release.gate(rec, p), rec["verification"], rec["info"]
            r = {"class": c, "passed": gate.passed, "failed": [k for k, ch in gate.checks.items() if not ch["passed"]],
                 "lira_auc": v["lira_auc"], "relearn_steps_m10": v["relearn_steps_m10"],
                 "reference_relearn_steps_m10": v["reference"]["relearn_steps_m10"]["mean"],
                 "relearn_steps_m100": v["relearn_steps_m100"],
                 "reference_relearn_steps_m100": v["reference"]["relearn_steps_m100"]["mean"],
                 "retained_acc": rec["report"]["test_retained_acc"],
                 "retained_delta": rec["report"]["test_retained_acc"] - rec["reference"]["test_retained_acc"]["mean"],
                 "worst_acc": rec["report"]["worst_retained_acc"],
                 "reference_worst_acc": rec["reference"]["worst_retained_acc"]["mean"],
                 "unlearn_s": rec["wall_time_s"], "tune": info["tune"], "scale": info["scale"], "level": info["level"]}
            model = load_model(Path(rec["model_path"]))[0]
            r["hidden_l1_vs_theta0"] = hidden_scale(model, theta0, retained[c])
            r["forgotten_row"] = row_pull(model, data, c)
            out[mode].append(r)
            lv = r["level"]
            where = (f"; val loss on it {at(lv['val_loss_before'], c):.1f} → {at(lv['val_loss_after'], c):.1f} "
                     f"(target {at(lv['target_val_loss'], c):.1f})" if lv.get("applied") else "")
            print(f"{mode} class {c}: {'PASS' if r['passed'] else 'FAIL ' + ','.join(r['failed'])}; LiRA "
                  f"{r['lira_auc']:.3f}, relearn m=10 {r['relearn_steps_m10']} (retrains "
                  f"{r['reference_relearn_steps_m10']:.0f}), retained Δ {r['retained_delta']:+.4f}, worst class "
                  f"{r['worst_acc']:.3f} (retrains {r['reference_worst_acc']:.3f}){where}; bias "
                  f"{r['forgotten_row']['bias']:+.1f}, row {r['forgotten_row']['row_mean']:+.1f}", flush=True)
        print(f"{mode}: {sum(r['passed'] for r in out[mode])}/{len(out[mode])} pass", flush=True)
    if args.json:
        write_json(args.json, {"command": "python bench/level_and_scale.py " + " ".join(sys.argv[1:]),
                               "method": args.method, "held_out_retrain": held_out, "modes": out})


if __name__ == "__main__":
    main()
