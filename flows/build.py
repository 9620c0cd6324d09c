"""Prefect flow `build`: import data → prepare → train → zoo (units fanned out) → reference pool (units fanned
out, then each class's reference measured) → hypernetworks → compare.

Each task is one library call (`hyperforget.pipeline.stages`) on the project the params file lives in; nothing
changes the working directory, so the tasks also run in the worker processes of a Dask task
runner and two builds of two projects can share a process. Why cache by input hash: a stage whose
inputs are unchanged has its result on disk already, so re-running the flow skips it (like `dvc
repro`). The key is the stage, the params sections it reads (from `hyperforget.pipeline.table.STAGES`,
the table dvc.yaml is checked against), the digest of its upstream outputs, the source its stage runs (the
import closure of its module, as dvc.yaml lists it) and the project folder; a stage whose outputs were
deleted runs again (refresh_cache). Results are stored as JSON (paths and digests), never pickled. The zoo
and the reference pool need no cache: their units are independent tasks (the pool's: one per class, one per
chunk of shadows) and each one skips itself when its checksummed files are on disk, so an interrupted build
resumes.

`HYPERFORGET_TASK_RUNNER` picks the runner when a build starts (not at import): `thread` (default, two
threads), `dask` (prefect-dask, a local cluster of worker processes or the scheduler at
HYPERFORGET_DASK_ADDRESS, as on a cluster). Ray is not offered: an untested runner is a code path nobody
knows works, and a Ray cluster is too heavy for the 2-core machines the tests run on. The
`build` flow runs the stages as a subflow with that runner.
"""

from __future__ import annotations

from hyperforget.base.runtime import configure

configure()  # a flow module is its process's entry point: the settings go in before torch loads

import hashlib
import json
import os
import time
from pathlib import Path

from prefect import flow, task, unmapped
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel

import hyperforget
from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import ConfigError
from hyperforget.base.io import sha256_file
from hyperforget.config.options import VARIANTS
from hyperforget.config.overlays import load_params
from hyperforget.config.params import Params
from hyperforget.hypernet.checkpoint import CHECKPOINT_JSON
from hyperforget.pipeline import answer, stages
from hyperforget.pipeline.table import code_files, stage
from hyperforget.zoo import shards

PROJECT_CODE = Path(hyperforget.__file__).resolve().parents[1]  # the folder holding hyperforget/
RUNNERS = ("thread", "dask")
STAGE_OF = {"import_data": "prepare", "prepare": "prepare", "train": "train", "hypernet": "hypernet",
            "compare": "compare"}  # cached task → the pipeline stage whose code it runs
SECTIONS = {"import_data": ["data"], **{name: stage(name).sections for name in ("prepare", "train", "hypernet",
                                                                                   "compare")}}


def task_runner():
    """The task runner HYPERFORGET_TASK_RUNNER names (see the module docstring)."""
    kind = os.environ.get("HYPERFORGET_TASK_RUNNER", "thread")
    if kind not in RUNNERS:
        raise ConfigError(f"HYPERFORGET_TASK_RUNNER={kind!r}: choose one of {', '.join(RUNNERS)}")
    if kind == "thread":
        return ThreadPoolTaskRunner(max_workers=2)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as e:
        raise ConfigError(f"HYPERFORGET_TASK_RUNNER=dask needs prefect-dask ({e}); install it with "
                          "`pip install 'hyperforget[scale]'`, or unset the variable for threads") from e
    address = os.environ.get("HYPERFORGET_DASK_ADDRESS")
    return DaskTaskRunner(address=address) if address else \
        DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "processes": True})


def _dump(value):
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def code_digest(task_name: str) -> str:
    """sha256 over the source files the task's stage runs: the import closure of its module, the same files
    dvc.yaml lists as the stage's code deps (`hyperforget.pipeline.table.code_files`), so the two
    orchestrators agree on what is stale."""
    h = hashlib.sha256()
    for rel in code_files(stage(STAGE_OF[task_name]).module):
        h.update(rel.encode() + b"\0" + (PROJECT_CODE / rel).read_bytes())
    return h.hexdigest()


def stage_key(ctx, inputs: dict) -> str:
    params: Params = inputs["params"]
    blob = {"stage": ctx.task.name, "variant": inputs.get("variant"), "upstream": inputs.get("upstream"),
            "project": inputs["root"], "code": code_digest(ctx.task.name),
            "params": {s: _dump(getattr(params, s)) for s in SECTIONS[ctx.task.name]}}
    return f"hyperforget-{ctx.task.name}-" + hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


cached = task(cache_key_fn=stage_key, persist_result=True, result_serializer="json")
plain = task(persist_result=False)


@cached(name="import_data")
def import_data(params: Params, root: str) -> dict:
    out = stages.import_data(params, Artifacts(root))
    digest = hashlib.sha256(json.dumps(out["files"], sort_keys=True).encode()).hexdigest()
    return {"raw_dir": out["raw_dir"], "sha256": digest}


@cached(name="prepare")
def prepare(params: Params, root: str, upstream: str) -> dict:
    out = stages.prepare(params, Artifacts(root))
    return {"dataset": out["dataset"], "sha256": out["card"]["sha256"]}


@cached(name="train")
def train(params: Params, root: str, upstream: str) -> dict:
    out = stages.train(params, Artifacts(root))
    return {"model": out["model"], "sha256": out["metrics"]["sha256"], "test_acc": out["metrics"]["test_acc"]}


@plain(name="zoo_plan")
def zoo_plan(params: Params, root: str, upstream: str) -> dict:
    """The zoo units not yet on disk (upstream, θ0's digest, only orders the task after `train`)."""
    return stages.zoo_plan(params, Artifacts(root))


@plain(name="zoo_unit", retries=1)
def zoo_unit(params: Params, root: str, unit: int) -> dict:
    return stages.zoo_unit(params, Artifacts(root), unit)


@plain(name="zoo_finish")
def zoo_finish(params: Params, root: str, seconds: float, resumed: int) -> dict:
    art = Artifacts(root)
    return stages.zoo_finish(params, art, seconds, resumed) | {"sha256": sha256_file(art.zoo / shards.INDEX)}


@plain(name="pool_plan")
def pool_plan(params: Params, root: str, upstream: str) -> dict:
    """The reference pool's units not yet on disk (upstream, θ0's digest, only orders the task after `train`)."""
    return stages.pool_plan(params, Artifacts(root))


@plain(name="pool_unit", retries=1)
def pool_unit(params: Params, root: str, unit: int) -> dict:
    return stages.pool_unit(params, Artifacts(root), unit)


@plain(name="pool_finish")
def pool_finish(params: Params, root: str, seconds: float, built: int) -> dict:
    """Index the pool (pool.json); its summary carries the pool's one name, the sha256 of pool.json."""
    return stages.pool_finish(params, Artifacts(root), seconds, built)


@plain(name="pool_references")
def pool_references(params: Params, root: str, upstream: str) -> dict:
    """What each class request reads beside the pool, measured once per class (`answer.warm_pool_references`;
    kept keyed under artifacts/requests/, so a rerun only reads it). upstream, the pool's sha256, orders it."""
    return answer.warm_pool_references(params, Artifacts(root))


@cached(name="hypernet")
def hypernet(params: Params, root: str, variant: str, upstream: str) -> dict:
    art = Artifacts(root)
    metrics = stages.hypernet(params, art, variant)
    return {"variant": variant, "mean_r2": metrics["mean_r2"], "sha256": sha256_file(art.hypernet(variant) /
                                                                                       CHECKPOINT_JSON)}


@cached(name="compare")
def compare(params: Params, root: str, upstream: str) -> dict:
    return stages.compare(params, Artifacts(root))["written"]


def _fresh(outputs: list[Path]) -> dict:
    """Run again (ignoring a cached record) when a stage's outputs are gone from disk."""
    return {"refresh_cache": not all(p.exists() for p in outputs)}


@flow(name="build-stages")
def build_stages(params_path: str = "params.yaml") -> dict:
    """The stages, on the task runner `build` chose."""
    art = Artifacts.for_params(params_path)
    params, root = load_params(params_path), str(art.root)
    raw = import_data.with_options(**_fresh([art.resolve(params.data.raw_dir) / params.data.name]))(params, root)
    data = prepare.with_options(**_fresh([art.dataset, art.card]))(params, root, raw["sha256"])
    model = train.with_options(**_fresh([art.model, art.train_metrics]))(params, root, data["sha256"])
    t0, plan = time.perf_counter(), zoo_plan(params, root, model["sha256"])
    for unit in zoo_unit.map(unmapped(params), root, plan["todo"]):
        unit.result()  # raises if a unit failed its retries: the finished ones stay on disk for the rerun
    zoo = zoo_finish(params, root, time.perf_counter() - t0, plan["units"] - len(plan["todo"]))
    t0, todo = time.perf_counter(), pool_plan(params, root, model["sha256"])["todo"]
    for unit in pool_unit.map(unmapped(params), root, todo):
        unit.result()
    pool = pool_finish(params, root, time.perf_counter() - t0, len(todo))
    pool["references"] = pool_references(params, root, pool["sha256"])
    nets = {v: hypernet.with_options(**_fresh([art.hypernet(v) / "metrics.json"])).submit(params, root, v,
                                                                                           zoo["sha256"])
            for v in VARIANTS}
    nets = {v: f.result() for v, f in nets.items()}
    upstream = hashlib.sha256(json.dumps([model["sha256"], zoo["sha256"], nets], sort_keys=True).encode())
    report = compare.with_options(**_fresh([art.compare / "comparison.json"]))(params, root, upstream.hexdigest())
    return {"project": root, "raw": raw, "data": data, "model": model, "zoo": zoo, "pool": pool,
            "hypernet": nets, "compare": report}


@flow(name="build")
def build(params_path: str = "params.yaml") -> dict:
    """Prepare the data, train the original model, build the zoo and the reference pool, train both
    hypernetworks and compare the methods on the configured request (evaluation.methods against the retrain
    reference)."""
    return build_stages.with_options(task_runner=task_runner())(params_path)
