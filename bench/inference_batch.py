"""Evaluation speed against batch size: a project's θ0 over its test split, per batch size, side by side.

    python bench/inference_batch.py --work DIR [--sizes 64 128 256 512 1024 4096] [--repeats 10] [--json PATH]

Why: `models.nets.predict` evaluates in batches (`INFERENCE_BATCH`); every verification runs it hundreds of times
(the relearn test evaluates the forgotten class's test images after each step). On a CPU a conv net's activations
for a large batch leave the caches, so the batch size is a speed choice; this measures it for DIR's θ0 (e.g.
work/mnist-lenet-dense) and checks that the logits are the same at every size. Sizes are timed in rotation, so
background load hits them alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from hyperforget.base.runtime import configure

configure()  # before torch loads, as the CLI does

import torch  # noqa: E402

from hyperforget.base.artifacts import Artifacts  # noqa: E402
from hyperforget.base.io import write_json  # noqa: E402
from hyperforget.data.datasets import load_dataset  # noqa: E402
from hyperforget.models.nets import INFERENCE_BATCH, load_model, predict  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="project folder (holds params.yaml, θ0, the data)")
    ap.add_argument("--sizes", nargs="+", type=int, default=[64, 128, 256, 512, 1024, 4096])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    art = Artifacts.for_params(args.work / "params.yaml")
    model, spec = load_model(art.model)
    x = load_dataset(art.prepare).x_test
    reference = predict(model, x, batch_size=len(x))
    seconds: dict[int, list[float]] = {b: [] for b in args.sizes}
    same = {b: torch.equal(predict(model, x, batch_size=b), reference) for b in args.sizes}  # also the warm-up
    for _ in range(args.repeats):
        for b in args.sizes:
            t0 = time.perf_counter()
            predict(model, x, batch_size=b)
            seconds[b].append(time.perf_counter() - t0)
    median = {b: statistics.median(s) for b, s in seconds.items()}
    print(f"{spec.arch} θ0 over {len(x)} test images, {torch.get_num_threads()} threads, medians of {args.repeats} "
          f"(INFERENCE_BATCH = {INFERENCE_BATCH})")
    for b in args.sizes:
        print(f"  batch {b:5d}: {1000 * median[b]:8.1f} ms  logits {'identical' if same[b] else 'DIFFERENT'}")
    if args.json:
        write_json(args.json, {"command": "python bench/inference_batch.py " + " ".join(sys.argv[1:]),
                               "arch": spec.arch, "images": len(x), "threads": torch.get_num_threads(),
                               "machine": f"{platform.machine()} {platform.processor()} cores={os.cpu_count()}",
                               "median_s": {str(b): median[b] for b in args.sizes},
                               "identical_logits": {str(b): same[b] for b in args.sizes}, "seconds": seconds})


if __name__ == "__main__":
    main()
