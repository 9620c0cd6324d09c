"""Prefect flow `build`: import data → prepare → train → compare, each task one library call.

Why cache by input hash: a stage whose inputs are unchanged has its result on disk already, so
re-running the flow skips it (like `dvc repro`). The key is the stage, the params sections it reads
(as dvc.yaml lists them), the digest of its upstream output, the library's source and the project
folder; a stage whose outputs were deleted runs again (refresh_cache). Results are stored
as JSON (paths and digests), never pickled.

Stages run from the folder that holds the params file (`artifacts/` and `data/` live beside it).
`HYPERFORGET_TASK_RUNNER=ray` selects prefect-ray's RayTaskRunner (the `scale` extra), read when
this module is loaded; the default is a thread pool.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel

import hyperforget
from hyperforget import stages
from hyperforget.config import Params, load_params
from hyperforget.errors import ConfigError

SECTIONS = {"import_data": ("data",), "prepare": ("data",), "train": ("model", "train"),
            "compare": ("seed", "train", "forget", "evaluation", "unlearn")}


def task_runner():
    """The task runner HYPERFORGET_TASK_RUNNER names: `thread` (default) or `ray`."""
    kind = os.environ.get("HYPERFORGET_TASK_RUNNER", "thread")
    if kind == "ray":
        from prefect_ray import RayTaskRunner  # optional: pip install 'hyperforget[scale]'

        return RayTaskRunner()
    if kind != "thread":
        raise ConfigError(f"HYPERFORGET_TASK_RUNNER={kind!r}: choose thread or ray")
    return ThreadPoolTaskRunner(max_workers=2)


@contextmanager
def project(params_path: str) -> Iterator[Path]:
    """Work in the folder holding the params file (the project root), yielding the file's path there;
    the previous working directory is restored afterwards (flows may run in-process)."""
    path, before = Path(params_path).resolve(), os.getcwd()
    os.chdir(path.parent)
    try:
        yield Path(path.name)
    finally:
        os.chdir(before)


def _dump(value):
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def code_digest() -> str:
    """sha256 over the library's source: any code change invalidates every cached stage (conservative)."""
    h = hashlib.sha256()
    for f in sorted(Path(hyperforget.__file__).parent.rglob("*.py")):
        h.update(f.read_bytes())
    return h.hexdigest()


def stage_key(ctx, inputs: dict) -> str:
    params: Params = inputs["params"]
    blob = {"stage": ctx.task.name, "upstream": inputs.get("upstream"), "project": os.getcwd(), "code": code_digest(),
            "params": {s: _dump(getattr(params, s)) for s in SECTIONS[ctx.task.name]}}
    return f"hyperforget-{ctx.task.name}-" + hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


cached = task(cache_key_fn=stage_key, persist_result=True, result_serializer="json")


@cached(name="import_data")
def import_data(params: Params) -> dict:
    out = stages.import_data(params)
    digest = hashlib.sha256(json.dumps(out["files"], sort_keys=True).encode()).hexdigest()
    return {"raw_dir": out["raw_dir"], "sha256": digest}


@cached(name="prepare")
def prepare(params: Params, upstream: str) -> dict:
    out = stages.prepare(params)
    return {"dataset": out["dataset"], "sha256": out["card"]["sha256"]}


@cached(name="train")
def train(params: Params, upstream: str) -> dict:
    out = stages.train(params)
    return {"model": out["model"], "sha256": out["metrics"]["sha256"], "test_acc": out["metrics"]["test_acc"]}


@cached(name="compare")
def compare(params: Params, upstream: str) -> dict:
    return stages.compare(params)["written"]


def _fresh(outputs: list[Path]) -> dict:
    """Run again (ignoring a cached record) when a stage's outputs are gone from disk."""
    return {"refresh_cache": not all(p.exists() for p in outputs)}


@flow(name="build", task_runner=task_runner())
def build(params_path: str = "params.yaml") -> dict:
    """Prepare the data, train the original model and compare the methods on the configured request
    (evaluation.methods against the retrain reference); return where everything went."""
    with project(params_path) as path:
        params = load_params(path)
        p = stages.paths()
        raw = import_data.with_options(**_fresh([Path(params.data.raw_dir) / params.data.name]))(params)
        data = prepare.with_options(**_fresh([p["dataset"], p["card"]]))(params, raw["sha256"])
        model = train.with_options(**_fresh([p["model"], p["train_metrics"]]))(params, data["sha256"])
        report = compare.with_options(**_fresh([p["compare"] / "comparison.json"]))(params, model["sha256"])
        return {"project": os.getcwd(), "raw": raw, "data": data, "model": model, "compare": report}
