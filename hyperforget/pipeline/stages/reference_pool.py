"""Stage `pool`: build (or resume) the reference pool every request is verified against, whole or one work
unit at a time (the Prefect fan-out); see `hyperforget.verify.pool`."""

from __future__ import annotations

import time
from typing import Any

from hyperforget.base.artifacts import Artifacts
from hyperforget.config.params import Params
from hyperforget.data import datasets as data_mod
from hyperforget.models.nets import ModelSpec
from hyperforget.pipeline.stages.common import keep_build_timing, track
from hyperforget.verify import pool as pool_mod


def _inputs(params: Params, art: Artifacts) -> tuple[data_mod.Dataset, ModelSpec, dict]:
    key = pool_mod.project_key(art, params)
    return data_mod.load_dataset(art.prepare), ModelSpec.from_metadata(key["spec"]), key


def pool(params: Params, art: Artifacts) -> dict[str, Any]:
    """Build every missing unit of the pool, then index it."""
    t0 = time.perf_counter()
    data, spec, key = _inputs(params, art)
    summary = pool_mod.build(art.pool, key, data, spec, params.train, params.pool)
    return _track(params, art, summary, time.perf_counter() - t0)


def pool_plan(params: Params, art: Artifacts) -> dict[str, Any]:
    data, _, key = _inputs(params, art)
    return {"todo": pool_mod.plan(art.pool, key, data.num_classes, params.pool)}


def pool_unit(params: Params, art: Artifacts, unit: int) -> dict[str, Any]:
    data, spec, _ = _inputs(params, art)
    return pool_mod.build_unit(art.pool, unit, data, spec, params.train, params.pool)


def pool_finish(params: Params, art: Artifacts, seconds: float, built: int) -> dict[str, Any]:
    data = data_mod.load_dataset(art.prepare)
    return _track(params, art, pool_mod.finish(art.pool, len(data.y_train)) | {"built_units": built}, seconds)


def _track(params: Params, art: Artifacts, summary: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Log this run; the timing file keeps what the pool cost to build (`keep_build_timing`)."""
    built = summary["built_units"]
    keep_build_timing(art, "pool", built > 0, {"seconds": seconds, "built_units": built})
    track(params, art, "pool", {"seconds": seconds, "built_units": summary["built_units"],
                                "class_retrains": params.pool.class_retrains, "shadows": params.pool.shadows},
          [art.pool / pool_mod.POOL_JSON])
    return summary | {"seconds": seconds}
