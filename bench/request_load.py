"""One request's time idle and beside a CPU-bound process, with OpenMP threads waiting passively vs actively.

    python bench/request_load.py [--work DIR] [--method scrub] [--repeats 3] [--json bench/results/request_load.json]

Why: OMP_WAIT_POLICY=PASSIVE is what hyperforget.base.runtime.configure() sets before torch loads; this
measures what it buys. Prepares a digits project in --work (`hyperforget import-data`, `prepare`, `train`,
and one `unlearn` that caches the retrain reference), then for each policy, set explicitly in the child's
environment (configure() leaves a set one alone), runs one child process per condition: idle, then with a
busy-loop process pinned to the last core. A child imports the library, answers the request once to warm up
(`answer.answer`: unlearn, evaluate, verify, gate, tracked in the project's sqlite MLflow; no registry), then
--repeats times timed. Prints the median request time per condition, load/idle and ACTIVE/PASSIVE, the
machine and its load average; writes the JSON. 3–5 minutes on 2 cores (longer when others load them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent
POLICIES = ("PASSIVE", "ACTIVE")
LOAD = "import os, sys\ncpu = int(sys.argv[1]); parent = os.getppid(); os.sched_setaffinity(0, {cpu})\n" \
       "while os.getppid() == parent:\n    for _ in range(1_000_000):\n        pass\n"  # ends if the bench dies


def prepare(work: Path) -> Path:
    """The default digits project in `work`, θ0 trained and the reference cached (skipped when done)."""
    params = work / "params.yaml"
    if not params.exists():
        work.mkdir(parents=True, exist_ok=True)
        params.write_text(yaml.safe_dump(yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())))
    if not (work / ".bench-prepared").exists():
        for step in (["import-data"], ["prepare"], ["train"], ["unlearn", "--method", "scrub"]):
            t0 = time.perf_counter()
            r = subprocess.run([str(BIN / "hyperforget"), *step, "--params", str(params)], env=_env("PASSIVE"),
                               capture_output=True, text=True)
            if r.returncode not in ((0, 1) if step[0] == "unlearn" else (0,)):  # 1: gates failed, still cached
                sys.exit(f"`hyperforget {step[0]}` failed:\n{(r.stdout + r.stderr)[-3000:]}")
            print(f"prepared: {step[0]} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        (work / ".bench-prepared").touch()
    return params


def _env(policy: str) -> dict[str, str]:
    drop = ("MLFLOW_TRACKING_URI", "OMP_NUM_THREADS")  # the project's own sqlite store; torch's thread choice
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "OMP_WAIT_POLICY": policy}


def child(params: Path, method: str, repeats: int) -> None:
    """In the child: warm up, answer `repeats` times, print one JSON line."""
    from hyperforget.base.runtime import configure

    configure()
    from hyperforget.base.artifacts import Artifacts
    from hyperforget.config.overlays import load_params
    from hyperforget.pipeline import answer
    from hyperforget.pipeline.compare import machine

    p, art = load_params(params), Artifacts.for_params(params)
    answer.answer(p, art, method, run="bench-load-warmup")
    runs = []
    for i in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = answer.answer(p, art, method, run=f"bench-load-{i}")
        runs.append({"request_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0,
                     "method_s": out.request["wall_time_s"]})
    print(json.dumps({"runs": runs, "omp_wait_policy": os.environ["OMP_WAIT_POLICY"], "machine": machine()}))


def condition(params: Path, method: str, repeats: int, policy: str, loaded: bool) -> dict:
    """One child under one policy, with or without the busy-loop process beside it."""
    load = None
    if loaded:
        load = subprocess.Popen([sys.executable, "-c", LOAD, str(max(os.sched_getaffinity(0)))])
    try:
        r = subprocess.run([sys.executable, __file__, "--child", "--work", str(params.parent), "--method", method,
                            "--repeats", str(repeats)], env=_env(policy), capture_output=True, text=True)
    finally:
        if load is not None:
            load.kill()
            load.wait()
    if r.returncode != 0:
        sys.exit(f"the {policy} child failed:\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    med = {k: statistics.median(run[k] for run in out["runs"]) for k in ("request_s", "cpu_s", "method_s")}
    print(f"{policy:8s} {'load' if loaded else 'idle'}: request {med['request_s']:.2f} s (median of {repeats}), "
          f"load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
    return {**out, "median": med, "loaded": loaded, "loadavg_1min_after": os.getloadavg()[0]}


def measure(work: Path, method: str, repeats: int, json_path: Path) -> dict:
    params = prepare(work)
    loadavg = os.getloadavg()[0]
    res = {(p, loaded): condition(params, method, repeats, p, loaded) for loaded in (False, True) for p in POLICIES}
    med = {k: v["median"] for k, v in res.items()}
    mach = res["PASSIVE", False]["machine"]
    print(f"\n`answer` ({method}, digits, no registry), median of {repeats} after a warm-up; {mach['cpu']}, "
          f"{mach['cores']} cores, torch {mach['torch']} ({mach['torch_threads']} threads); load: one busy-loop "
          f"process pinned to core {max(os.sched_getaffinity(0))}; load average {loadavg:.1f} before the run")
    print(f"{'OMP_WAIT_POLICY':16} {'idle s':>8} {'load s':>8} {'load/idle':>10} {'cpu s idle':>11} "
          f"{'cpu s load':>11} {'method s idle':>14} {'method s load':>14}")
    for p in POLICIES:
        i, lo = med[p, False], med[p, True]
        print(f"{p:16} {i['request_s']:8.2f} {lo['request_s']:8.2f} {lo['request_s'] / i['request_s']:9.1f}× "
              f"{i['cpu_s']:11.2f} {lo['cpu_s']:11.2f} {i['method_s']:14.3f} {lo['method_s']:14.3f}")
    ratio = {c: med["ACTIVE", c]["request_s"] / med["PASSIVE", c]["request_s"] for c in (False, True)}
    print(f"{'ACTIVE/PASSIVE':16} {ratio[False]:7.1f}× {ratio[True]:7.1f}×")
    record = {"method": method, "dataset": "digits", "repeats": repeats, "machine": mach,
              "loadavg_1min_before": loadavg,
              "conditions": [{"omp_wait_policy": p, "loaded": c, **{k: v for k, v in res[p, c].items()
                                                                    if k not in ("machine", "omp_wait_policy")}}
                             for (p, c) in res],
              "ratios": {f"{p.lower()}_load_over_idle": med[p, True]["request_s"] / med[p, False]["request_s"]
                         for p in POLICIES} | {"active_over_passive_idle": ratio[False],
                                               "active_over_passive_load": ratio[True]},
              "command": "python bench/request_load.py " + " ".join(sys.argv[1:])}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {json_path}")
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None, help="project folder (default: a new temp folder); "
                    "reused when it holds a prepared one")
    ap.add_argument("--method", default="scrub")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "request_load.json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.work / "params.yaml", a.method, a.repeats)
    else:
        measure(a.work or Path(tempfile.mkdtemp(prefix="hyperforget-request-load-")), a.method, a.repeats, a.json)


if __name__ == "__main__":
    main()
