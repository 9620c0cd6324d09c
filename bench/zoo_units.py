"""Wall time of building the zoo unit after unit vs its units fanned out over a thread pool (as
`hyperforget zoo --workers` and the Prefect `build` flow's default task runner do), side by side in one run.

    python bench/zoo_units.py [--workers 2] [--trajectories 16] [--steps 300] [--repeats 1]

Both builds use the params' zoo recipe on digits in fresh folders, and must produce the same index.
Prints the ratio sequential / fanned out and the machine. On a machine with fewer cores than workers ×
torch threads the pool only oversubscribes; the fan-out pays where there are cores (or Dask workers)
to spare.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _common import add_request_args, setup

from hyperforget.base.io import read_json
from hyperforget.zoo.build import build_zoo
from hyperforget.zoo.shards import INDEX


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_request_args(ap)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--trajectories", type=int, default=16)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    params, inputs = setup(args)
    data, spec, original = inputs.data, inputs.spec, inputs.original
    cfg = params.zoo.model_copy(update={"trajectories": args.trajectories, "steps": args.steps,
                                        "save_every": max(1, args.steps // 10)})
    recipe = params.train  # the original's recipe (the experiment's `train:`): the zoo's retrain members use it

    def sequential(out: Path) -> None:
        build_zoo(original, spec, data, cfg, recipe, out, progress=False)

    def fanned_out(out: Path) -> None:
        build_zoo(original, spec, data, cfg, recipe, out, progress=False, workers=args.workers)

    times: dict[str, list[float]] = {"sequential": [], "fanned out": []}
    indexes = {}
    for _ in range(args.repeats):
        for name, fn in (("sequential", sequential), ("fanned out", fanned_out)):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                fn(Path(tmp))
                times[name].append(time.perf_counter() - t0)
                indexes[name] = read_json(Path(tmp) / INDEX)
    assert indexes["sequential"] == indexes["fanned out"], "the fanned-out zoo differs from the sequential one"

    seq, fan = statistics.median(times["sequential"]), statistics.median(times["fanned out"])
    print(f"machine: {platform.machine()} cores={os.cpu_count()} torch={torch.__version__} "
          f"threads={torch.get_num_threads()}")
    print(f"zoo on {params.data.name}: {len(indexes['sequential']['rows'])} checkpoints, {args.trajectories} "
          f"trajectories × {args.steps} steps per request, medians of {args.repeats}")
    print(f"sequential            : {seq:8.2f} s")
    print(f"fanned out ({args.workers} workers): {fan:8.2f} s")
    print(f"ratio sequential/fanned out: {seq / fan:.2f}×")


if __name__ == "__main__":
    main()
