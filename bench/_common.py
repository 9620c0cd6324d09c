"""Shared set-up for the bench scripts: an experiment file's params (configs/README.md), a data set, its
original model and a forget request; and the DiHyFo build (prepare → train θ0 → zoo → hypernetworks) in a
project folder of its own, by default work/<experiment>/ in this repository (git-ignored), or
$HYPERFORGET_WORK/<experiment>/ when that environment variable names another folder."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from hyperforget.base.artifacts import Artifacts
from hyperforget.config.options import VARIANTS
from hyperforget.config.overlays import apply_override, load_params, parse_overrides, parse_params, read_params
from hyperforget.config.params import ForgetConfig, Params
from hyperforget.data.datasets import forget_split as make_split
from hyperforget.data.datasets import prepare
from hyperforget.data.readers import import_raw
from hyperforget.models.metrics import accuracy
from hyperforget.models.nets import ARCHITECTURES, ModelSpec, predict
from hyperforget.models.train import train_model
from hyperforget.pipeline import answer, stages
from hyperforget.unlearn.method import UnlearnInputs

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"  # the project's params: digits, and the base every experiment file extends
CONFIGS = REPO / "configs"  # one experiment file per experiment
WORK_ENV = "HYPERFORGET_WORK"  # where the benches' project folders go (default: work/ in this repository)
BASELINES = ["finetune", "neggrad", "neggrad_plus", "gradtau", "gradtau_paper", "forsaken", "ssd", "salun", "scrub",
             "head_finetune"]


def work_folder(name: str) -> Path:
    """A bench's project folder: <$HYPERFORGET_WORK or this repository's work/>/<name>."""
    return Path(os.environ.get(WORK_ENV) or REPO / "work").resolve() / name


def experiment_raw(params: str | Path, source: str | None = None,
                   overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The raw params of the experiment file `params` (its `extends` chain merged) with `data.source` made
    absolute (a path in the file is project-relative; `source`, a command-line path, is relative to the working
    directory and replaces it), then `overrides` (dotted key → value) applied; not validated. A bench writes it
    as the params.yaml of a project folder of its own, or validates it with `parse_params`."""
    raw = read_params(params)
    data = raw.get("data")
    if source is not None:
        apply_override(raw, "data.source", str(Path(source).resolve()))
    elif isinstance(data, dict) and isinstance(data.get("source"), str):
        data["source"] = str(Artifacts.for_params(params).resolve(data["source"]).resolve())
    for dotted, value in (overrides or {}).items():
        apply_override(raw, dotted, value)
    return raw


def add_request_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default=str(PARAMS), help="experiment file: data, model and the original's "
                        "recipe, which every retrain uses too (default: params.yaml, digits; the MLP on MNIST's 10k "
                        "split: configs/mnist-t10k-baselines.yaml)")
    parser.add_argument("--source", default=None, help="folder of the data set's files (default: the experiment's "
                        "data.source)")
    parser.add_argument("--set", action="append", default=[], help="param override KEY=VALUE (YAML value)")
    parser.add_argument("--classes", type=lambda s: [int(c) for c in s.split(",")], help="e.g. 3 or 2,5 "
                        "(default: the experiment's forget.classes)")
    parser.add_argument("--fraction", type=float, help="forget a random fraction of the training set instead")
    parser.add_argument("--seed", type=int, default=None, help="the one seed (default: the experiment's)")
    parser.add_argument("--arch", choices=ARCHITECTURES, default=None, help="the target model (models.nets; "
                        "default: the experiment's model.arch)")
    parser.add_argument("--width", type=int, default=None, help="hidden width (mlp) or channels (cnn); lenet: fixed "
                        "(default: the experiment's model.width)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs of θ0 and every retrain "
                        "(default: the experiment's train.epochs)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--work", default=None,
                        help="a project folder already built (bench/dihyfo_mnist.py --work, or a repository after "
                             "`dvc repro`): take its data, θ0 and `train:` recipe instead of building them; "
                             "--params, --source, --set, --arch, --width and --epochs are then ignored")


def setup(args: argparse.Namespace, retrain_seeds: int = 3, mia_splits: int = 10) -> tuple[Params, UnlearnInputs]:
    """Prepare the data, train the original with its recipe and split; returns the params (the recipe as
    `train:`, the request as `forget:`, the one `seed`) and the inputs every method and compare() take."""
    if args.threads:
        torch.set_num_threads(args.threads)
    given = {"seed": args.seed, "model.arch": args.arch, "model.width": args.width, "train.epochs": args.epochs}
    overrides = {**parse_overrides(args.set), **{k: v for k, v in given.items() if v is not None},
                 "evaluation.retrain_seeds": retrain_seeds, "evaluation.mia_splits": mia_splits,
                 "data.raw_dir": tempfile.mkdtemp(prefix="hyperforget-bench-")}
    params = parse_params(experiment_raw(args.params, args.source, overrides), f"{args.params} + bench options")
    if args.fraction or args.classes:
        request = ForgetConfig(fraction=args.fraction, seed=params.seed) if args.fraction else \
            ForgetConfig(classes=args.classes)
        params = params.model_copy(update={"forget": request})
    cfg, seed = params.data, params.seed
    import_raw(cfg)
    data = prepare(cfg)
    spec = ModelSpec(params.model.arch, data.input_shape, data.num_classes, params.model.width)
    original = spec.build(seed=seed)
    t0 = time.perf_counter()
    train_model(original, data.x_train, data.y_train, params.train, seed=seed)
    print(f"original: {cfg.name} {spec.arch} ({sum(p.numel() for p in original.parameters())} parameters) "
          f"trained in {time.perf_counter() - t0:.1f} s, "
          f"test acc {accuracy(predict(original, data.x_test), data.y_test):.3f}")
    inputs = UnlearnInputs(original.eval(), spec, data, make_split(data, params.forget), seed, gates=params.gates)
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


def ensure_original(params: Params, art: Artifacts) -> None:
    """import → prepare → train θ0, each only if its output is missing: what every bench project starts from."""
    if not art.dataset.exists():
        stages.import_data(params, art)
        stages.prepare(params, art)
    if not art.model.exists():
        stages.train(params, art)


def bench_project(prefix: str, params_file: str | Path, sets: list[str], work: str | Path | None = None
                  ) -> tuple[Params, Artifacts]:
    """A bench's own project: the experiment's params (`params_file` + `--set` items) written as the params.yaml of
    `work`, by default work/<prefix>-<experiment>[-<each override>]/ (digits for params.yaml), validated."""
    import yaml

    raw = experiment_raw(params_file, overrides=parse_overrides(sets))
    name = Path(params_file).stem if Path(params_file).resolve() != PARAMS else "digits"
    root = Path(work) if work else work_folder(f"{prefix}-{name}" + "".join(f"-{item}" for item in sets))
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return parse_params(raw), Artifacts(root)


def write_results(json_path: str, payload: dict[str, Any], text: str, md: str | None) -> None:
    """The bench's JSON, its Markdown table printed and, with `md`, written there too."""
    from hyperforget.base.io import write_json, write_text

    write_json(json_path, payload)
    print(text)
    if md:
        write_text(md, text)


def run_pipeline(params: Params, art: Artifacts, variants: tuple[str, ...] = VARIANTS) -> dict[str, Any]:
    """import → prepare → train θ0 (each only if its output is missing) → zoo → one hypernetwork per variant,
    reusing what `art` already holds (the zoo and hypernet training resume, and refuse artifacts built with
    other settings). Returns {"zoo": zoo summary, variant: hypernet metrics (with "seconds")}."""
    ensure_original(params, art)
    return {"zoo": stages.zoo(params, art), **{v: stages.hypernet(params, art, v) for v in variants}}
