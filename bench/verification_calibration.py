"""Retrain-seed spread of the verification metrics, and where θ0 and the baselines sit against it.

Digits, forget class 3. θ0 is trained as tests/unit/conftest.py does (30 epochs, Adam 1e-2, batch 32,
seed 0); N retrains (seeds 1000…) with the same recipe on D_r. Every role assignment (2 references =
LiRA shadows, 1 held-out retrain, 1 retrain under test) is scored, up to `--rotations` of them; θ0 and
the baselines are scored against the same references. The defaults of `VerificationGates` come from
this script's output (see its docstring).

    .venv/bin/python bench/verification_calibration.py                 # 4 seeds, MLP: the gates' numbers
    .venv/bin/python bench/verification_calibration.py --seeds 12      # wider look at the tails
    .venv/bin/python bench/verification_calibration.py --arch cnn
    .venv/bin/python bench/verification_calibration.py --work work/mnist-lenet --threads 2 \
        --methods head_finetune,salun,scrub,gradtau,dihyfo1,dihyfo2 --relearn-lr 3e-3 1e-3 3e-4 1e-4 \
        --probe-per-class 14 100                                     # a built project: MNIST-60k LeNet

`--work` takes a project folder built by `bench/dihyfo_mnist.py` (its params.yaml, prepared data, θ0, zoo
and hypernetworks): θ0, the data and the retrain recipe are that project's, so the same numbers calibrate
its gates (the MNIST-LeNet experiment's `gates.*` and `evaluation.verification.*` overrides). With several
`--relearn-lr` / `--probe-per-class` values every one is measured on the same models, to choose the
setting that separates θ0 and head-only fine-tuning from the retrains.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hyperforget.base.artifacts import Artifacts
from hyperforget.config.options import VerificationGates, VerificationOptions
from hyperforget.config.overlays import load_params, parse_overrides
from hyperforget.config.params import DataConfig, ForgetConfig, TrainConfig
from hyperforget.data.datasets import forget_split, prepare
from hyperforget.data.readers import import_raw
from hyperforget.models.metrics import accuracy
from hyperforget.models.nets import ModelSpec, predict
from hyperforget.models.train import train_many, train_model
from hyperforget.pipeline import answer
from hyperforget.unlearn import run_method
from hyperforget.unlearn.method import UnlearnInputs
from hyperforget.verify.lira import auc, population_auc, true_class_logit
from hyperforget.verify.probe import probe_accuracy, probe_sets
from hyperforget.verify.relearn import relearn_steps
from hyperforget.verify.verdict import weights_finite
from hyperforget.zoo.shards import load_zoo

RECIPE = TrainConfig(epochs=30, batch_size=32, lr=1e-2)
BASELINES = ("head_finetune", "salun", "scrub")


def _z(phi: np.ndarray, shadows: np.ndarray, min_var: float) -> np.ndarray:
    mu, var = shadows.mean(0), shadows.var(0, ddof=1)
    return (phi - mu) / np.sqrt(np.maximum(var, max(float(var.mean()), min_var)))


def digits_setup(arch: str, seeds: int) -> tuple[UnlearnInputs, list[torch.nn.Module], dict]:
    """θ0 and `seeds` retrains on digits with the unit tests' recipe (the default gates' calibration)."""
    cfg = DataConfig(raw_dir=tempfile.mkdtemp())
    import_raw(cfg)
    data = prepare(cfg)
    spec = ModelSpec(arch, data.input_shape, data.num_classes, 10 if arch == "mlp" else 4)
    theta0 = spec.build(seed=0)
    train_model(theta0, data.x_train, data.y_train, RECIPE, seed=0)
    split = forget_split(data, ForgetConfig(classes=[3]))
    refs = train_many(spec, [1000 + i for i in range(seeds)], data.x_train[split.retain_idx],
                      data.y_train[split.retain_idx], RECIPE)
    return UnlearnInputs(theta0.eval(), spec, data, split, seed=0), refs, {}


def project_setup(work: Path, seeds: int, classes: list[int], sets: list[str]) -> tuple[UnlearnInputs, list, dict]:
    """θ0, data and recipe of a built project folder (+ `--set` overrides, e.g. per-method options); `seeds`
    retrains with its `retrain` options, cached as safetensors under the project (a rerun reuses them when
    data, θ0, request and recipe are the same); its own gates and verification options."""
    art = Artifacts(work)
    params = load_params(art.params, parse_overrides(sets)).model_copy(update={"forget": ForgetConfig(classes=classes)})
    params = params.model_copy(update={"evaluation": params.evaluation.model_copy(update={"retrain_seeds": seeds})})
    ctx = answer.context(params, art)
    t0 = time.perf_counter()
    _, refs = answer.reference_models(params, art, ctx)  # trained once, then read back (checksum-verified)
    print(f"{seeds} retrains of {params.data.name} {params.model.arch}: {time.perf_counter() - t0:.0f} s", flush=True)
    print(zoo_levels(art, classes), flush=True)
    return answer.inputs(params, art, ctx), refs, {"verification": params.evaluation.verification,
                                                   "gates": params.gates, "options": params.method_options}


def zoo_levels(art: Artifacts, classes: list[int]) -> str:
    """The forget-class validation losses the project's zoo holds for this request, per row kind: what
    DiHyFo's prompt percentiles (unlearn.dihyfoN.hi_pct) choose from, beside the models' own (per_model)."""
    zoo, rows = load_zoo(art.zoo)
    forgot = zoo.forget_mask[:, classes].amax(1) > 0
    loss = zoo.class_loss[:, classes].mean(1)
    parts = []
    for kind in sorted({r["kind"] for r in rows}):
        v = loss[forgot & torch.tensor([r["kind"] == kind for r in rows])]
        if len(v):
            parts.append(f"{kind} {len(v)} rows: min {v.min():.2f}, median {v.median():.2f}, max {v.max():.2f}")
    return "zoo rows forgetting the request, forget-class val loss (nats): " + "; ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=("mlp", "cnn"), default="mlp", help="digits: the model trained here")
    ap.add_argument("--work", type=Path, help="a built project folder instead of digits (bench/dihyfo_mnist.py)")
    ap.add_argument("--classes", type=int, nargs="+", default=[3], help="the request (--work only)")
    ap.add_argument("--seeds", type=int, default=4, help="retrain seeds (≥ 4)")
    ap.add_argument("--rotations", type=int, default=300, help="role assignments scored at most")
    ap.add_argument("--methods", default=",".join(BASELINES), help="models scored beside θ0 (DiHyFo: --work)")
    ap.add_argument("--relearn-lr", type=float, nargs="+", help="relearn lrs to measure (default: the options')")
    ap.add_argument("--probe-per-class", type=int, nargs="+", help="probe sizes to measure (default: options')")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], help="param override KEY=VALUE (--work only)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    inputs, refs, project = (project_setup(args.work, args.seeds, args.classes, args.set) if args.work
                             else digits_setup(args.arch, args.seeds))
    data, split = inputs.data, inputs.split
    vo: VerificationOptions = project.get("verification", VerificationOptions())
    gates: VerificationGates = project.get("gates", VerificationGates())
    lrs = args.relearn_lr or [vo.relearn_lr]
    sizes = args.probe_per_class or [vo.probe_per_class]
    xf, yf = inputs.x_forget, inputs.y_forget
    sets = {n: probe_sets(data, vo.seed, n) for n in sizes}  # every size × relearn lr on the same models
    forgotten = torch.isin(data.y_test, torch.tensor(split.classes))
    forgotten_val = torch.isin(data.y_val, torch.tensor(split.classes))

    def per_model(model: torch.nn.Module, name: str) -> dict:
        if not weights_finite(model):
            print(f"  {name}: weights not finite (the method diverged): left out", flush=True)
            return {}
        logits = predict(model, data.x_test)
        out = {"phi": true_class_logit(model, xf, yf),
               **{f"probe{n}": probe_accuracy(model, *sets[n], split.classes, vo.probe_c) for n in sizes},
               "forget_test_acc": accuracy(logits[forgotten], data.y_test[forgotten]),
               "retained_test_acc": accuracy(logits[~forgotten], data.y_test[~forgotten]),
               "forget_val_loss": F.cross_entropy(predict(model, data.x_val[forgotten_val]),
                                                  data.y_val[forgotten_val]).item()}
        for lr in lrs:
            for m in vo.relearn_m:
                out[f"r{m}@{lr:g}"] = relearn_steps(model, xf, yf, data.x_test[forgotten], data.y_test[forgotten],
                                                    m, lr, vo.relearn_max_steps, vo.seed, vo.relearn_target)
        print(f"  {name:14s} forget/retained test acc {out['forget_test_acc']:.3f}/{out['retained_test_acc']:.3f}"
              f"  forget val loss {out['forget_val_loss']:.2f}"
              + "".join(f"  probe({n}/class) {out[f'probe{n}']:.3f}" for n in sizes) + "  "
              + "  ".join(f"relearn m{m}@{lr:g} {out[f'r{m}@{lr:g}']}" for lr in lrs for m in vo.relearn_m),
              flush=True)
        return out

    print(f"{inputs.spec.arch} on {data.name}, classes {split.classes}, {args.seeds} retrain seeds; {vo!r}")
    retrains = [per_model(m, f"retrain{i}") for i, m in enumerate(refs)]
    others = {"theta0": per_model(inputs.original, "theta0")}
    for n in args.methods.split(","):
        res = run_method(n, inputs, project["options"](n) if "options" in project else None)
        print(f"  {n} unlearned in {res.wall_time_s:.1f} s", flush=True)
        others[n] = per_model(res.model, n)
    others = {n: r for n, r in others.items() if r}
    combos = list(itertools.permutations(range(args.seeds), 4))
    rng = np.random.default_rng(0)
    if len(combos) > args.rotations:
        combos = [combos[i] for i in rng.choice(len(combos), args.rotations, replace=False)]
    table: dict[str, list[dict]] = {"retrain": [], **{n: [] for n in others}}
    for a, b, held_out, target in combos:
        shadows = np.stack([retrains[a]["phi"], retrains[b]["phi"]])
        probe_mean = {n: np.mean([retrains[a][f"probe{n}"], retrains[b][f"probe{n}"]]) for n in sizes}
        relearn_mean = {f"m{m}@{lr:g}": np.mean([retrains[a][f"r{m}@{lr:g}"], retrains[b][f"r{m}@{lr:g}"]])
                        for lr in lrs for m in vo.relearn_m}

        z_held = _z(retrains[held_out]["phi"], shadows, vo.lira_min_var)

        def row(r: dict, shadows=shadows, probe_mean=probe_mean, relearn_mean=relearn_mean, z_held=z_held) -> dict:
            z = _z(r["phi"], shadows, vo.lira_min_var)
            return {"lira_auc": population_auc(z), "lira_auc_vs_held_out": auc(z, z_held),
                    **{f"probe_gap({n}/class)": r[f"probe{n}"] - probe_mean[n] for n in sizes},
                    **{f"relearn_ratio_{k}": r[f"r{k[1:]}"] / max(relearn_mean[k], 1e-9) for k in relearn_mean}}

        table["retrain"].append(row(retrains[target]))
        for name, r in others.items():
            table[name].append(row(r))
    limits = {"lira_auc": 0.5 + gates.max_lira_auc_excess, "lira_auc_vs_held_out": float("nan"),
              **{f"probe_gap({n}/class)": gates.max_probe_excess for n in sizes},
              **{f"relearn_ratio_m{m}@{lr:g}": gates.min_relearn_ratio for lr in lrs for m in vo.relearn_m}}
    print(f"{len(combos)} role assignments (2 references, 1 held-out, 1 under test); gates {gates!r}")
    for name, rows in table.items():
        print(f"  {name}")
        for key, limit in limits.items():
            v = np.array([r[key] for r in rows])
            fails = np.mean(v < limit - 1e-9) if key.startswith("relearn") else np.mean(v > limit + 1e-9)
            if key == "lira_auc":  # two-sided when the deficit is set (gates.check_gates: lira_auc_low)
                fails = np.mean((v > limit + 1e-9) | (v < 0.5 - gates.max_lira_auc_deficit - 1e-9))
            gate = "not gated" if np.isnan(limit) else f"fails gate {fails:.1%}"
            print(f"    {key:24s} min {v.min():.3f}  q05 {np.quantile(v, .05):.3f}  median {np.median(v):.3f}"
                  f"  q95 {np.quantile(v, .95):.3f}  max {v.max():.3f}  {gate}")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
