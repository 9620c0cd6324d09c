"""Pipeline stages as plain functions over validated params.

The CLI (and so `dvc repro`) and the Prefect flows call exactly these, so a stage run by DVC and the
same stage run by Prefect do the same thing. Each stage reads its inputs from `artifacts/`, writes
its outputs there atomically and returns a JSON-able summary (paths and metrics, never tensors).
"""

from __future__ import annotations

from pathlib import Path

from hyperforget import data as data_mod
from hyperforget.config import Params
from hyperforget.data import Dataset
from hyperforget.io import read_json, sha256_file, write_json
from hyperforget.metrics import per_class_accuracy
from hyperforget.models import ModelSpec, load_model, save_model
from hyperforget.train import predict, train_model

ARTIFACTS = Path("artifacts")


def paths(root: Path = ARTIFACTS) -> dict[str, Path]:
    return {
        "prepare": root / "prepare",
        "dataset": root / "prepare" / "dataset.safetensors",
        "card": root / "prepare" / "dataset_card.json",
        "train": root / "train",
        "model": root / "train" / "model.safetensors",
        "train_metrics": root / "train" / "metrics.json",
        "evaluate": root / "evaluate",
        "compare": root / "compare",
        "requests": root / "requests",
    }


def import_data(params: Params) -> dict:
    folder = data_mod.import_raw(params.data)
    return {"raw_dir": str(folder), "files": data_mod.raw_checksums(folder)}


def prepare(params: Params) -> dict:
    ds = data_mod.prepare(params.data)
    card = data_mod.save_dataset(ds, paths()["prepare"])
    return {"dataset": str(paths()["dataset"]), "card": card}


def model_spec(params: Params, ds: Dataset) -> ModelSpec:
    return ModelSpec(params.model.arch, ds.input_shape, ds.num_classes, params.model.width)


def load_data() -> Dataset:
    return data_mod.load_dataset(paths()["prepare"])


def train(params: Params) -> dict:
    """Train the original model θ0 on all training data and record its per-class test accuracy."""
    ds = load_data()
    spec = model_spec(params, ds)
    model = spec.build(seed=params.train.seed)
    history = train_model(model, ds.x_train, ds.y_train, params.train, params.train.seed, ds.x_val, ds.y_val,
                          desc="train θ0")
    digest = save_model(paths()["model"], model, spec)
    logits = predict(model, ds.x_test)
    per_class = per_class_accuracy(logits, ds.y_test, ds.num_classes)
    metrics = {
        "test_acc": (logits.argmax(1) == ds.y_test).float().mean().item(),
        "val_acc": history["val_acc"][-1],
        "per_class_test_acc": per_class,
        "epochs_run": history["epochs_run"],
        "num_params": sum(p.numel() for p in model.parameters()),
        "sha256": digest,
    }
    write_json(paths()["train_metrics"], metrics)
    return {"model": str(paths()["model"]), "metrics": metrics}


def load_original() -> tuple:
    return load_model(paths()["model"])


def evaluate(params: Params) -> dict:
    """Metrics of the original model on the configured forget request (the 'before' of unlearning)."""
    from hyperforget.metrics import Evaluator

    ds = load_data()
    model, _ = load_original()
    split = data_mod.forget_split(ds, params.forget)
    ev = Evaluator.for_original(model, ds, split, params.evaluation.mia_splits, params.evaluation.seed)
    report = ev.report(model)
    out = paths()["evaluate"] / "metrics.json"
    write_json(out, {"request": params.forget.slug(), **report})
    return {"metrics": str(out), "report": report}


def lineage() -> dict[str, str]:
    """sha256 of what produced a model (the data and the original); later stages add theirs."""
    out = {}
    for key in ("dataset", "model"):
        p = paths()[key]
        if p.exists():
            out[key] = sha256_file(p)
    return out


def read_train_metrics() -> dict:
    return read_json(paths()["train_metrics"])
