"""Where one deletion request's seconds go: cProfile of `deletion.submit` + `deletion.process` in a fresh process.

    python bench/profile_request.py --work DIR [--method M] [--classes 3] [--warm] [--top 40]

Why: `bench/request_e2e.py` times whole requests side by side; this says which calls inside one request cost
what, cold (the first request of a fresh process: imports, MLflow's first use, the ONNX exporter's start) or,
with --warm, after one untimed request in the same process. DIR is a project folder with params.yaml, θ0, the
pool (and the zoo and hypernetwork when the method is DiHyFo), e.g. one `bench/request_e2e.py` set up. Prints
the request's wall time and the `--top` calls by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from pathlib import Path
from uuid import uuid4

from hyperforget.base.runtime import configure

configure()  # before torch loads, as the CLI does

from hyperforget.base.artifacts import Artifacts  # noqa: E402
from hyperforget.config.overlays import load_params  # noqa: E402
from hyperforget.erasure import deletion  # noqa: E402


def one_request(params, art, classes: list[int], method: str | None) -> tuple[str, float]:
    rid = f"profile-{uuid4().hex[:6]}"
    t0 = time.perf_counter()
    deletion.submit(params, art, classes=classes, requester="bench/profile_request.py", request_id=rid)
    state = deletion.process(params, art, rid, method=method).state
    return state, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="project folder (holds params.yaml)")
    ap.add_argument("--method", default=None, help="default: the params' unlearn.method")
    ap.add_argument("--classes", type=lambda s: [int(c) for c in s.split(",")], default=[3])
    ap.add_argument("--warm", action="store_true", help="profile the second request of this process")
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()
    params, art = load_params(args.work / "params.yaml"), Artifacts.for_params(args.work / "params.yaml")
    if args.warm:
        state, seconds = one_request(params, art, args.classes, args.method)
        print(f"untimed first request: {state} in {seconds:.2f} s")
    profile = cProfile.Profile()
    profile.enable()
    state, seconds = one_request(params, art, args.classes, args.method)
    profile.disable()
    print(f"{'warm' if args.warm else 'cold'} request: {state} in {seconds:.2f} s (under cProfile)")
    pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":  # the ONNX export child is spawned: it re-imports this module
    main()
