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
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PARAMS, bench_project, run_pipeline, write_results

from hyperforget.config.params import ForgetConfig
from hyperforget.pipeline import answer, stages
from hyperforget.publish import release

METHODS = ["retrain", "dihyfo1", "dihyfo2", "eu_k", "neggrad_plus", "salun", "scrub", "head_finetune"]


def row(c: int, method: str, rec: dict, gate) -> dict:
    r, v, ref = rec["report"], rec["verification"], rec["reference"]
    return {"class": c, "method": method, "passed": gate.passed,
            "failed": [k for k, ch in gate.checks.items() if not ch["passed"]],
            "forget_acc": r["forget_acc"], "retained_acc": r["test_retained_acc"],
            "retained_delta": r["test_retained_acc"] - ref["test_retained_acc"]["mean"],
            "worst_acc": r["worst_retained_acc"], "lira_auc": v.get("lira_auc"),
            "tpr_at_1fpr": v.get("lira_tpr_at_1fpr"), "probe": v.get("probe_forget_acc"),
            **{k: v.get(k) for k in v if k.startswith("relearn_steps_m")},
            "seconds": rec["wall_time_s"], "power": rec["power"]}


def markdown(rows: list[dict], command: str) -> str:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    classes = sorted({r["class"] for r in rows})
    lines = [f"Command: `{command}`", "", "| method | passes | per class (✓ pass, else the failed gates) | "
             "retained Δ retrain (mean) | LiRA AUC (median) | relearn m=10 (median) | unlearn s (median) |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        cells = ", ".join(f"{r['class']}:" + ("✓" if r["passed"] else "/".join(r["failed"])) for r in mine)
        lines.append(f"| {m} | {sum(r['passed'] for r in mine)}/{len(mine)} | {cells} | "
                     f"{statistics.mean(r['retained_delta'] for r in mine):+.4f} | "
                     f"{statistics.median(r['lira_auc'] for r in mine):.3f} | "
                     f"{statistics.median(r['relearn_steps_m10'] for r in mine):.0f} | "
                     f"{statistics.median(r['seconds'] for r in mine):.2f} |")
    first = [r for r in rows if r["method"] == methods[0]]
    powered = sum(bool(r["power"]["has_power"]) for r in first)
    lines += ["", f"θ0 (power: judged by the same test on each request): fails on {powered}/{len(classes)} classes; "
              "the checks it fails: " + ", ".join(f"{r['class']}:" + "/".join(r["power"]["original_fails"])
                                                  for r in first)]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=str(PARAMS))
    ap.add_argument("--set", action="append", default=[], help="param override KEY=VALUE (YAML value)")
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--classes", nargs="+", type=int)
    ap.add_argument("--json", default="bench/results/class_verdicts_digits.json")
    ap.add_argument("--md", default=None, help="also write the Markdown table here")
    args = ap.parse_args()
    params, art = bench_project("class-verdicts", args.params, args.set)
    t0 = time.perf_counter()
    built = run_pipeline(params, art)
    pool = stages.pool(params, art)
    setup_s = time.perf_counter() - t0
    rows = []
    for c in args.classes or range(params.data.num_classes):
        p = params.model_copy(update={"forget": ForgetConfig(classes=[c])})
        for m in args.methods:
            rec = answer.unlearn(p, art, m, run=f"bench-{m}")
            rows.append(row(c, m, rec, release.gate(rec, p)))
            print(f"class {c} {m}: {'PASS' if rows[-1]['passed'] else 'FAIL ' + ','.join(rows[-1]['failed'])}",
                  flush=True)
    command = "python bench/class_verdicts.py " + " ".join(sys.argv[1:])
    out = {"command": command, "params": args.params, "setup_s": setup_s, "pool": pool, "zoo": built.get("zoo"),
           "rows": rows}
    write_results(args.json, out, markdown(rows, command), args.md)


if __name__ == "__main__":
    main()
