"""The verdict per class: every method answering every single-class request, gated as the product gates it.

    python bench/class_verdicts.py [--params FILE] [--set KEY=VALUE ...] [--methods M ...] [--classes C ...]
                                   [--json PATH] [--md PATH]

Why: a method is trustworthy when it passes every gate the way a true retrain does, on every class, while θ0
and `head_finetune` (the controls) fail. This builds the experiment's project (work/<experiment>/: prepare,
θ0, zoo, hypernetworks, the reference pool), then for each class and method runs `answer.unlearn` (what
`hyperforget unlearn` and a deletion request run: the pool as reference, verification, θ0's power) and
`release.gate` (the release gates). `retrain` is a held-out true retrain: its seed (1000 + seed) is none of
the pool's, so it is the model that must pass. θ0's row is the request's power record (θ0 judged by the same
test). Writes the JSON and a Markdown table; on digits ~10 minutes on 2 cores.

`--set pool.seed=1` judges with a second, independent pool (other retrain seeds): what a method was designed
on must not be what judges it, so a repair found while reading the seed-0 pool's verdicts is re-judged there.
A run with `--set` gets a project folder of its own (work/class-verdicts-<experiment>-<overrides>/).

`--reuse --work DIR` judges the reports an earlier run wrote in DIR (each method's `runs/bench-<method>/
report.json`) under this run's gate limits, and θ0's power again under them, without unlearning or verifying
anything again: the verdicts under newly calibrated limits from the same measurements. It is refused when the
experiment differs from the one DIR measured in anything but `gates:`, or a report rests on another pool.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml
from _common import PARAMS, bench_project, experiment_raw, run_pipeline, write_results

from hyperforget.base.errors import Diverged
from hyperforget.base.io import read_json, write_json
from hyperforget.config.options import VARIANTS
from hyperforget.config.overlays import parse_overrides
from hyperforget.config.params import ForgetConfig, Params
from hyperforget.pipeline import answer, stages
from hyperforget.publish import release

DIVERGED = "diverged.json"  # beside a run's reports: the method diverged there (`run_method`'s Diverged)
METHODS = ["retrain", "dihyfo1", "dihyfo2", "eu_k", "neggrad_plus", "salun", "scrub", "head_finetune"]


def row(c: int, method: str, rec: dict, p: Params) -> dict:
    if "diverged" in rec:  # the method left NaN weights (`run_method` refuses them): a failed answer, no metrics
        return {"class": c, "method": method, "passed": False, "failed": ["diverged"], "error": rec["diverged"]}
    gate = release.gate(rec, p)
    r, v, ref = rec["report"], rec["verification"], rec["reference"]
    ref_v = v.get("reference") or {}
    return {"class": c, "method": method, "passed": gate.passed,
            "failed": [k for k, ch in gate.checks.items() if not ch["passed"]],
            "forget_acc": r["forget_acc"], "retained_acc": r["test_retained_acc"],
            "retained_delta": r["test_retained_acc"] - ref["test_retained_acc"]["mean"],
            "worst_acc": r["worst_retained_acc"], "lira_auc": v.get("lira_auc"),
            "tpr_at_1fpr": v.get("lira_tpr_at_1fpr"), "probe": v.get("probe_forget_acc"),
            "probe_logit": v.get("probe_forget_logit"),
            "probe_logit_ref": (ref_v.get("probe_forget_logit") or {}).get("mean"),
            **{k: v.get(k) for k in v if k.startswith("relearn_steps_m")},
            "seconds": rec["wall_time_s"], "power": rec["power"], **sampled(rec.get("info") or {}),
            **levelled(rec.get("info") or {})}


def levelled(info: dict) -> dict:
    """What DiHyFo's level matching did (`unlearn.level`; {} for other methods): the forgotten class's val loss
    before, its target (the zoo's retrained endpoints) and after, and whether the shift had to be held back
    short of the target (the forget or retained accuracy bound)."""
    lv = info.get("level") or {}
    if not lv.get("applied"):
        return {}
    target, after = lv["target_val_loss"], lv["val_loss_after"]
    return {"level_val_loss_before": lv["val_loss_before"], "level_target": target, "level_val_loss_after": after,
            "level_held_back": any(after[c] > target[c] + 1e-6 for c in target)}


def sampled(info: dict) -> dict:
    """What DiHyFo's sampler offered (from its `info`; {} for other methods): the edit scale of the candidate kept,
    how many candidates passed the validation gates, and the best retained val accuracy of a full-strength sample
    (scale 1): whether the generator itself yields a working model or the choice falls back toward θ0."""
    cand = info.get("candidates") or {}
    if "scale" not in cand:
        return {}
    full = [a for a, sc in zip(cand["retained_acc"], cand["scale"], strict=True) if sc == 1.0]
    return {"chosen_scale": cand["scale"][info["chosen"]], "candidates_passed": info["pass_rate"],
            "full_strength_retained_val": max(full) if full else None,
            "theta0_retained_val": info["original_retained_val_acc"]}


def measured_params(raw: dict) -> dict:
    """A project's params as far as they decide what was measured: everything but the gate limits."""
    return {k: v for k, v in raw.items() if k != "gates"}


def measured(p: Params, art, m: str) -> dict:
    """Method `m` answering request `p` as the product answers it; a divergence is kept beside its reports."""
    diverged = art.request(p.forget.slug(), m, f"bench-{m}") / DIVERGED
    try:
        rec = answer.unlearn(p, art, m, run=f"bench-{m}")
    except Diverged as e:
        write_json(diverged, {"diverged": str(e)})
        return {"diverged": str(e)}
    diverged.unlink(missing_ok=True)
    return rec


def reused(p: Params, art, methods: list[str], pool_sha: str) -> list[tuple[str, dict]]:
    """The earlier run's record of each method on request `p`, with the request's power judged again under `p`'s
    gates: once, since every method of a request is verified against the same reference."""
    ctx = answer.context(p, art)
    ref = answer.resolve_reference(p, art, ctx)
    power: dict | None = None
    out = []
    for m in methods:
        run = art.request(p.forget.slug(), m, f"bench-{m}")
        if (run / DIVERGED).exists():
            out.append((m, read_json(run / DIVERGED)))
            continue
        if not (run / "report.json").exists():
            raise SystemExit(f"--reuse: {run / 'report.json'} not found: measure {m} first (without --reuse)")
        timing = read_json(run / "timing.json")
        rec = {**read_json(run / "report.json"), "wall_time_s": timing["wall_time_s"], "info": timing.get("info")}
        if rec["reference_source"].get("sha256") != pool_sha:
            raise SystemExit(f"--reuse: {run / 'report.json'} was judged against another pool "
                             f"({json.dumps(rec['reference_source'])[:80]}…): measure it again without --reuse")
        power = power or answer.test_power(p, ctx, ref, answer.reference_verification(p, art, ctx, ref))
        out.append((m, rec | {"power": power}))
    return out


def logit_gap(rows: list[dict]) -> str:
    """Median of the cross-fitted probe's log-odds minus the reference's mean ("–" for rows measured before it)."""
    gaps = [r["probe_logit"] - r["probe_logit_ref"] for r in rows
            if r.get("probe_logit") is not None and r.get("probe_logit_ref") is not None]
    return f"{statistics.median(gaps):+.2f}" if gaps else "–"


def markdown(rows: list[dict], command: str) -> str:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    classes = sorted({r["class"] for r in rows})
    lines = [f"Command: `{command}`", "", "| method | passes | per class (✓ pass, else the failed gates) | "
             "retained Δ retrain (mean) | LiRA AUC (median) | probe log-odds − retrains' (median) | "
             "relearn m=10 (median) | unlearn s (median) |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        ran = [r for r in mine if "error" not in r]  # a diverged answer has no metrics
        cells = ", ".join(f"{r['class']}:" + ("✓" if r["passed"] else "/".join(r["failed"])) for r in mine)

        def stat(summary, key: str, fmt: str, ran=ran) -> str:  # "–" where every answer of m diverged
            return format(summary(r[key] for r in ran), fmt) if ran else "–"
        lines.append(f"| {m} | {sum(r['passed'] for r in mine)}/{len(mine)} | {cells} | "
                     f"{stat(statistics.mean, 'retained_delta', '+.4f')} | "
                     f"{stat(statistics.median, 'lira_auc', '.3f')} | "
                     f"{logit_gap(ran)} | "
                     f"{stat(statistics.median, 'relearn_steps_m10', '.0f')} | "
                     f"{stat(statistics.median, 'seconds', '.2f')} |")
    judged: dict[int, dict] = {}  # each class's first row with a verdict (a diverged answer has none)
    for r in rows:
        if "power" in r:
            judged.setdefault(r["class"], r)
    first = [judged[c] for c in classes if c in judged]
    powered = sum(bool(r["power"]["has_power"]) for r in first)
    lines += ["", f"θ0 (power: judged by the same test on each request): fails on {powered}/{len(first)} classes; "
              "the checks it fails: " + ", ".join(f"{r['class']}:" + "/".join(r["power"]["original_fails"])
                                                  for r in first) if first else
              "θ0's power: not judged (every answer diverged before verification)"]
    for m in methods:
        levelled_rows = [r for r in rows if r["method"] == m and "level_held_back" in r]
        if levelled_rows:
            lines += ["", f"{m}'s level matching, per class (✓ pass, else the failed gates; val loss on the class "
                      "before → after, target): " + ", ".join(
                          f"{r['class']}:{'✓' if r['passed'] else '/'.join(r['failed'])} "
                          f"{_one(r['level_val_loss_before']):.1f}→{_one(r['level_val_loss_after']):.1f} "
                          f"({_one(r['level_target']):.1f}{', held back' if r['level_held_back'] else ''})"
                          for r in levelled_rows)]
    return "\n".join(lines) + "\n"


def _one(per_class: dict) -> float:
    """The value of a single-class request's {class: value}."""
    return next(iter(per_class.values()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=str(PARAMS))
    ap.add_argument("--set", action="append", default=[], help="param override KEY=VALUE (YAML value)")
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--classes", nargs="+", type=int)
    ap.add_argument("--json", default="bench/results/class_verdicts_digits.json")
    ap.add_argument("--md", default=None, help="also write the Markdown table here")
    ap.add_argument("--work", default=None, help="the project folder (default work/class-verdicts-<experiment>…)")
    ap.add_argument("--reuse", action="store_true", help="judge the reports of an earlier run in --work under this "
                    "run's gates instead of measuring again")
    args = ap.parse_args()
    if args.reuse and not args.work:
        ap.error("--reuse judges an earlier run's reports: name its project folder with --work")
    if args.reuse:  # checked before the folder's params.yaml is rewritten
        before = measured_params(yaml.safe_load((Path(args.work) / "params.yaml").read_text()))
        now = measured_params(experiment_raw(args.params, overrides=parse_overrides(args.set)))
        if before != now:
            differ = ", ".join(sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k)))
            raise SystemExit(f"--reuse: {args.work} measured another experiment (differs in {differ}), not only "
                             "other gate limits: measure again without --reuse")
    params, art = bench_project("class-verdicts", args.params, args.set, args.work)
    t0 = time.perf_counter()
    built = run_pipeline(params, art, tuple(v for v in VARIANTS if v in args.methods))  # only those named
    pool = stages.pool(params, art)
    setup_s = time.perf_counter() - t0
    rows = []
    for c in args.classes or range(params.data.num_classes):
        p = params.model_copy(update={"forget": ForgetConfig(classes=[c])})
        recs = reused(p, art, args.methods, pool["sha256"]) if args.reuse else \
            [(m, measured(p, art, m)) for m in args.methods]
        for m, rec in recs:
            rows.append(row(c, m, rec, p))
            print(f"class {c} {m}: {'PASS' if rows[-1]['passed'] else 'FAIL ' + ','.join(rows[-1]['failed'])}",
                  flush=True)
    command = "python bench/class_verdicts.py " + " ".join(sys.argv[1:])
    out = {"command": command, "params": args.params, "gates": params.gates.model_dump(), "reused": args.reuse,
           "setup_s": setup_s, "pool": pool, "zoo": built.get("zoo"), "rows": rows}
    write_results(args.json, out, markdown(rows, command), args.md)


if __name__ == "__main__":
    main()
