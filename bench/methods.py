"""Wall time of each unlearning method relative to one retrain from scratch, measured side by side.

All methods (by default every baseline, SalUn, SCRUB and the head-only control included) and one retrain
seed run in one process on the same request, interleaved (the order rotates every repeat) so that load from
anything else on the machine hits them alike; each is first run --warmup times untimed. Prints the median of
--repeats timings (the methods' own `wall_time_s`: unlearning only, no evaluation) and the forget / retained
test accuracy of the last run, so a fast method that did not forget is visible as such.

    .venv/bin/python bench/methods.py --dataset digits --classes 3 --repeats 5 --threads 1

MNIST-60k with LeNet-5 takes θ0 and its recipe (12 epochs, cosine) from a project that bench/dihyfo_mnist.py
built (`make mnist-table`), where DiHyFo's hypernetworks can be timed beside the baselines:

    .venv/bin/python bench/methods.py --work work/mnist-lenet --classes 3 --repeats 1 --warmup 0 \
        --threads 2 --methods finetune,neggrad,neggrad_plus,gradtau,gradtau_paper,forsaken,ssd,salun,scrub,\
head_finetune,dihyfo1,dihyfo2
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _common import BASELINES, add_request_args, load_project, setup

from hyperforget.models.metrics import accuracy
from hyperforget.models.nets import predict
from hyperforget.pipeline.compare import describe_request, machine
from hyperforget.unlearn import run_method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_request_args(parser)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each method first")
    parser.add_argument("--methods", default=",".join(BASELINES))
    args = parser.parse_args()
    params, inputs = load_project(args) if args.work else setup(args)
    data, split = inputs.data, inputs.split
    names = ["retrain", *args.methods.split(",")]
    options = {n: params.method_options(n) for n in names}  # retrain: one seed, the original's recipe
    times: dict[str, list[float]] = {n: [] for n in names}
    accs: dict[str, tuple[float, float]] = {}
    for _ in range(args.warmup):  # first calls pay for lazy initialisation
        for n in names:
            run_method(n, inputs, options[n])
    forgotten = torch.isin(data.y_test, torch.tensor(split.classes or []))
    for r in range(max(1, args.repeats)):
        for n in names[r % len(names):] + names[: r % len(names)]:
            res = run_method(n, inputs, options[n])
            times[n].append(res.wall_time_s)
            logits = predict(res.model, data.x_test)
            accs[n] = (accuracy(logits[forgotten], data.y_test[forgotten]) if forgotten.any() else float("nan"),
                       accuracy(logits[~forgotten], data.y_test[~forgotten]))
    m = machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
          f"{m['platform']}")
    spec = inputs.spec
    print(f"request: {data.name} ({len(data.y_train)} train), {spec.arch} "
          f"({sum(p.numel() for p in inputs.original.parameters())} parameters), "
          f"{describe_request(data, split)['label']}; median of {max(1, args.repeats)} interleaved runs")
    t_retrain = statistics.median(times["retrain"])
    print(f"{'method':<14} {'median s':>9} {'min s':>8} {'max s':>8} {'vs retrain':>11} {'speed-up':>9} "
          f"{'forget test':>12} {'retained test':>14}")
    for n in names:
        t = statistics.median(times[n])
        lo, hi = min(times[n]), max(times[n])
        f, k = accs[n]
        print(f"{n:<14} {t:9.3f} {lo:8.3f} {hi:8.3f} {t / t_retrain:10.3f}× {t_retrain / t:8.1f}× {f:12.3f} {k:14.3f}")


if __name__ == "__main__":
    main()
