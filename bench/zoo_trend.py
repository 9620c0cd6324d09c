"""Held-out pass rate against the number of class sets in the zoo (issue #24 item 3): one table from the project
folders of `bench/heldout_sets.py`, run once per zoo size, e.g.

    for n in 0 120 40; do
      python bench/heldout_sets.py --datasets mnist-lenet --variants dihyfo1 --methods --steps --threads 2 \
        --workers 1 --sets 8 --work-root work/heldout-lenet-zoo$n --set zoo.class_sets=$n
    done
    python bench/zoo_trend.py --roots work/heldout-lenet-zoo0 work/heldout-lenet-zoo40 work/heldout-lenet-zoo120 \
        [--experiment heldout-mnist-t10k-lenet] [--json FILE]

Each project is read, not run: its zoo (class sets, checkpoints, requests), what building it cost (the stages' own
timings: the zoo, each hypernetwork's training), each hypernetwork's prompt alignment on held-out sets (mean R²) and
its held-out study (artifacts/compare/heldout-sets.json). It prints, per zoo size and method: the sets passing every
gate, mean Δ retrain, forget accuracy, the probe's accuracy on D_f, median time, and the checks failed; then the
sets each method passes. Every project must have studied the same held-out sets, or the sizes would not be compared
on the same requests: a mismatch is refused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from heldout_sets import ORDER, failed_checks, fmt

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import DataError
from hyperforget.base.io import write_json
from hyperforget.studies.heldout import zoo_level, zoo_trend


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--roots", nargs="+", required=True, help="the --work-root of each zoo size's study")
    ap.add_argument("--experiment", default="heldout-mnist-t10k-lenet", help="the project folder in each root")
    ap.add_argument("--json", default=None, help="write the table's numbers here")
    args = ap.parse_args()
    try:
        levels = zoo_trend([zoo_level(Artifacts(Path(r) / args.experiment)) for r in args.roots])
    except DataError as e:
        sys.exit(str(e))
    print(f"{len(levels[0]['sets'])} held-out sets: {levels[0]['sets']}\n")
    print("| class sets in the zoo | checkpoints (requests) | zoo s | hypernet s | hypernet held-out R² |\n"
          "|---:|---:|---:|---|---|")
    for lv in levels:
        nets = ", ".join(f"{k.removeprefix('hypernet-')} {v['seconds']:.0f}" for k, v in lv["timings"].items()
                         if k.startswith("hypernet-"))
        r2 = ", ".join(f"{k} {v:.2f}" for k, v in lv["held_out_r2"].items())
        zoo = lv["timings"].get("zoo", {})
        resumed = f" (this run; {zoo['resumed_units']} units built before)" if zoo.get("resumed_units") else ""
        print(f"| {lv['class_sets']} | {lv['zoo_rows']:,} ({lv['requests']}) | {zoo.get('seconds', 0):.0f}{resumed} | "
              f"{nets} | {r2} |")
    print("\n| class sets | method | sets passing | mean Δ retrain | forget acc | probe acc on D_f | median time s | "
          "checks failed (sets) |\n|---:|---|---:|---:|---:|---:|---:|---|")
    for lv in levels:
        summary = lv["summary"]
        for name in [n for n in ORDER if n in summary] + [n for n in summary if n not in ORDER]:
            m = summary[name]
            passing = "–" if m["sets_passed"] is None else f"{round(m['sets_passed'] * m['sets'])}/{m['sets']}"
            print(f"| {lv['class_sets']} | {name} | {passing} | {fmt(m['delta'], '+.3f')} | {fmt(m['forget_acc'])} | "
                  f"{fmt(m['probe'])} | {fmt(m['time_s'], '.2f')} | {failed_checks(m)} |")
    print()
    for lv in levels:
        print(f"{lv['class_sets']} class sets, passing: " + "; ".join(
            f"{name} {lv['passed'][name]}" for name in lv["passed"] if lv["passed"][name]))
    if args.json:
        write_json(Path(args.json), {"command": "python bench/zoo_trend.py " + " ".join(sys.argv[1:]),
                                     "levels": levels})


if __name__ == "__main__":
    main()
