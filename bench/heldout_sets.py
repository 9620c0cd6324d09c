"""Held-out class sets: DiHyFo vs retrieval (+K, +noise, +k steps), ∇τ, SalUn and retraining, per set.

    python bench/heldout_sets.py [--datasets digits mnist mnist60k mnist-lenet mnist60k-lenet] [--sets N]
                                 [--variants dihyfo2]
                                 [--steps 10 20 50] [--work-root DIR] [--workers 2] [--set KEY=VALUE ...]
                                 [--resume]

For each data set (digits; MNIST's 10k split from ../shared/datasets/mnist-t10k; the full 60k MNIST from
../shared/datasets/mnist when present; the MLP in→10→10 on these three; `mnist-lenet`: the deployed CNN, LeNet-5 on
the 10k split with DiHyFo generating fc1–fc3, and `mnist60k-lenet`: the same on the full 60k with DiHyFo's repairs,
the model the product deploys; neither run by default) it builds, or reuses, a project folder
<work-root>/<experiment> (default work/, or $HYPERFORGET_WORK) from its experiment file (EXPERIMENTS below:
configs/heldout-*.yaml, a zoo with `zoo.class_sets` random class sets besides the single classes), then
1. measures DiHyFo's DDIM steps (--steps) on tuning sets, never held out and never in the zoo, and picks the
   fewest steps whose gate pass fraction and mean Δ retrain hold (`heldout.step_sweep`);
2. runs every held-out set (`zoo.holdout_sets`, the first --sets) through every method at those steps
   (`heldout.heldout_report`) and prints per set and method: forget acc (D_f), retained test acc, Δ retrain
   (retained test acc − the retrain mean), gates (pass, or the checks failed: the output gates and the
   verification, LiRA/probe/relearn, against the set's own retrain reference, with the test's power), DiHyFo's
   candidate pass rate (K samples, validation gates) and the unlearning time; then a summary per method
   (means, fraction of sets passing, median time) and DiHyFo's time split (sampling vs scoring).
JSON results land in each project's artifacts/compare/ (heldout-sets.json, heldout-sweep.json).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # shared CPUs: idle OpenMP threads must not spin

from _common import CONFIGS, ensure_original, experiment_raw, work_folder
from dihyfo_mnist import setup

from hyperforget.base.io import write_json
from hyperforget.pipeline import stages
from hyperforget.pipeline.compare import machine
from hyperforget.studies.heldout import heldout_report, step_sweep

# each data set's experiment file: the zoo with class sets, its hypernet steps (the files say why)
EXPERIMENTS = {name: CONFIGS / f"heldout-{file}.yaml"
               for name, file in (("digits", "digits"), ("mnist", "mnist-t10k"), ("mnist60k", "mnist60k"),
                                  ("mnist-lenet", "mnist-t10k-lenet"), ("mnist60k-lenet", "mnist-lenet"))}
ORDER = ["dihyfo1", "dihyfo2", "retrieval", "retrieval@K", "retrieval+noise", "retrieval+steps", "retrieval+repairs",
         "gradtau", "salun",
         "eu_k", "neggrad_plus", "scrub", "retrain", "reference"]


def fmt(v, spec=".3f"):
    return "–" if v is None else format(v, spec)


def project(name: str, args: argparse.Namespace):
    experiment = EXPERIMENTS[name]
    ns = argparse.Namespace(params=str(experiment), source=None, work=str(Path(args.work_root) / experiment.stem),
                            set=list(args.set), threads=args.threads)
    return setup(ns)


def source(name: str) -> Path | None:
    """The data set's folder of files, from its experiment file (None: built in, as digits)."""
    folder = experiment_raw(EXPERIMENTS[name]).get("data", {}).get("source")
    return None if folder is None else Path(folder)


def build(params, art, variants, workers: int) -> dict:
    t0 = time.perf_counter()
    ensure_original(params, art)
    zoo = stages.zoo(params, art, workers=workers)
    nets = {v: stages.hypernet(params, art, v) for v in variants}
    return {"zoo": zoo, **nets, "seconds": time.perf_counter() - t0}


def print_sets(result: dict) -> None:
    print("| set | method | forget acc | retained test acc | Δ retrain | gates | cand. pass | time s |")
    print("|---|---|---|---|---|---|---|---|")
    for s in result["sets"]:
        rows = s["rows"]
        for name in [n for n in ORDER if n in rows] + [n for n in rows if n not in ORDER]:
            r = rows[name]
            gate = "–" if r.get("passed") is None else ("pass" if r["passed"] else "FAIL " + "/".join(r["failed"]))
            label = f"{name} (k={r['steps']})" if name == "retrieval+steps" else name
            print(f"| {s['classes']} | {label} | {fmt(r.get('forget_acc'))} | {fmt(r.get('retained_acc'))} | "
                  f"{fmt(r.get('delta'), '+.3f')} | {gate} | {fmt(r.get('pass_rate'), '.2f')} | "
                  f"{fmt(r['time_s'], '.3f')} |")


def print_summary(summary: dict, title: str) -> None:
    print(f"\n{title}\n\n| method | sets | forget acc | retained test acc | mean Δ retrain | sets passing | "
          "cand. pass | median time s | checks failed (sets) |\n|---|---|---|---|---|---|---|---|---|")
    for name in [n for n in ORDER if n in summary] + [n for n in summary if n not in ORDER]:
        m = summary[name]
        print(f"| {name} | {m['sets']} | {fmt(m['forget_acc'])} | {fmt(m['retained_acc'])} | "
              f"{fmt(m['delta'], '+.3f')} | {fmt(m['sets_passed'], '.2f')} | {fmt(m['pass_rate'], '.2f')} | "
              f"{fmt(m['time_s'], '.3f')} | {failed_checks(m)} |")


def failed_checks(summary_row: dict) -> str:
    """"check n, …", the most failed first: how many sets failed each check ("–" when none did)."""
    failed = sorted((summary_row.get("failed_checks") or {}).items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{k} {n}" for k, n in failed) or "–"


def time_split(result: dict, variant: str) -> str:
    rows = [s["rows"][variant] for s in result["sets"] if variant in s["rows"]]
    if not rows:
        return ""
    med = {k: sorted(r[k] for r in rows)[len(rows) // 2] for k in ("prompt_s", "sample_s", "score_s", "time_s")}
    summ = result["summary"]
    ratios = ", ".join(f"{m} {summ[m]['time_s'] / med['time_s']:.1f}×" for m in ("gradtau", "retrain")
                       if summ.get(m, {}).get("time_s"))
    return (f"{variant} time (median over sets, K=16, {rows[0]['steps']} DDIM steps): {med['time_s']:.3f} s = "
            f"prompt {med['prompt_s']:.3f} + sampling {med['sample_s']:.3f} + scoring {med['score_s']:.3f}; "
            f"time of the others over it: {ratios}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="*", default=["digits", "mnist", "mnist60k"], choices=list(EXPERIMENTS))
    ap.add_argument("--sets", type=int, default=None, help="only the first N held-out sets (default: all)")
    ap.add_argument("--variants", nargs="*", default=["dihyfo2"])
    ap.add_argument("--methods", nargs="*", default=["gradtau", "salun", "eu_k", "neggrad_plus", "scrub"])
    ap.add_argument("--steps", type=int, nargs="*", default=[10, 20, 50], help="DDIM steps measured on tuning sets")
    ap.add_argument("--tuning-sets", type=int, default=8)
    ap.add_argument("--work-root", default=str(work_folder("")), help="folder of the project folders (default "
                    "work/, or $HYPERFORGET_WORK)")
    ap.add_argument("--workers", type=int, default=2, help="zoo units built at once")
    ap.add_argument("--set", action="append", default=[], help="param override KEY=VALUE for every data set")
    ap.add_argument("--resume", action="store_true", help="keep the sets an interrupted run of the same study wrote "
                    "(artifacts/compare/heldout-sets.json) and its DDIM step choice (heldout-sweep.json); run the rest")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: beside other jobs; the machine's "
                    "cores when it runs alone)")
    args = ap.parse_args()
    mach = machine()
    for name in args.datasets:
        folder = source(name)
        if folder is not None and not folder.is_dir():
            print(f"\n# {name}: {folder} not present, skipped")
            continue
        params, art = project(name, args)
        built = build(params, art, args.variants, args.workers)
        print(f"\n# Held-out class sets on {name} ({params.data.name}, {params.model.arch}; {mach['cpu']}, "
              f"{mach['cores']} cores, torch {mach['torch']}, {args.threads} thread(s))\n")
        print(f"project {art.root}; zoo {built['zoo']['rows']} checkpoints over {built['zoo']['num_requests']} "
              f"requests ({params.zoo.class_sets} class sets), held out {params.zoo.holdout_sets} sets; build/reuse "
              f"{built['seconds']:.0f} s; " + ", ".join(
                  f"{v}: {params.hypernet.steps} steps, loss {built[v]['final_loss']:.4f}, held-out R² "
                  f"{built[v]['mean_r2']:.2f}" for v in args.variants), flush=True)
        chosen = None
        swept = art.compare / "heldout-sweep.json"
        if args.resume and swept.is_file():
            chosen = json.loads(swept.read_text())["chosen"]
            print(f"DDIM steps from the earlier sweep ({swept}): {chosen}")
        elif args.steps and args.variants:
            t0 = time.perf_counter()
            sweep = step_sweep(params, art, args.variants[0], args.steps, args.tuning_sets, seed=params.seed)
            write_json(art.compare / "heldout-sweep.json", sweep)
            chosen = sweep["chosen"]
            print_summary(sweep["summary"], f"DDIM steps on {args.tuning_sets} tuning sets (not held out, not in the "
                          f"zoo; {time.perf_counter() - t0:.0f} s) → {chosen} steps")
        t0 = time.perf_counter()
        result = heldout_report(params, art, args.variants, args.methods, chosen, args.sets,
                                progress=lambda i, n, s: print(f"  set {i}/{n} {s['classes']} done", flush=True),
                                resume=args.resume)
        print(f"\n{len(result['sets'])} held-out sets in {time.perf_counter() - t0:.0f} s\n")
        print_sets(result)
        print_summary(result["summary"], f"Summary over {len(result['sets'])} held-out sets ({name})")
        for v in args.variants:
            print("\n" + time_split(result, v), flush=True)


if __name__ == "__main__":
    main()
