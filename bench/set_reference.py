"""Can a class set be judged by the reference pool's per-class retrains instead of retrains without the set?

    python bench/set_reference.py [--params FILE] [--set KEY=VALUE ...] [--sets N] [--json PATH] [--md PATH]

Why (issue #22, item 1): the pool holds K retrains without each class, none without a set, so a set request
trains `evaluation.retrain_seeds` retrains of its own before it can be judged (bench/request_e2e.py: that
makes a set request slower than the retrain it replaces). The approximation measured here judges a set S
class by class from the pool: for each a in S, the verification (LiRA on D_f ∩ a, the probe and relearning on
class a) against the pool's retrains without a, with D_r = the classes outside S; the output gates against
the pool's retrains' forget accuracy and MIA on D_f ∩ a and their test accuracy on the classes outside S.
The set passes when every class does. Beside it, the exact reference: the set's own retrains (what a
request with `evaluation.reference: per_request` trains), gated as the product gates a set today.

Judged on each of the first N held-out sets (`zoo.holdout_sets`): a true retrain without the set with a seed
of its own (must pass both), DiHyFo-2, EU-k, `head_finetune` and θ0 (the controls: must fail both). The
approximation holds if the two verdicts agree. Builds (or reuses) work/set-reference-<experiment>/: prepare,
θ0, zoo, DiHyFo-2's hypernetwork, the pool. On digits about 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PARAMS, bench_project, run_pipeline, write_results

from hyperforget.base.artifacts import Artifacts
from hyperforget.config.params import ForgetConfig, Params
from hyperforget.data.datasets import ForgetSplit
from hyperforget.models.metrics import Evaluator, accuracy, summarise
from hyperforget.models.nets import predict
from hyperforget.pipeline import answer, stages
from hyperforget.unlearn import run_method
from hyperforget.verify import pool as pool_mod
from hyperforget.verify.gates import check_gates, verification_checks
from hyperforget.verify.verdict import reference_metrics, shadows_and_held_out, verify

MODELS = ["retrain", "dihyfo2", "eu_k", "head_finetune", "original"]
HELD_OUT_SEED = 500  # the judged retrain's seed offset: none of the set reference's (1000 + i) or the pool's


def outside(data, classes) -> torch.Tensor:
    return ~torch.isin(data.y_test, torch.tensor(list(classes)))


def exact_verdict(p: Params, art: Artifacts, ctx, models: dict) -> dict:
    """The set judged as the product judges it today: its own retrains (per-request reference)."""
    summary, refs = answer.reference_models(p, art, ctx)
    shadows, held = shadows_and_held_out(refs)
    cfg = p.evaluation.verification
    ref_metrics = reference_metrics(shadows, ctx.data, ctx.split, cfg)
    out = {}
    for name, model in models.items():
        checked = verify(model, shadows, held, ctx.data, ctx.split, cfg, ref_metrics)
        g = check_gates(ctx.evaluator.report(model), summary, p.gates, checked)
        out[name] = {"passed": g.passed, "failed": sorted(k for k, c in g.checks.items() if not c["passed"]),
                     "lira_auc": checked["lira_auc"], "probe": checked["probe_forget_acc"],
                     "relearn_steps_m10": checked["relearn_steps_m10"]}
    return out


def approx_verdict(p: Params, pool, ctx, models: dict) -> dict:
    """The set judged class by class against the pool's per-class retrains (see the module docstring)."""
    data, classes, cfg = ctx.data, sorted(p.forget.classes), p.evaluation.verification
    kept = outside(data, classes)
    per_class = {}
    for a in classes:
        split_a = ForgetSplit(ctx.split.forget_idx[data.y_train[ctx.split.forget_idx] == a], ctx.split.retain_idx,
                              (a,))
        ev = Evaluator.for_original(ctx.original, data, split_a, p.evaluation.mia_splits, p.seed)
        refs = pool.class_models(a)
        shadows, held = shadows_and_held_out(refs)
        reports = []
        for r in refs:  # retained accuracy on the classes outside the set, not on every class but a
            rep = ev.report(r)
            reports.append(rep | {"test_retained_acc": accuracy(predict(r, data.x_test[kept]), data.y_test[kept])})
        per_class[a] = {"split": split_a, "evaluator": ev, "summary": summarise(reports), "shadows": shadows,
                        "held": held, "ref_metrics": reference_metrics(shadows, data, split_a, cfg)}
    out = {}
    for name, model in models.items():
        failed, lira, probe, relearn = [], {}, {}, {}
        retained = accuracy(predict(model, data.x_test[kept]), data.y_test[kept])
        for a, pc in per_class.items():
            rep = pc["evaluator"].report(model) | {"test_retained_acc": retained}
            checked = verify(model, pc["shadows"], pc["held"], data, pc["split"], cfg, pc["ref_metrics"])
            g = check_gates(rep, pc["summary"], p.gates)
            checks = g.checks | verification_checks(checked, p.gates)
            failed += [f"{k}@{a}" for k, c in checks.items() if not c["passed"]]
            lira[a], probe[a], relearn[a] = checked["lira_auc"], checked["probe_forget_acc"], \
                checked["relearn_steps_m10"]
        out[name] = {"passed": not failed, "failed": sorted(failed), "lira_auc": lira, "probe": probe,
                     "relearn_steps_m10": relearn}
    return out


def judged_models(p: Params, art: Artifacts, ctx) -> tuple[dict, dict]:
    inputs = answer.inputs(p, art, ctx)
    models, seconds = {}, {}
    for name in MODELS:
        if name == "original":
            models[name], seconds[name] = ctx.original, 0.0
            continue
        inp = replace(inputs, seed=inputs.seed + HELD_OUT_SEED) if name == "retrain" else inputs
        res = run_method(name, inp, p.method_options(name))
        models[name], seconds[name] = res.model, res.wall_time_s
    return models, seconds


def markdown(rows: list[dict], command: str) -> str:
    lines = [f"Command: `{command}`", "", "| set | model | own retrains (exact) | pool per class (approx.) | agree |",
             "|---|---|---|---|:-:|"]
    for r in rows:
        for name in MODELS:
            e, a = r["exact"][name], r["approx"][name]
            lines.append(f"| {r['classes']} | {name} | {'pass' if e['passed'] else 'FAIL ' + '/'.join(e['failed'])} "
                         f"| {'pass' if a['passed'] else 'FAIL ' + '/'.join(a['failed'])} | "
                         f"{'✓' if e['passed'] == a['passed'] else '✗'} |")
    agree = sum(r["exact"][m]["passed"] == r["approx"][m]["passed"] for r in rows for m in MODELS)
    lines += ["", f"Verdicts that agree: {agree} of {len(rows) * len(MODELS)}."]
    for m in MODELS:
        ex = sum(r["exact"][m]["passed"] for r in rows)
        ap = sum(r["approx"][m]["passed"] for r in rows)
        lines.append(f"- {m}: passes {ex}/{len(rows)} sets against its own retrains, {ap}/{len(rows)} against the pool")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=str(PARAMS))
    ap.add_argument("--set", action="append", default=[], help="param override KEY=VALUE (YAML value)")
    ap.add_argument("--sets", type=int, default=8, help="the first N held-out sets")
    ap.add_argument("--json", default="bench/results/set_reference_digits.json")
    ap.add_argument("--md", default=None)
    args = ap.parse_args()
    params, art = bench_project("set-reference", args.params, args.set)
    run_pipeline(params, art, variants=("dihyfo2",))
    stages.pool(params, art)
    pool = pool_mod.load_current(art, params)
    rows = []
    for classes in params.zoo.held_out(params.data.num_classes)[:args.sets]:
        p = params.model_copy(update={"forget": ForgetConfig(classes=list(classes))})
        ctx = answer.context(p, art)
        models, seconds = judged_models(p, art, ctx)
        t0 = time.perf_counter()
        exact = exact_verdict(p, art, ctx, models)
        t_exact = time.perf_counter() - t0
        t0 = time.perf_counter()
        approx = approx_verdict(p, pool, ctx, models)
        rows.append({"classes": list(classes), "exact": exact, "approx": approx, "seconds": seconds,
                     "exact_s": t_exact, "approx_s": time.perf_counter() - t0})
        print(classes, {m: (exact[m]["passed"], approx[m]["passed"]) for m in MODELS}, flush=True)
    command = "python bench/set_reference.py " + " ".join(sys.argv[1:])
    write_results(args.json, {"command": command, "pool": pool.sha256, "rows": rows}, markdown(rows, command),
                  args.md)


if __name__ == "__main__":
    main()
