"""Stage `zoo`: build (or resume) the weight zoo, whole or one work unit at a time (the Prefect fan-out)."""

from __future__ import annotations

from typing import Any

from hyperforget.base.artifacts import Artifacts
from hyperforget.config.params import Params
from hyperforget.data import datasets as data_mod
from hyperforget.models.nets import load_model
from hyperforget.pipeline.stages.common import keep_build_timing, track
from hyperforget.zoo import build, shards


def _zoo_inputs(art: Artifacts) -> tuple:
    model, spec = load_model(art.model)
    return model, spec, data_mod.load_dataset(art.prepare)


def zoo(params: Params, art: Artifacts, workers: int = 1) -> dict[str, Any]:
    """Build (or resume) the zoo from the prepared data and θ0, `workers` units at once."""
    model, spec, data = _zoo_inputs(art)
    return _track_zoo(params, art, build.build_zoo(model, spec, data, params.zoo, params.train, art.zoo,
                                                     workers=workers, generate=params.hypernet.generate))


def zoo_plan(params: Params, art: Artifacts) -> dict[str, Any]:
    """The zoo's number of work units and those still to build (see `zoo.plan_zoo`)."""
    model, spec, data = _zoo_inputs(art)
    timings: dict[str, float] = {}
    todo = build.plan_zoo(model, spec, data, params.zoo, params.train, art.zoo, params.hypernet.generate, timings)
    return {"units": len(shards.zoo_units(art.zoo)), "todo": todo, **timings}


def zoo_unit(params: Params, art: Artifacts, unit: int) -> dict[str, Any]:
    model, spec, data = _zoo_inputs(art)
    return build.build_unit(model, spec, data, params.zoo, params.train, art.zoo, unit)


def zoo_finish(params: Params, art: Artifacts, seconds: float, resumed: int) -> dict[str, Any]:
    return _track_zoo(params, art, build.finish(art.zoo, params.zoo, seconds, resumed))


def _track_zoo(params: Params, art: Artifacts, summary: dict[str, Any]) -> dict[str, Any]:
    """Log this run; the timing file keeps what the zoo cost to build (`keep_build_timing`)."""
    keys = ("seconds", "resumed_units", *(("features_s",) if "features_s" in summary else ()))  # partial generation
    keep_build_timing(art, "zoo", summary["resumed_units"] < len(shards.zoo_units(art.zoo)),
                      {k: summary[k] for k in keys})
    track(params, art, "zoo", {k: summary[k] for k in ("rows", "shards", "counts", *keys)},
          [art.zoo / shards.MANIFEST])
    return summary
