"""Pipeline stages as plain functions over validated params.

The CLI (and so `dvc repro`) and the Prefect flows call exactly these, so a stage run by DVC and the
same stage run by Prefect do the same thing. Each stage reads its inputs from `artifacts/`, writes
its outputs there atomically and returns a JSON-able summary (paths and metrics, never tensors).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from hyperforget import data as data_mod
from hyperforget.config import Params
from hyperforget.data import Dataset, ForgetSplit
from hyperforget.io import read_json, sha256_file, write_json
from hyperforget.metrics import Evaluator, per_class_accuracy, summarise
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
        "publish": root / "publish",
    }


def track(params: Params, stage: str, metrics: dict, files: list[Path | str] = (), parent=None) -> None:
    """One MLflow run for this stage execution (nested under `parent` if given): flattened params,
    metrics (per-class too), artifacts."""
    from hyperforget import tracking

    with tracking.start_stage_run(params, stage, parent=parent):
        tracking.log_metrics(metrics)
        tracking.log_artifacts([f for f in files if Path(f).exists()], stage)


def import_data(params: Params) -> dict:
    folder = data_mod.import_raw(params.data)
    return {"raw_dir": str(folder), "files": data_mod.raw_checksums(folder)}


def prepare(params: Params) -> dict:
    ds = data_mod.prepare(params.data)
    card = data_mod.save_dataset(ds, paths()["prepare"])
    track(params, "prepare", {"size": card["sizes"]}, [paths()["card"]])
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
    track(params, "train", metrics, [paths()["train_metrics"]])
    return {"model": str(paths()["model"]), "metrics": metrics}


def load_original() -> tuple:
    return load_model(paths()["model"])


def evaluate(params: Params) -> dict:
    """Metrics of the original model on the configured forget request (the 'before' of unlearning)."""
    ds, model, _, split = _request(params)
    report = _evaluator(params, model, ds, split).report(model)
    out = paths()["evaluate"] / "metrics.json"
    write_json(out, {"request": params.forget.slug(), **report})
    track(params, "evaluate", report, [out])
    return {"metrics": str(out), "report": report}


def lineage() -> dict[str, str]:
    """sha256 of what produced a model (the data and the original); later stages add theirs."""
    out = {}
    for key in ("dataset", "model"):
        p = paths()[key]
        if p.exists():
            out[key] = sha256_file(p)
    return out


def unlearn_config(params: Params):
    """`unlearn:` with the retrain recipe taken from `train:`, so the reference is trained as θ0 was."""
    t = params.train
    retrain = params.unlearn.retrain.model_copy(
        update={"epochs": t.epochs, "batch_size": t.batch_size, "lr": t.lr, "weight_decay": t.weight_decay})
    return params.unlearn.model_copy(update={"retrain": retrain})


def _request(params: Params) -> tuple:
    """The prepared data, θ0 with its spec, and the configured request's forget/retain split."""
    ds = load_data()
    original, spec = load_original()
    return ds, original, spec, data_mod.forget_split(ds, params.forget)


def _evaluator(params: Params, original, ds: Dataset, split: ForgetSplit) -> Evaluator:
    return Evaluator.for_original(original, ds, split, params.evaluation.mia_splits, params.evaluation.seed)


def reference(params: Params, ds: Dataset, original, spec: ModelSpec, split: ForgetSplit, ev: Evaluator) -> dict:
    """Mean ± std of the retrain-from-scratch models for this request, cached by what determines them."""
    from hyperforget.unlearn import run_method
    from hyperforget.unlearn.base import UnlearnInputs

    opts = unlearn_config(params).retrain.model_copy(update={"seeds": params.evaluation.retrain_seeds})
    key = hashlib.sha256(json.dumps([sha256_file(paths()["dataset"]), sha256_file(paths()["model"]),
                                     params.forget.model_dump(), opts.model_dump(),
                                     params.evaluation.model_dump()], sort_keys=True).encode()).hexdigest()
    cache = paths()["requests"] / params.forget.slug() / "reference.json"
    if cache.exists():
        cached = read_json(cache)
        if cached.get("key") == key:
            return cached["summary"]
    res = run_method("retrain", UnlearnInputs(original, spec, ds, split, params.seed), opts)
    summary = summarise([ev.report(m) for m in res.models])
    write_json(cache, {"key": key, "summary": summary, "seeds": opts.seeds})
    return summary


def unlearn(params: Params, method: str | None = None, run_name: str | None = None, parent=None) -> dict:
    """Answer the configured forget request with one method; write the model and its report to
    `artifacts/requests/<request>/<method>/`, or to its `runs/<run_name>/` (concurrent requests pass one)."""
    from hyperforget.unlearn import run_method
    from hyperforget.unlearn.base import UnlearnInputs

    method = method or params.unlearn.method
    options = unlearn_config(params).options_for(method)
    ds, original, spec, split = _request(params)
    ev = _evaluator(params, original, ds, split)
    ref = reference(params, ds, original, spec, split, ev)
    res = run_method(method, UnlearnInputs(original, spec, ds, split, params.seed), options)
    report = ev.report(res.model)
    out = paths()["requests"] / params.forget.slug() / method
    out = out / "runs" / run_name if run_name is not None else out
    digest = save_model(out / "model.safetensors", res.model, spec)
    record = {"request": params.forget.slug(), "method": method, "report": report, "reference": ref,
              "unlearning": res.record(), "sha256": digest}
    write_json(out / "report.json", record)
    track(params, f"unlearn/{method}", {**report, "wall_time_s": res.wall_time_s, "steps": res.steps},
          [out / "report.json"], parent=parent)
    return {"model_path": str(out / "model.safetensors"), "report_path": str(out / "report.json"),
            "sha256": digest, "report": report, "reference": ref, "method": method,
            "request_slug": params.forget.slug(),
            "wall_time_s": res.wall_time_s, "info": res.info, "lineage": res.info.get("lineage", {})}


def compare(params: Params, methods: list[str] | None = None) -> dict:
    """Rank methods on the configured request against the retrain reference; write JSON, Markdown, PNG."""
    from hyperforget.evaluate import compare as run_compare
    from hyperforget.evaluate import write_report

    ds, original, spec, split = _request(params)
    result = run_compare(original, spec, ds, split, methods or params.evaluation.methods, unlearn_config(params),
                         params.evaluation.retrain_seeds, params.evaluation.mia_splits, params.evaluation.seed)
    written = write_report(result, paths()["compare"])
    track(params, "compare", {name: m["report"] | m["gaps"] for name, m in result["methods"].items()},
          list(written.values()))
    return {"result": result, "written": {k: str(v) for k, v in written.items()}}


def publish(params: Params, request: dict) -> dict:
    """Gate → register (alias `candidate` on pass) → ONNX export + S3 upload (only on pass)."""
    from hyperforget import publish as pub

    verdict = pub.gate(request, params)
    registered = pub.register(request, verdict, params)
    exported = pub.export_and_upload(registered["name"], registered["version"], params) if verdict.passed else None
    text = pub.summary_markdown(request, verdict, registered, exported)
    result = {"request": request["request_slug"], "method": request["method"], "gates": verdict.to_dict(),
              "registered": registered, "exported": exported}
    out = paths()["publish"]
    write_json(out / "result.json", result)
    (out / "summary.md").write_text(text)
    return {"result": result, "summary": text, "result_path": str(out / "result.json")}


def summary(params: Params) -> str:
    """What `make run` ends with: the comparison table and where the published model went."""
    from hyperforget.evaluate import format_table

    parts = []
    comparison = paths()["compare"] / "comparison.json"
    if comparison.exists():
        parts.append(format_table(read_json(comparison)))
    published = paths()["publish"] / "result.json"
    if published.exists():
        r = read_json(published)
        reg, exp = r["registered"], r["exported"]
        parts.append(f"registered: {reg['name']} version {reg['version']} (run {reg['run_id']}) in "
                     f"{params.tracking.uri if not os.environ.get('MLFLOW_TRACKING_URI') else 'MLFLOW_TRACKING_URI'}; "
                     f"gates {'passed → alias candidate' if r['gates']['passed'] else 'FAILED → no alias'}")
        parts.append(f"ONNX: {exp['location']} (sha256 {exp['sha256'][:12]}…)" if exp else "ONNX: not exported")
    return "\n\n".join(parts) or "nothing yet: run `dvc repro`"
