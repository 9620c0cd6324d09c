"""Wall time of training N models in one vmapped batch vs N separate runs, side by side in one run.

    python bench/zoo_vmap.py [--models 64] [--epochs 5] [--arch mlp] [--repeats 2]
    python bench/zoo_vmap.py --work DIR [--models 4] [--class 3] [--repeats 1] [--json PATH]

Prints the ratio looped / vmapped (the speed-up of the zoo's batched training) and the machine.
Repeats alternate the two so background load hits both alike. With `--work`, the models are what the reference
pool trains for one class of that project (its architecture, its `train:` recipe, its training data without
`--class`): whether the pool's one vmapped batch per unit pays on that architecture.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.io import write_json
from hyperforget.config.overlays import load_params
from hyperforget.config.params import DataConfig, TrainConfig
from hyperforget.data.datasets import load_dataset, prepare
from hyperforget.data.readers import import_raw
from hyperforget.models.nets import ModelSpec, load_model
from hyperforget.models.train import train_many, train_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--arch", default="mlp", choices=["mlp", "cnn"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="a project folder: train what its pool trains")
    ap.add_argument("--class", dest="forget_class", type=int, default=3, help="with --work: the class left out")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    if args.work is not None:
        params = load_params(args.work / "params.yaml")
        art = Artifacts.for_params(args.work / "params.yaml")
        data = load_dataset(art.prepare)
        keep = data.y_train != args.forget_class
        x, y = data.x_train[keep], data.y_train[keep]
        spec = load_model(art.model)[1]
        tcfg = TrainConfig(**params.train.model_dump(exclude={"patience"}))  # the pool's recipe
        what = f"{args.models} × {spec.arch} on {data.name} without class {args.forget_class} ({len(y)} images)"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = DataConfig(raw_dir=tmp)
            import_raw(cfg)
            ds = prepare(cfg)
        x, y = ds.x_train, ds.y_train
        spec = ModelSpec(args.arch, ds.input_shape, ds.num_classes, 10 if args.arch == "mlp" else 8)
        tcfg = TrainConfig(epochs=args.epochs, batch_size=32)
        what = f"{args.models} × {args.arch} on digits"
    seeds = list(range(args.models))

    def looped() -> None:
        for s in seeds:
            train_model(spec.build(seed=s), x, y, tcfg, seed=s)

    def vmapped() -> None:
        train_many(spec, seeds, x, y, tcfg)

    times: dict[str, list[float]] = {"looped": [], "vmapped": []}
    for _ in range(args.repeats):
        for name, fn in (("looped", looped), ("vmapped", vmapped)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)

    loop_t, vmap_t = statistics.median(times["looped"]), statistics.median(times["vmapped"])
    print(f"machine: {platform.machine()} {platform.processor() or ''} cores={os.cpu_count()} "
          f"torch={torch.__version__} threads={torch.get_num_threads()}")
    print(f"{what}, {tcfg.epochs} epochs, batch {tcfg.batch_size}, medians of {args.repeats}")
    print(f"looped : {loop_t:8.2f} s")
    print(f"vmapped: {vmap_t:8.2f} s")
    print(f"ratio looped/vmapped: {loop_t / vmap_t:.2f}×")
    if args.json:
        write_json(args.json, {"command": "python bench/zoo_vmap.py " + " ".join(sys.argv[1:]), "what": what,
                               "epochs": tcfg.epochs, "batch_size": tcfg.batch_size, "threads": torch.get_num_threads(),
                               "machine": f"{platform.machine()} {platform.processor()} cores={os.cpu_count()}",
                               "seconds": times, "looped_over_vmapped": loop_t / vmap_t})


if __name__ == "__main__":
    main()
