"""Shared set-up for the bench scripts: a data set, its original model and a forget request; and the
DiHyFo build (prepare → train θ0 → zoo → hypernetworks) in a project folder of its own."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from hyperforget.base.artifacts import Artifacts
from hyperforget.config.options import VARIANTS
from hyperforget.config.params import (
    DataConfig,
    EvaluationConfig,
    ForgetConfig,
    ModelConfig,
    Params,
    TrainConfig,
    load_params,
)
from hyperforget.data.datasets import forget_split as make_split
from hyperforget.data.datasets import prepare
from hyperforget.data.readers import import_raw
from hyperforget.models.metrics import accuracy
from hyperforget.models.nets import ARCHITECTURES, ModelSpec, predict
from hyperforget.models.train import train_model
from hyperforget.pipeline import answer, stages
from hyperforget.unlearn.method import UnlearnInputs

# The MNIST IDX files: the repository's sibling shared/ folder (<x>/main beside <x>/shared).
MNIST_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist-t10k"
# The original's recipe per data set; the retrain reference uses the same one (it comes from `train:`).
RECIPES = {"digits": TrainConfig(epochs=30, batch_size=32, lr=1e-2),
           "mnist": TrainConfig(epochs=40, batch_size=64, lr=1e-3)}
BASELINES = ["finetune", "neggrad", "neggrad_plus", "gradtau", "gradtau_paper", "forsaken", "ssd", "salun", "scrub",
             "head_finetune"]


def add_request_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=sorted(RECIPES), default="digits")
    parser.add_argument("--source", default=str(MNIST_SOURCE),
                        help="folder of the MNIST IDX files (default ../shared/datasets/mnist-t10k)")
    parser.add_argument("--classes", type=lambda s: [int(c) for c in s.split(",")], help="e.g. 3 or 2,5")
    parser.add_argument("--fraction", type=float, help="forget a random fraction of the training set instead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arch", choices=ARCHITECTURES, default="mlp", help="the target model (models.nets)")
    parser.add_argument("--width", type=int, default=10, help="hidden width (mlp) or channels (cnn); lenet: fixed")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs of θ0 and every retrain "
                        "(default: the data set's recipe)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--work", default=None,
                        help="a project folder already built (bench/dihyfo_mnist.py --work, or a repository after "
                             "`dvc repro`): take its data, θ0 and `train:` recipe instead of building them; "
                             "--dataset, --source, --arch, --width and --epochs are then ignored")


def setup(args: argparse.Namespace, retrain_seeds: int = 3, mia_splits: int = 10) -> tuple[Params, UnlearnInputs]:
    """Prepare the data, train the original with its recipe and split; returns the params (the recipe as
    `train:`, the request as `forget:`, the one `seed`) and the inputs every method and compare() take."""
    if args.threads:
        torch.set_num_threads(args.threads)
    raw = tempfile.mkdtemp(prefix="hyperforget-bench-")
    source = args.source if args.dataset != "digits" else None
    cfg = DataConfig(name=args.dataset, source=source, raw_dir=raw)
    import_raw(cfg)
    data = prepare(cfg)
    spec = ModelSpec(args.arch, data.input_shape, data.num_classes, args.width)
    recipe = RECIPES[args.dataset]
    if args.epochs:
        recipe = recipe.model_copy(update={"epochs": args.epochs})
    original = spec.build(seed=args.seed)
    t0 = time.perf_counter()
    train_model(original, data.x_train, data.y_train, recipe, seed=args.seed)
    print(f"original: {args.dataset} {args.arch} ({sum(p.numel() for p in original.parameters())} parameters) "
          f"trained in {time.perf_counter() - t0:.1f} s, "
          f"test acc {accuracy(predict(original, data.x_test), data.y_test):.3f}")
    request = ForgetConfig(fraction=args.fraction, seed=args.seed) if args.fraction else \
        ForgetConfig(classes=args.classes or [3])
    params = Params(seed=args.seed, data=cfg, model=ModelConfig(arch=args.arch, width=args.width), train=recipe,
                    forget=request,
                    evaluation=EvaluationConfig(retrain_seeds=retrain_seeds, mia_splits=mia_splits))
    inputs = UnlearnInputs(original.eval(), spec, data, make_split(data, request), args.seed, gates=params.gates)
    return params, inputs


def load_project(args: argparse.Namespace) -> tuple[Params, UnlearnInputs]:
    """As setup(), from a built project (--work): its params.yaml (the retrain reference trains with its
    `train:` recipe), prepared data and θ0, and the request of --classes / --fraction. The inputs carry the
    project's artifacts, so DiHyFo's variants can be timed beside the baselines."""
    if args.threads:
        torch.set_num_threads(args.threads)
    art = Artifacts(Path(args.work))
    if not art.model.exists():
        raise SystemExit(f"{art.root} holds no trained θ0 ({art.model} is missing): build it first, e.g. with "
                         "bench/dihyfo_mnist.py --work DIR or `dvc repro`")
    params = load_params(art.params)
    request = ForgetConfig(fraction=args.fraction, seed=args.seed) if args.fraction else \
        ForgetConfig(classes=args.classes or [3])
    params = params.model_copy(update={"forget": request})
    ctx = answer.context(params, art)  # the request's inputs as the pipeline builds them
    model, data = ctx.original, ctx.data
    print(f"original: {art.model} ({sum(p.numel() for p in model.parameters())} parameters), test acc "
          f"{accuracy(predict(model, data.x_test), data.y_test):.3f}; recipe {params.train.epochs} epochs, "
          f"batch {params.train.batch_size}, lr {params.train.lr}, {params.train.schedule}")
    return params, answer.inputs(params, art, ctx)


def run_pipeline(params: Params, art: Artifacts, variants: tuple[str, ...] = VARIANTS) -> dict[str, Any]:
    """import → prepare → train θ0 (each only if its output is missing) → zoo → one hypernetwork per variant,
    reusing what `art` already holds (the zoo and hypernet training resume, and refuse artifacts built with
    other settings). Returns {"zoo": zoo summary, variant: hypernet metrics (with "seconds")}."""
    if not art.dataset.exists():
        stages.import_data(params, art)
        stages.prepare(params, art)
    if not art.model.exists():
        stages.train(params, art)
    return {"zoo": stages.zoo(params, art), **{v: stages.hypernet(params, art, v) for v in variants}}
