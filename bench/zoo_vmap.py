"""Wall time of training N models in one vmapped batch vs N separate runs, side by side in one run.

    python bench/zoo_vmap.py [--models 64] [--epochs 5] [--arch mlp] [--repeats 2]

Prints the ratio looped / vmapped (the speed-up of the zoo's batched training) and the machine.
Repeats alternate the two so background load hits both alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import torch

from hyperforget.config.params import DataConfig, TrainConfig
from hyperforget.data.datasets import prepare
from hyperforget.data.readers import import_raw
from hyperforget.models.nets import ModelSpec
from hyperforget.models.train import train_many, train_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--arch", default="mlp", choices=["mlp", "cnn"])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cfg = DataConfig(raw_dir=tmp)
        import_raw(cfg)
        ds = prepare(cfg)
    spec = ModelSpec(args.arch, ds.input_shape, ds.num_classes, 10 if args.arch == "mlp" else 8)
    tcfg = TrainConfig(epochs=args.epochs, batch_size=32)
    seeds = list(range(args.models))

    def looped() -> None:
        for s in seeds:
            train_model(spec.build(seed=s), ds.x_train, ds.y_train, tcfg, seed=s)

    def vmapped() -> None:
        train_many(spec, seeds, ds.x_train, ds.y_train, tcfg)

    times: dict[str, list[float]] = {"looped": [], "vmapped": []}
    for _ in range(args.repeats):
        for name, fn in (("looped", looped), ("vmapped", vmapped)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)

    loop_t, vmap_t = statistics.median(times["looped"]), statistics.median(times["vmapped"])
    print(f"machine: {platform.machine()} {platform.processor() or ''} cores={os.cpu_count()} "
          f"torch={torch.__version__} threads={torch.get_num_threads()}")
    print(f"{args.models} × {args.arch} on digits, {args.epochs} epochs, batch 32, medians of {args.repeats}")
    print(f"looped : {loop_t:8.2f} s")
    print(f"vmapped: {vmap_t:8.2f} s")
    print(f"ratio looped/vmapped: {loop_t / vmap_t:.1f}×")


if __name__ == "__main__":
    main()
