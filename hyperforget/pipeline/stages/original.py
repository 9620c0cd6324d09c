"""Stage `train`: the original model θ0 on all training data, with its per-class test accuracy."""

from __future__ import annotations

import time

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.io import write_json
from hyperforget.config.params import Params
from hyperforget.data import datasets as data_mod
from hyperforget.models.metrics import accuracy, per_class_accuracy
from hyperforget.models.nets import ModelSpec, predict, save_model
from hyperforget.models.train import train_model
from hyperforget.pipeline.stages.common import track


def train(params: Params, art: Artifacts) -> dict:
    """Train the original model θ0 on all training data and record its per-class test accuracy."""
    ds = data_mod.load_dataset(art.prepare)
    spec = ModelSpec(params.model.arch, ds.input_shape, ds.num_classes, params.model.width)
    model = spec.build(seed=params.train.seed)
    t0 = time.perf_counter()
    history = train_model(model, ds.x_train, ds.y_train, params.train, params.train.seed, ds.x_val, ds.y_val,
                          desc="train θ0")
    seconds = time.perf_counter() - t0
    digest = save_model(art.model, model, spec)
    logits = predict(model, ds.x_test)
    metrics = {
        "test_acc": accuracy(logits, ds.y_test),
        "val_acc": history["val_acc"][-1],
        "per_class_test_acc": per_class_accuracy(logits, ds.y_test, ds.num_classes),
        "epochs_run": history["epochs_run"],
        "num_params": sum(p.numel() for p in model.parameters()),
        "sha256": digest,
    }
    write_json(art.train_metrics, metrics)
    write_json(art.timing("train"), {"seconds": seconds})
    track(params, art, "train", {**metrics, "seconds": seconds}, [art.train_metrics])
    return {"model": str(art.model), "metrics": metrics}
