"""Pipeline stages as plain functions over validated params and the project's `Artifacts`.

The CLI (and so `dvc repro`) and the Prefect `build` flow call exactly these, so a stage run by DVC
and the same stage run by Prefect write the same files and the same MLflow run. Each stage reads its
inputs from the artifact layout, writes its outputs there atomically and returns a JSON-able summary
(paths and metrics, never tensors). Outputs DVC hashes hold no volatile facts (wall times, run ids,
registry versions): those go to MLflow and `Artifacts.timing(stage)`, so an identical rerun changes
nothing DVC or git can see. `pipeline.STAGES` says which params sections, deps and outs each has.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from hyperforget import answer as answer_mod
from hyperforget import data as data_mod
from hyperforget import publish as publish_mod
from hyperforget import tracking
from hyperforget import zoo as zoo_mod
from hyperforget.artifacts import Artifacts
from hyperforget.config import DataConfig, Params
from hyperforget.errors import GateFailed
from hyperforget.evaluate import compare as run_compare
from hyperforget.evaluate import format_table, jsonable, load_report, write_report
from hyperforget.hypernet.diffusion import load_hypernet, train_hypernet
from hyperforget.hypernet.honesty import prompt_alignment
from hyperforget.io import read_json, write_json, write_text
from hyperforget.metrics import accuracy, per_class_accuracy
from hyperforget.models import ModelSpec, load_model, predict, save_model
from hyperforget.train import train_model


def track(params: Params, art: Artifacts, stage: str, metrics: dict, files: list[Path] = (), parent: Any = None
          ) -> None:
    """One MLflow run for this stage execution: flattened params, metrics (per-class too), artifacts."""
    with tracking.start_stage_run(params, art, stage, parent=parent) as run:
        run.log_metrics(metrics)
        run.log_artifacts([f for f in files if Path(f).exists()], stage)


def data_config(params: Params, art: Artifacts) -> DataConfig:
    """`data:` with its folders made absolute under the project root."""
    source = str(art.resolve(params.data.source)) if params.data.source else None
    return params.data.model_copy(update={"raw_dir": str(art.resolve(params.data.raw_dir)), "source": source})


def import_data(params: Params, art: Artifacts) -> dict:
    folder = data_mod.import_raw(data_config(params, art))
    return {"raw_dir": str(folder), "files": data_mod.raw_checksums(folder)}


def prepare(params: Params, art: Artifacts) -> dict:
    ds = data_mod.prepare(data_config(params, art))
    card = data_mod.save_dataset(ds, art.prepare)
    track(params, art, "prepare", {"size": card["sizes"]}, [art.card])
    return {"dataset": str(art.dataset), "card": card}


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


def evaluate_original(params: Params, art: Artifacts) -> dict:
    """Metrics of the original model on the configured forget request (the 'before' of unlearning)."""
    ctx = answer_mod.context(params, art)
    report = ctx.evaluator.report(ctx.original)
    out = art.original_metrics
    write_json(out, jsonable({"request": params.forget.slug(), **report}))
    track(params, art, "evaluate-original", report, [out])
    return {"metrics": str(out), "report": report}


# ---------- zoo ----------


def _zoo_inputs(art: Artifacts) -> tuple:
    model, spec = load_model(art.model)
    return model, spec, data_mod.load_dataset(art.prepare)


def zoo(params: Params, art: Artifacts, workers: int = 1) -> dict[str, Any]:
    """Build (or resume) the zoo from the prepared data and θ0, `workers` units at once."""
    model, spec, data = _zoo_inputs(art)
    return _track_zoo(params, art, zoo_mod.build_zoo(model, spec, data, params.zoo, params.train, art.zoo,
                                                     workers=workers, generate=params.hypernet.generate))


def zoo_plan(params: Params, art: Artifacts) -> dict[str, Any]:
    """The zoo's number of work units and those still to build (see `zoo.plan_zoo`)."""
    model, spec, data = _zoo_inputs(art)
    timings: dict[str, float] = {}
    todo = zoo_mod.plan_zoo(model, spec, data, params.zoo, params.train, art.zoo, params.hypernet.generate, timings)
    return {"units": len(zoo_mod.zoo_units(art.zoo)), "todo": todo, **timings}


def zoo_unit(params: Params, art: Artifacts, unit: int) -> dict[str, Any]:
    model, spec, data = _zoo_inputs(art)
    return zoo_mod.build_unit(model, spec, data, params.zoo, params.train, art.zoo, unit)


def zoo_finish(params: Params, art: Artifacts, seconds: float, resumed: int) -> dict[str, Any]:
    return _track_zoo(params, art, zoo_mod.finish_zoo(art.zoo, seconds, resumed))


def _track_zoo(params: Params, art: Artifacts, summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("seconds", "resumed_units", *(("features_s",) if "features_s" in summary else ()))  # partial generation
    write_json(art.timing("zoo"), {k: summary[k] for k in keys})
    track(params, art, "zoo", {k: summary[k] for k in ("rows", "shards", "counts", *keys)},
          [art.zoo / zoo_mod.MANIFEST])
    return summary


# ---------- hypernetworks ----------


ALIGNMENT_SETS = 6  # held-out sets whose prompt alignment the hypernet stage reports (bench/ reports all)


def alignment_requests(params: Params, num_classes: int) -> list[list[int]]:
    """The first held-out sets when the zoo keeps some out, else every single class (then seen in training)."""
    held = params.zoo.held_out(num_classes)[:ALIGNMENT_SETS]
    return [list(h) for h in held] or [[c] for c in range(num_classes)]


def hypernet(params: Params, art: Artifacts, variant: str) -> dict[str, Any]:
    """Train one DiHyFo variant on the zoo; metrics: training summary and prompt alignment (R²) per request."""
    zoo_tensors, _ = zoo_mod.load_zoo(art.zoo)
    out = art.hypernet(variant)
    summary = train_hypernet(zoo_tensors, params.hypernet.model_copy(update={"variant": variant}), out,
                             held_out=params.zoo.held_out(zoo_tensors.num_classes))
    net = load_hypernet(out, device="cpu")
    data, (_, spec) = data_mod.load_dataset(art.prepare), load_model(art.model)
    alignment = {"-".join(map(str, r)): prompt_alignment(net, zoo_tensors, r, spec, data, seed=params.seed)
                 for r in alignment_requests(params, data.num_classes)}
    metrics = {**{k: summary[k] for k in ("step", "final_loss", "num_params", "num_tokens")},
               "held_out": bool(params.zoo.holdout_sets), "alignment": alignment,
               "mean_r2": float(np.nanmean([a["r2"] for a in alignment.values()]))}
    write_json(out / "metrics.json", jsonable(metrics))
    write_json(art.timing(f"hypernet-{variant}"), {"seconds": summary["seconds"]})
    track(params, art, f"hypernet/{variant}", {**metrics, "seconds": summary["seconds"]}, [out / "metrics.json"])
    return metrics | {"seconds": summary["seconds"]}


# ---------- compare and publish ----------


def compare(params: Params, art: Artifacts, methods: list[str] | None = None) -> dict:
    """Rank methods on the configured request against the retrain reference; write JSON, Markdown, PNG."""
    ctx = answer_mod.context(params, art)
    result = run_compare(params, answer_mod.inputs(params, art, ctx), methods or params.evaluation.methods)
    written = write_report(result, art.compare, art.timing("compare"))
    track(params, art, "compare", {name: m["report"] | m["gaps"] | {"wall_time_s": m["wall_time_s"]}
                                   | {"verification": m["verification"], "gates_passed": m["gates"]["passed"]}
                                   for name, m in result["methods"].items()}, list(written.values()))
    return {"result": result, "written": {k: str(v) for k, v in written.items()}}


def publish(params: Params, art: Artifacts) -> answer_mod.Answer:
    """The pipeline's own request (params' forget request, `unlearn.method`), answered and registered;
    `publish/result.json` and `summary.md` hold what it did, the registry version and run go to timings.
    GateFailed (after writing them) when the model failed its gates: the stage fails like the flow."""
    out = answer_mod.answer(params, art, register=True, request_key="pipeline")
    write_json(art.publish / "result.json", jsonable({k: v for k, v in out.to_dict().items()
                                                      if k not in ("registered", "exported")}))
    write_text(art.publish / "summary.md", publish_markdown(out))
    write_json(art.timing("publish"), jsonable({"registered": out.registered, "exported": out.exported}))
    if not out.passed:
        raise GateFailed(f"the {out.request['method']} model for {out.request['request_slug']} failed its gates: "
                         f"{'; '.join(out.gates.reasons)}; it was registered without an alias and not exported")
    return out


def publish_markdown(out: answer_mod.Answer) -> str:
    """The request summary without the registry's volatile facts (version, run id): a DVC output."""
    return publish_mod.summary_markdown(out.request, out.gates, None, None)


def summary(params: Params, art: Artifacts) -> str:
    """What `make run` ends with: the comparison table and where the published model went."""
    parts = []
    if (art.compare / "comparison.json").exists():
        parts.append(format_table(load_report(art.compare, art.timing("compare"))))
    if (art.publish / "result.json").exists() and art.timing("publish").exists():
        r, where = read_json(art.publish / "result.json"), read_json(art.timing("publish"))
        reg, exp = where["registered"], where["exported"]
        parts.append(f"registered: {reg['name']} version {reg['version']} (run {reg['run_id']}) in "
                     f"{tracking.tracking_uri(params, art)}; gates "
                     f"{'passed → alias candidate' if r['gates']['passed'] else 'FAILED → no alias'}")
        parts.append(f"ONNX: {exp['location']} (sha256 {exp['sha256'][:12]}…)" if exp else "ONNX: not exported")
    return "\n\n".join(parts) or "nothing yet: run `dvc repro`"
