"""Retrain-seed spread of the verification metrics, and where θ0 and the baselines sit against it.

Digits, forget class 3. θ0 is trained as tests/unit/conftest.py does (30 epochs, Adam 1e-2, batch 32,
seed 0); N retrains (seeds 1000…) with the same recipe on D_r. Every role assignment (2 references =
LiRA shadows, 1 held-out retrain, 1 retrain under test) is scored, up to `--rotations` of them; θ0 and
the baselines are scored against the same references. The defaults of `VerificationGates` come from
this script's output (see its docstring).

    .venv/bin/python bench/verification_calibration.py                 # 4 seeds, MLP: the gates' numbers
    .venv/bin/python bench/verification_calibration.py --seeds 12      # wider look at the tails
    .venv/bin/python bench/verification_calibration.py --arch cnn
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time

import numpy as np
import torch

from hyperforget.config import DataConfig, ForgetConfig, TrainConfig
from hyperforget.data import forget_split, import_raw, prepare
from hyperforget.metrics import accuracy
from hyperforget.models import ModelSpec, predict
from hyperforget.options import VerificationGates, VerificationOptions
from hyperforget.train import train_many, train_model
from hyperforget.unlearn import run_method
from hyperforget.unlearn.method import UnlearnInputs
from hyperforget.verification import (
    auc,
    population_auc,
    probe_accuracy,
    probe_sets,
    relearn_steps,
    true_class_logit,
)

RECIPE = TrainConfig(epochs=30, batch_size=32, lr=1e-2)
BASELINES = ("head_finetune", "salun", "scrub")


def _z(phi: np.ndarray, shadows: np.ndarray, min_var: float) -> np.ndarray:
    mu, var = shadows.mean(0), shadows.var(0, ddof=1)
    return (phi - mu) / np.sqrt(np.maximum(var, max(float(var.mean()), min_var)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=("mlp", "cnn"), default="mlp")
    ap.add_argument("--seeds", type=int, default=4, help="retrain seeds (≥ 4)")
    ap.add_argument("--rotations", type=int, default=300, help="role assignments scored at most")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cfg = DataConfig(raw_dir=tempfile.mkdtemp())
    import_raw(cfg)
    data = prepare(cfg)
    spec = ModelSpec(args.arch, data.input_shape, data.num_classes, 10 if args.arch == "mlp" else 4)
    theta0 = spec.build(seed=0)
    train_model(theta0, data.x_train, data.y_train, RECIPE, seed=0)
    split = forget_split(data, ForgetConfig(classes=[3]))
    xf, yf = data.x_train[split.forget_idx], data.y_train[split.forget_idx]
    refs = train_many(spec, [1000 + i for i in range(args.seeds)], data.x_train[split.retain_idx],
                      data.y_train[split.retain_idx], RECIPE)
    vo, gates = VerificationOptions(), VerificationGates()
    sets = probe_sets(data, vo.seed, vo.probe_per_class)
    forgotten = torch.isin(data.y_test, torch.tensor(split.classes))

    def per_model(model: torch.nn.Module) -> dict:
        logits = predict(model, data.x_test)
        out = {"phi": true_class_logit(model, xf, yf), "probe": probe_accuracy(model, *sets, split.classes, vo.probe_c),
               "forget_test_acc": accuracy(logits[forgotten], data.y_test[forgotten]),
               "retained_test_acc": accuracy(logits[~forgotten], data.y_test[~forgotten])}
        for m in vo.relearn_m:
            out[f"r{m}"] = relearn_steps(model, xf, yf, data.x_test[forgotten], data.y_test[forgotten], m,
                                         vo.relearn_lr, vo.relearn_max_steps, vo.seed, vo.relearn_target)
        return out

    retrains = [per_model(m) for m in refs]
    inputs = UnlearnInputs(theta0.eval(), spec, data, split, seed=0)
    others = {"theta0": per_model(theta0), **{n: per_model(run_method(n, inputs).model) for n in BASELINES}}
    print(f"{args.arch}, {args.seeds} retrain seeds; {vo!r}")
    for name, row in [*((f"retrain{i}", r) for i, r in enumerate(retrains)), *others.items()]:
        print(f"  {name:14s} forget/retained test acc {row['forget_test_acc']:.3f}/{row['retained_test_acc']:.3f}"
              f"  probe {row['probe']:.3f}  " + "  ".join(f"relearn m{m} {row[f'r{m}']}" for m in vo.relearn_m))

    combos = list(itertools.permutations(range(args.seeds), 4))
    rng = np.random.default_rng(0)
    if len(combos) > args.rotations:
        combos = [combos[i] for i in rng.choice(len(combos), args.rotations, replace=False)]
    table: dict[str, list[dict]] = {"retrain": [], **{n: [] for n in others}}
    for a, b, held_out, target in combos:
        shadows = np.stack([retrains[a]["phi"], retrains[b]["phi"]])
        probe_mean = np.mean([retrains[a]["probe"], retrains[b]["probe"]])
        relearn_mean = {m: np.mean([retrains[a][f"r{m}"], retrains[b][f"r{m}"]]) for m in vo.relearn_m}

        z_held = _z(retrains[held_out]["phi"], shadows, vo.lira_min_var)

        def row(r: dict, shadows=shadows, probe_mean=probe_mean, relearn_mean=relearn_mean, z_held=z_held) -> dict:
            z = _z(r["phi"], shadows, vo.lira_min_var)
            return {"lira_auc": population_auc(z), "lira_auc_vs_held_out": auc(z, z_held),
                    "probe_gap": r["probe"] - probe_mean,
                    **{f"relearn_ratio_m{m}": r[f"r{m}"] / relearn_mean[m] for m in vo.relearn_m}}

        table["retrain"].append(row(retrains[target]))
        for name, r in others.items():
            table[name].append(row(r))
    limits = {"lira_auc": 0.5 + gates.max_lira_auc_excess, "lira_auc_vs_held_out": float("nan"),
              "probe_gap": gates.max_probe_excess,
              **{f"relearn_ratio_m{m}": gates.min_relearn_ratio for m in vo.relearn_m}}
    print(f"{len(combos)} role assignments (2 references, 1 held-out, 1 under test); gates {gates!r}")
    for name, rows in table.items():
        print(f"  {name}")
        for key, limit in limits.items():
            v = np.array([r[key] for r in rows])
            fails = np.mean(v < limit - 1e-9) if key.startswith("relearn") else np.mean(v > limit + 1e-9)
            gate = "not gated" if np.isnan(limit) else f"fails gate {fails:.1%}"
            print(f"    {key:20s} min {v.min():.3f}  q05 {np.quantile(v, .05):.3f}  median {np.median(v):.3f}"
                  f"  q95 {np.quantile(v, .95):.3f}  max {v.max():.3f}  {gate}")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
