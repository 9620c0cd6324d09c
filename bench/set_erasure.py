"""Set erasure: DiHyFo's answers to class sets with and without the eraser of "which forgotten class"
(`unlearn.<variant>.erase_set`, hyperforget/unlearn/erase.py), side by side on the same sets and references.

    python bench/set_erasure.py [--params configs/heldout-mnist-t10k-lenet.yaml] [--work DIR]
                                [--sets tuning|heldout] [--count N] [--strengths 0 0.5 1]
                                [--variants dihyfo1] [--methods eu_k] [--baselines] [--no-retrain]
                                [--json FILE] [--resume]

`--sets tuning` takes the experiment's tuning sets (`zoo.tuning_sets`: neither in the zoo nor held out), where the
strength may be chosen; `--sets heldout` its held-out sets (`zoo.held_out`), which judge the choice. Each set is
judged as the held-out study judges it (`studies.heldout.SetRun`: the output gates and the verification, LiRA,
probe and relearning, against the set's own `evaluation.retrain_seeds` retrains, with the test's power), and a
true retrain with a seed of its own is judged beside (the control that must pass; `--no-retrain` leaves it out
where an earlier run on the same references has it). `--baselines` adds the bare zoo lookups of
`studies.heldout.run_baselines` (retrieval, retrieval@K, retrieval + noise, and retrieval + k steps of the set's
ascent given the last DiHyFo row's time), with the first variant's prompts; the registry's `retrieval` (the nearest
rows with DiHyFo-1's repairs) is then the row `retrieval+repairs`. The project folder (`--work`)
is built or reused as `bench/heldout_sets.py` builds it (θ0, the zoo, the hypernetworks). JSON: every set, row and
check, and the summary per row (`studies.heldout.summarise_sets`), rewritten after every set (`--resume` keeps the
sets an interrupted run of the same rows wrote; the resume file is named by the rows, so runs of other rows on the
same project, even at once, keep their own).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # shared CPUs: idle OpenMP threads must not spin

from _common import CONFIGS, work_folder
from dihyfo_mnist import setup
from heldout_sets import build, failed_checks, fmt

from hyperforget.base.io import jsonable, read_json, sha256_json, write_json
from hyperforget.hypernet.honesty import zoo_spacing
from hyperforget.pipeline.compare import machine
from hyperforget.studies.heldout import (
    BASELINES,
    SetRun,
    method_row,
    run_baselines,
    run_dihyfo,
    run_registered,
    summarise_sets,
)
from hyperforget.zoo.shards import load_zoo


def row_name(variant: str, strength: float) -> str:
    return f"{variant} erase {strength:g}"


def with_strength(run: SetRun, variant: str, strength: float) -> None:
    """Point the set's params at `variant` with `erase_set` = `strength` (its other options as configured)."""
    options = run.params.method_options(variant).model_copy(update={"erase_set": strength})
    run.params = run.params.model_copy(update={"unlearn": run.params.unlearn.model_copy(update={variant: options})})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=str(CONFIGS / "heldout-mnist-t10k-lenet.yaml"))
    ap.add_argument("--source", default=None)
    ap.add_argument("--work", default=None, help="project folder (default: work/<experiment>)")
    ap.add_argument("--sets", choices=["tuning", "heldout"], default="tuning")
    ap.add_argument("--count", type=int, default=8, help="how many sets (the first N of the list; 0: build only)")
    ap.add_argument("--strengths", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    ap.add_argument("--variants", nargs="*", default=["dihyfo1"], help="DiHyFo variants, each at every strength")
    ap.add_argument("--methods", nargs="*", default=[], help="registry methods judged beside (e.g. eu_k)")
    ap.add_argument("--baselines", action="store_true", help="the bare zoo lookups, retrieval+steps at DiHyFo's time")
    ap.add_argument("--no-retrain", action="store_true", help="leave out the true retrain of each set's own seed")
    ap.add_argument("--set", action="append", default=[], help="param override KEY=VALUE")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1, help="zoo units built at once")
    ap.add_argument("--json", default=None, help="also write the result here")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    if args.baselines and not (args.variants and args.strengths):
        ap.error("--baselines times retrieval + k steps by a DiHyFo row: give --variants and --strengths")
    args.work = args.work or str(work_folder(Path(args.params).stem))
    params, art = setup(args)
    build(params, art, args.variants, args.workers)
    zoo, _ = load_zoo(art.zoo)
    spacing = zoo_spacing(zoo.weights)
    sets = (params.zoo.tuning_sets(zoo.num_classes, args.count, params.seed) if args.sets == "tuning"
            else params.zoo.held_out(zoo.num_classes)[:args.count])
    dihyfo_rows = [row_name(v, s) for v in args.variants for s in args.strengths]
    rows = (dihyfo_rows + (list(BASELINES) if args.baselines else []) + [method_row(m) for m in args.methods]
            + ([] if args.no_retrain else ["retrain"]))
    out = art.compare / f"set-erasure-{args.sets}-{sha256_json(rows)[:12]}.json"  # per row list: runs at once don't mix
    done = []
    if args.resume and out.is_file():
        old = read_json(out)
        for s, classes in zip(old["sets"] if old.get("rows") == rows else [], sets, strict=False):
            if sorted(s["classes"]) != sorted(classes):
                break  # the leading sets only: the rest run again
            done.append(s)
    started = time.perf_counter()
    for classes in sets[len(done):]:
        t0 = time.perf_counter()
        run = SetRun(params, art, classes, time_retrain=not args.no_retrain)
        for variant in args.variants:
            for strength in args.strengths:
                with_strength(run, variant, strength)
                run_dihyfo(run, variant, None, zoo, spacing, name=row_name(variant, strength))
        if args.baselines:  # the prompts of the first variant, retrieval+steps given the last DiHyFo row's time
            run_baselines(run, zoo, spacing, args.variants[0], run.rows[dihyfo_rows[-1]]["time_s"], params.seed)
        for name in args.methods:
            run_registered(run, name)
        done.append({"classes": run.classes, "power": run.power, "rows": run.rows})
        result = jsonable({"command": "python bench/" + Path(__file__).name + " " + " ".join(sys.argv[1:]),
                           "params": args.params, "work": str(art.root), "which": args.sets, "rows": rows,
                           "machine": machine() | {"torch_threads": args.threads}, "sets": done,
                           "summary": summarise_sets(done), "seconds": time.perf_counter() - started})
        write_json(out, result)
        if args.json:
            write_json(Path(args.json), result)
        print(f"{run.classes}: " + ", ".join(
            f"{n} {'pass' if run.rows[n]['passed'] else 'FAIL ' + '/'.join(run.rows[n]['failed'])}" for n in rows)
            + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
    if not done:  # --count 0: what was asked is built (θ0, the zoo, the hypernetworks), nothing judged
        return
    summary = summarise_sets(done)
    print(f"\n{len(done)} {args.sets} sets, {params.data.name} {params.model.arch}\n")
    print("| row | sets passing | mean Δ retrain (retained test acc) | forget acc | median time s | "
          "checks failed (sets) |")
    print("|---|---:|---:|---:|---:|---|")
    for name in rows:
        m = summary[name]
        passed = sum(s["rows"][name]["passed"] for s in done)
        print(f"| {name} | {passed}/{len(done)} | {fmt(m['delta'], '+.4f')} | {fmt(m['forget_acc'])} | "
              f"{fmt(m['time_s'], '.2f')} | {failed_checks(m)} |")


if __name__ == "__main__":
    main()
