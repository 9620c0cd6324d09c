"""Shared set-up for the bench scripts: a data set, its original model and a forget request."""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from hyperforget.config import DataConfig, ForgetConfig, TrainConfig
from hyperforget.data import forget_split as make_split
from hyperforget.data import import_raw, prepare
from hyperforget.models import ModelSpec
from hyperforget.train import accuracy, train_model
from hyperforget.unlearn.options import RetrainOptions, UnlearnConfig

# The original's recipe per data set; the retrain reference uses the same one.
RECIPES = {"digits": TrainConfig(epochs=30, batch_size=32, lr=1e-2),
           "mnist": TrainConfig(epochs=40, batch_size=64, lr=1e-3)}
BASELINES = ["finetune", "neggrad", "neggrad_plus", "gradtau", "gradtau_paper", "forsaken", "ssd"]


def add_request_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=sorted(RECIPES), default="digits")
    parser.add_argument("--source", help="folder of the MNIST IDX files (e.g. /work/shared/datasets/mnist-t10k)")
    parser.add_argument("--classes", type=lambda s: [int(c) for c in s.split(",")], help="e.g. 3 or 2,5")
    parser.add_argument("--fraction", type=float, help="forget a random fraction of the training set instead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")


def setup(args: argparse.Namespace):
    """Prepare the data, train the original with its recipe and split; returns what compare() needs."""
    if args.threads:
        torch.set_num_threads(args.threads)
    raw = tempfile.mkdtemp(prefix="hyperforget-bench-")
    cfg = DataConfig(name=args.dataset, source=args.source, raw_dir=raw)
    import_raw(cfg)
    data = prepare(cfg)
    spec = ModelSpec("mlp", data.input_shape, data.num_classes, 10)
    recipe = RECIPES[args.dataset]
    original = spec.build(seed=args.seed)
    t0 = time.perf_counter()
    train_model(original, data.x_train, data.y_train, recipe, seed=args.seed)
    print(f"original: {args.dataset} MLP trained in {time.perf_counter() - t0:.1f} s, "
          f"test acc {accuracy(original, data.x_test, data.y_test):.3f}")
    request = ForgetConfig(fraction=args.fraction, seed=args.seed) if args.fraction else \
        ForgetConfig(classes=args.classes or [3])
    unlearn = UnlearnConfig(retrain=RetrainOptions(epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr))
    return data, spec, original.eval(), make_split(data, request), unlearn
