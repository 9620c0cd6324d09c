"""Wall time of each unlearning method relative to one retrain from scratch, measured side by side.

All methods run in one process on the same request, interleaved (the order rotates every repeat) so
that load from anything else on the machine hits them alike; each is run once untimed first. Prints
the median of --repeats timings (the methods' own `wall_time_s`: unlearning only, no evaluation).

    .venv/bin/python bench/methods.py --dataset digits --classes 3 --repeats 5 --threads 1
"""

from __future__ import annotations

import argparse
import statistics

from _common import BASELINES, add_request_args, setup

from hyperforget.evaluate import describe_request, machine
from hyperforget.unlearn import run_method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_request_args(parser)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--methods", default=",".join(BASELINES))
    args = parser.parse_args()
    params, inputs = setup(args)
    data, split = inputs.data, inputs.split
    names = ["retrain", *args.methods.split(",")]
    options = {n: params.method_options(n) for n in names}  # retrain: one seed, the original's recipe
    times: dict[str, list[float]] = {n: [] for n in names}
    for n in names:  # warm-up: first calls pay for lazy initialisation
        run_method(n, inputs, options[n])
    for r in range(args.repeats):
        for n in names[r % len(names):] + names[: r % len(names)]:
            times[n].append(run_method(n, inputs, options[n]).wall_time_s)
    m = machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
          f"{m['platform']}")
    print(f"request: {data.name}, {describe_request(data, split)['label']}; median of {args.repeats} interleaved runs")
    t_retrain = statistics.median(times["retrain"])
    print(f"{'method':<14} {'median s':>9} {'min s':>8} {'max s':>8} {'vs retrain':>11} {'speed-up':>9}")
    for n in names:
        t = statistics.median(times[n])
        lo, hi = min(times[n]), max(times[n])
        print(f"{n:<14} {t:9.3f} {lo:8.3f} {hi:8.3f} {t / t_retrain:10.3f}× {t_retrain / t:8.1f}×")


if __name__ == "__main__":
    main()
