"""Where a verification's seconds go, and the linear probe with OpenBLAS's threads against one, side by side.

    python bench/verify_cost.py --params configs/mnist-t10k-lenet-dense.yaml --classes 3 --threads 2 \
        --repeats 5 --json bench/results/verify_cost_mnist_t10k_lenet.json

Why: on LeNet-5 a class answer's verification (`verify.verdict.verify`) took 18 of the 24 s a request waited
(docs/results/request-e2e.md), and a cProfile put most of it in scikit-learn's logistic regressions (the
cross-fitted probe): small BLAS calls that OpenBLAS hands to every core. The library now runs those fits on one
BLAS thread (`base.runtime.one_blas_thread`). This bench trains θ0 and four retrains without the request (the
experiment's recipe), takes one retrain as the answer, two as its shadows and one as the held-out retrain, and per
round times the cross-fitted probe both ways (the same folds and fits; "threads" as numpy's OpenBLAS starts, "one"
as the library runs them; odd rounds time "one" first) and each part of `verify` (the reference's own
numbers measured once before, as the request path reads them from the pool). Medians over rounds; the JSON
keeps every round.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import numpy as np
from _common import add_request_args, setup, write_results
from threadpoolctl import threadpool_info

from hyperforget.models.train import train_model
from hyperforget.verify import probe as probe_mod
from hyperforget.verify.lira import lira_audit
from hyperforget.verify.relearn import relearn_steps
from hyperforget.verify.verdict import reference_metrics, verify


def probe_with_machine_threads(model, x, y, folds, classes, c: float) -> float:
    """`probe.probe_confidence` as it ran before the one-thread block: the same fits, BLAS threads as found."""
    feats, labels = probe_mod._features(model, x), y.numpy()
    keep = np.isin(labels, list(classes))
    p_true = np.zeros(len(labels))
    for fit, score in folds:
        fitted = probe_mod._probe(c).fit(feats[fit], labels[fit])
        col = np.searchsorted(fitted.classes_, labels[score])
        p_true[score] = fitted.predict_proba(feats[score])[np.arange(len(score)), col]
    mean = float(np.clip(p_true[keep].mean(), 1e-6, 1 - 1e-6))
    return float(np.log(mean / (1 - mean)))


def timed(fn, *args) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_request_args(ap)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default="bench/results/verify_cost.json")
    ap.add_argument("--md", default=None)
    args = ap.parse_args()
    params, inputs = setup(args)
    data, split, spec = inputs.data, inputs.split, inputs.spec
    cfg = params.evaluation.verification
    classes = list(split.classes or ())
    if not classes:
        raise SystemExit("the probe and relearning need a class request: pass --classes")
    retrains = []
    for seed in range(1000, 1004):
        model = spec.build(seed=seed)
        train_model(model, data.x_train[split.retain_idx], data.y_train[split.retain_idx], params.train, seed=seed)
        retrains.append(model.eval())
    answer, shadows, held_out = retrains[0], retrains[1:3], retrains[3]
    x, y, folds = probe_mod.confidence_sets(data, cfg.seed, cfg.probe_pool_per_class)
    sets = probe_mod.probe_sets(data, cfg.seed, cfg.probe_per_class)
    xf, yf = data.x_train[split.forget_idx], data.y_train[split.forget_idx]
    forgotten = np.isin(data.y_test.numpy(), classes)
    reference = reference_metrics(shadows, data, split, cfg)  # the request path reads it from the pool
    blas = sorted({lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"})
    rounds = []
    for r in range(args.repeats):
        row: dict[str, Any] = {}
        order = ["one", "threads"] if r % 2 else ["threads", "one"]
        for way in order:
            fn = probe_mod.probe_confidence if way == "one" else probe_with_machine_threads
            row[f"probe_logit_{way}"], row[f"probe_{way}_s"] = timed(fn, answer, x, y, folds, classes, cfg.probe_c)
        _, row["lira_s"] = timed(lira_audit, shadows, held_out, answer, xf, yf, cfg.lira_min_var)
        _, row["probe_accuracy_s"] = timed(probe_mod.probe_accuracy, answer, *sets, classes, cfg.probe_c)
        for m in cfg.relearn_m:
            row[f"relearn_m{m}_steps"], row[f"relearn_m{m}_s"] = timed(
                relearn_steps, answer, xf, yf, data.x_test[forgotten], data.y_test[forgotten], m, cfg.relearn_lr,
                cfg.relearn_max_steps, cfg.seed, cfg.relearn_target)
        _, row["verify_s"] = timed(verify, answer, shadows, held_out, data, split, cfg, reference)
        rounds.append(row)
        print(f"round {r}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    med = {k: statistics.median(row[k] for row in rounds) for k in rounds[0] if k.endswith("_s")}
    payload = {"command": "python bench/verify_cost.py " + " ".join(sys.argv[1:]),
               "params": args.params, "classes": classes, "repeats": args.repeats, "torch_threads": args.threads,
               "openblas_threads_found": blas, "median_s": med,
               "probe_speedup": med["probe_threads_s"] / med["probe_one_s"],
               "probe_logit_max_abs_diff": max(abs(r["probe_logit_one"] - r["probe_logit_threads"]) for r in rounds),
               "rounds": rounds}
    text = "\n".join([
        "| part of one verification | median s |", "|---|---:|",
        *(f"| {k[:-2]} | {v:.3f} |" for k, v in med.items()),
        "", f"cross-fitted probe, OpenBLAS threads {blas} → one: {payload['probe_speedup']:.1f}× "
        f"(log-odds differ by at most {payload['probe_logit_max_abs_diff']:.1e})"])
    write_results(args.json, payload, text, args.md)


if __name__ == "__main__":
    main()
