"""Building the zoo: plan the work units (θ0 and one per request), build each (independent, so the Prefect
flow fans them out; a rerun keeps every unit whose shards verify) and join them into the index."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from torch import nn

from hyperforget.base.errors import ConfigError, IntegrityError
from hyperforget.base.io import read_json, write_json
from hyperforget.base.progress import progress as progress_iter
from hyperforget.config.params import TrainConfig, ZooConfig
from hyperforget.data.datasets import Dataset
from hyperforget.models.features import cache_features, load_features
from hyperforget.models.metrics import class_metrics
from hyperforget.models.nets import (
    ModelSpec,
    flatten,
    generated_part,
    param_layout,
)
from hyperforget.zoo import levels
from hyperforget.zoo.requests import refuse_held_out, zoo_requests
from hyperforget.zoo.shards import MANIFEST, finish_zoo, manifest_of, unit_done, unit_record, write_shard, zoo_units
from hyperforget.zoo.trajectories import compute_unit


def plan_zoo(original: nn.Module, spec: ModelSpec, data: Dataset, cfg: ZooConfig, train_cfg: TrainConfig,
             out_dir: str | Path, generate: str = "all", timings: dict[str, float] | None = None) -> list[int]:
    """Record the manifest (refusing a folder built with other settings) and return the work units still
    to build: unit 0 is θ0, unit u ≥ 1 the zoo's (u-1)-th request. Units are independent, so callers may
    build them in any order or in parallel (the Prefect `build` flow fans them out as tasks).
    With `generate` other than "all" (hypernet.generate) the zoo holds only those layers: the manifest's
    `layout` is their sub-layout, and θ0's frozen-part features are cached here first (`features`; their
    cost in seconds goes to `timings["features_s"]`, 0 when the cache was valid)."""
    out = Path(out_dir)
    original_vec = flatten(original).float()
    requests = zoo_requests(cfg, data.num_classes)
    layout = param_layout(original) if generate == "all" else generated_part(original, generate).layout
    manifest = manifest_of(original_vec, spec, layout, data, cfg, train_cfg, requests)
    if generate != "all":  # absent = "all": zoos of every layer keep their manifest
        manifest["generate"] = generate
    if (out / MANIFEST).exists():
        old = read_json(out / MANIFEST)
        changed = sorted(k for k, v in manifest.items() if old.get(k) != v)
        if changed:
            raise ConfigError(f"{out} holds a zoo built with different {', '.join(changed)}; "
                              "delete the folder (or choose another zoo dir) to build this one")
    write_json(out / MANIFEST, {**manifest, "complete": False})
    if generate != "all":
        _, seconds = cache_features(out, original, spec, data, generate)
        if timings is not None:
            timings["features_s"] = seconds
    units = zoo_units(out)
    return [u for u in range(len(units)) if not unit_done(out, u)
            or not levels.unit_done(out, u, units[u], cfg.level_retrains)]


def build_unit(original: nn.Module, spec: ModelSpec, data: Dataset, cfg: ZooConfig, train_cfg: TrainConfig,
               out_dir: str | Path, u: int) -> dict[str, Any]:
    """Compute unit `u` (after `plan_zoo`), write its shards, then its record, and its level retrains
    (`zoo.levels`) when it asks for them; what is already built is kept (a zoo given level retrains later
    trains only those)."""
    out = Path(out_dir)
    units = zoo_units(out)
    if not 0 <= u < len(units):
        raise ConfigError(f"zoo unit {u} does not exist: the zoo in {out} has units 0..{len(units) - 1}")
    request = units[u]
    built = False
    if not levels.unit_done(out, u, request, cfg.level_retrains):
        levels.build(out, u, spec, data, request, cfg, train_cfg)
        built = True
    if unit_done(out, u):
        return {"unit": u, "rows": sum(s["rows"] for s in read_json(unit_record(out, u))["shards"]), "built": built}
    refuse_held_out([request] if request else [], cfg.held_out(data.num_classes))
    generate = read_json(out / MANIFEST).get("generate", "all")
    feats = load_features(out, spec) if generate != "all" else None
    weights, rows = compute_unit(flatten(original).float(), spec, data, request, u, cfg, train_cfg, feats)
    xs = (data.x_train, data.x_val) if feats is None else (feats.train, feats.val)
    metrics = [class_metrics(spec, weights, xs[0], data.y_train, cut=generate),
               class_metrics(spec, weights, xs[1], data.y_val, cut=generate)]
    for i, row in enumerate(rows):
        for (loss, acc), split in zip(metrics, ("train", "val"), strict=True):
            row[f"{split}_loss"], row[f"{split}_acc"] = loss[i].tolist(), acc[i].tolist()
    record: dict[str, Any] = {"unit": u, "request": list(request), "shards": [], "rows": []}
    for k, start in enumerate(range(0, len(rows), cfg.shard_rows)):
        stop = min(start + cfg.shard_rows, len(rows))
        write_shard(out, record, f"shard-{u:03d}-{k:03d}.safetensors", weights[start:stop], rows[start:stop])
    write_json(unit_record(out, u), record)
    return {"unit": u, "rows": len(rows), "built": True}


def build_zoo(original: nn.Module, spec: ModelSpec, data: Dataset, cfg: ZooConfig, train_cfg: TrainConfig,
              out_dir: str | Path, progress: bool = True, workers: int = 1, generate: str = "all") -> dict[str, Any]:
    """Build (or resume building) the zoo in `out_dir`, `workers` units at a time in a thread pool (the
    result does not depend on it); returns a JSON-able summary (with `features_s` for partial generation)."""
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    todo = plan_zoo(original, spec, data, cfg, train_cfg, out_dir, generate, timings)
    resumed = len(zoo_units(out_dir)) - len(todo)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        built = pool.map(lambda u: build_unit(original, spec, data, cfg, train_cfg, out_dir, u), todo)
        for _ in progress_iter(built, "zoo", total=len(todo)) if progress else built:
            pass
    return finish(out_dir, cfg, time.perf_counter() - t0, resumed) | timings


def finish(out_dir: str | Path, cfg: ZooConfig, seconds: float = 0.0, resumed: int = 0) -> dict[str, Any]:
    """Join the level retrains (`levels.json`, refused while a unit's are missing) and the units (`finish_zoo`)."""
    out = Path(out_dir)
    units = zoo_units(out)
    missing = [u for u, r in enumerate(units) if not levels.unit_done(out, u, r, cfg.level_retrains)]
    if missing:
        raise IntegrityError(f"zoo units {missing} in {out} miss their level retrains (zoo.level_retrains = "
                             f"{cfg.level_retrains}); re-run the zoo stage to build them")
    joined = levels.join(out, units, cfg.level_retrains)
    return finish_zoo(out, seconds, resumed) | ({"levels": joined} if joined else {})
