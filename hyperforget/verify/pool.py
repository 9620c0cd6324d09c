"""The reference pool: the true retrains every request's verification reads, trained once per (data, θ0, recipe).

Why a pool: verification compares an unlearned model with models that never saw the data. Trained per
request, that reference cost several retrains before the first answer to any class and before every record
request, so a verified answer cost more than the retrain it replaces. The pool trains them once, with θ0's
own `train:` recipe and architecture, and every request reads it (the request path trains no reference):
- **per-class retrains** (`pool.class_retrains` = K per class, one vmapped batch per class): the reference
  of a single-class request. The first K − 1 are LiRA's shadows and the probe/relearn reference, the last the
  held-out retrain (`verdict.shadows_and_held_out`);
- **membership shadows** (`pool.shadows` = N): each trained on a seeded half of the training set, in
  complementary pairs, so every record is "out" of exactly N / 2 of them (an odd last record: of all). For any
  record the models that never saw it are known, which is what offline per-example LiRA needs on a record
  request (Carlini et al. 2112.03570; U-LiRA 2403.01218). A shadow takes as many optimiser steps as θ0's
  recipe on the whole set (twice the epochs on half the data): with θ0's epochs it is underfit, and a true
  retrain without a few records then looks like a member beside it (measured: LiRA AUC 0.69–0.93 for exact
  retrains against epoch-matched shadows, 0.39–0.66 against step-matched ones). Each shadow file also keeps
  the shadows' logits on the train and test splits (`shadow_logits`), all a record request reads of them,
  in one pass over each file (`Pool.shadows`).
A class set has no exact reference here (no retrain without the whole set): a set request asks for a
per-request reference explicitly (`evaluation.reference: per_request`).

Seeds are disjoint from θ0's (train.seed), the per-request retrains' (1000 + seed + i), the zoo's retrains
(5000 + …) and EU-k's (7000 + seed): the models that judge a generated answer are never ones the
hypernetwork was trained on.

Stale pools are refused, never used: `pool.json` records the key it was built for (the sha256 of the
prepared dataset and of θ0, the architecture, the recipe and the pool settings), and `load` names what
changed and the command that rebuilds it. Work units (one per class, one per chunk of shadow pairs) are
independent: the Prefect build flow fans them out and a rerun keeps every unit whose file verifies. The pool
is named by one digest: the sha256 of `pool.json`, which lists every file's sha256 (a certificate cites it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import ConfigError, IntegrityError
from hyperforget.base.io import load_tensors, read_json, save_tensors, sha256_file, sidecar, tensor_metadata, write_json
from hyperforget.config.params import Params, PoolConfig, TrainConfig
from hyperforget.data.datasets import Dataset
from hyperforget.models.nets import ModelSpec, predict
from hyperforget.models.train import train_many, unstack

POOL_FORMAT = 3  # what members are and hold (2: step-matched shadows; 3: shadows keep their logits); part of the
# key, so an older pool is stale
POOL_JSON = "pool.json"
PLAN_JSON = "plan.json"
CLASS_SEED = 20_000  # + 10_000 · pool.seed + 100 · class + i
SHADOW_SEED = 1_000_000  # + 10_000 · pool.seed + shadow
SHADOW_CHUNK = 8  # shadows per work unit (four complementary pairs)
BUILD_HINT = "build it with `hyperforget pool` (or `dvc repro pool`)"
PER_REQUEST_SETTING = ("`--set evaluation.reference=per_request` (the Prefect unlearn flow: "
                       "`--param settings='[\"evaluation.reference=per_request\"]'`)")
PER_REQUEST_HINT = f"or answer with a reference trained for this request: {PER_REQUEST_SETTING}"


def pool_key(dataset_sha256: str, model_sha256: str, spec: ModelSpec, train: TrainConfig, cfg: PoolConfig) -> dict:
    """What a pool is valid for: the data, θ0, the architecture, the recipe the retrains follow, the settings."""
    recipe = train.model_dump(exclude={"patience", "seed"})  # θ0's early stopping and seed are not the retrains'
    return {"format": POOL_FORMAT, "dataset_sha256": dataset_sha256, "model_sha256": model_sha256,
            "spec": spec.to_metadata(), "recipe": recipe, "pool": cfg.model_dump()}


def project_key(art: Artifacts, params: Params) -> dict:
    """`pool_key` of the project's current prepared data, θ0 and params."""
    spec = ModelSpec.from_metadata(tensor_metadata(art.model))
    return pool_key(sha256_file(art.dataset), sha256_file(art.model), spec, params.train, params.pool)


def load_current(art: Artifacts, params: Params) -> Pool:
    """The project's pool (`art.pool`), refused when missing or built for other data, θ0 or settings."""
    for path, stage in ((art.dataset, "prepare"), (art.model, "train")):
        if not path.exists():
            raise ConfigError(f"{path} not found: run `hyperforget {stage}` first (or `dvc repro`)")
    return load(art.pool, project_key(art, params))


def class_seeds(cfg: PoolConfig, c: int) -> list[int]:
    return [CLASS_SEED + 10_000 * cfg.seed + 100 * c + i for i in range(cfg.class_retrains)]


def shadow_rows(n_train: int, cfg: PoolConfig) -> torch.Tensor:
    """[N, ⌊n/2⌋] train indices per shadow: pair j splits a seeded permutation into two complementary halves."""
    half, rows = n_train // 2, []
    for j in range(cfg.shadows // 2):
        perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(SHADOW_SEED + 10_000 * cfg.seed + j))
        rows += [perm[:half].sort().values, perm[half:2 * half].sort().values]
    return torch.stack(rows)


def units(num_classes: int, cfg: PoolConfig) -> list[dict[str, Any]]:
    """The pool's independent work units: one per class, then one per chunk of `SHADOW_CHUNK` shadows."""
    out: list[dict[str, Any]] = [{"kind": "class", "class": c, "file": f"class-{c:03d}.safetensors"}
                                 for c in range(num_classes)]
    for start in range(0, cfg.shadows, SHADOW_CHUNK):
        stop = min(start + SHADOW_CHUNK, cfg.shadows)
        out.append({"kind": "shadows", "shadows": [start, stop], "file": f"shadows-{start:03d}-{stop:03d}.safetensors"})
    return out


def _unit_done(out: Path, unit: dict) -> bool:
    path = out / unit["file"]
    return path.exists() and sidecar(path).exists() and sha256_file(path) == sidecar(path).read_text().split()[0]


def plan(out: str | Path, key: dict, num_classes: int, cfg: PoolConfig) -> list[int]:
    """Record what is being built (clearing a folder built for another key: a stale pool is never mixed with a
    new one) and return the units still to build."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if (out / PLAN_JSON).exists() and read_json(out / PLAN_JSON).get("key") != key:
        for f in [*out.glob("*.safetensors"), *out.glob("*.safetensors.sha256"), out / POOL_JSON]:
            f.unlink(missing_ok=True)
    todo = units(num_classes, cfg)
    write_json(out / PLAN_JSON, {"key": key, "units": todo})
    return [i for i, u in enumerate(todo) if not _unit_done(out, u)]


def build_unit(out: str | Path, u: int, data: Dataset, spec: ModelSpec, train: TrainConfig, cfg: PoolConfig
               ) -> dict[str, Any]:
    """Train unit `u` of the plan (after `plan`) and write its safetensors; a no-op when its file verifies."""
    out = Path(out)
    unit = read_json(out / PLAN_JSON)["units"][u]
    if _unit_done(out, unit):
        return {"unit": u, "built": False}
    recipe = TrainConfig(**train.model_dump(exclude={"patience"}))
    if unit["kind"] == "class":
        c = unit["class"]
        keep = data.y_train != c
        seeds = class_seeds(cfg, c)
        models = train_many(spec, seeds, data.x_train[keep], data.y_train[keep], recipe, desc=f"pool class {c}")
        extra: dict[str, torch.Tensor] = {}
    else:
        start, stop = unit["shadows"]
        rows = shadow_rows(len(data.y_train), cfg)[start:stop]
        seeds = [SHADOW_SEED + 10_000 * cfg.seed + s for s in range(start, stop)]
        step_matched = recipe.model_copy(update={"epochs": recipe.epochs * len(data.y_train) // rows.shape[1]})
        models = train_many(spec, seeds, data.x_train, data.y_train, step_matched,
                            desc=f"pool shadows {start}-{stop}", rows=rows)
        extra = {"rows": rows, **shadow_logits(models, data)}
    tensors = pack(models) | extra
    save_tensors(out / unit["file"], tensors, {**spec.to_metadata(), "models": str(len(models)),
                                               "seeds": ",".join(map(str, seeds))})
    return {"unit": u, "built": True}


def shadow_logits(models: Sequence[nn.Module], data: Dataset) -> dict[str, torch.Tensor]:
    """Each shadow's logits on the train and test splits, [K, n, C]: what every record request reads of the
    shadows (their output reference, LiRA's out populations), a pass over the whole data per shadow that
    grows with the data (on LeNet-5, 16 shadows, MNIST's 10k split: most of a record request's reference).
    Computed once here, with the models, so the request path runs no shadow."""
    return {"train_logits": torch.stack([predict(m, data.x_train) for m in models]),
            "test_logits": torch.stack([predict(m, data.x_test) for m in models])}


def pack(models: Sequence[nn.Module]) -> dict[str, torch.Tensor]:
    """Several same-architecture models as one safetensors mapping, `<i>.<parameter>`: the pool's files and a
    per-request reference cache (`answer.reference_models`) share this layout."""
    return {f"{i}.{name}": t for i, m in enumerate(models) for name, t in m.state_dict().items()}


def unpack(spec: ModelSpec, tensors: dict[str, torch.Tensor], n: int) -> list[nn.Module]:
    """The `n` models `pack` wrote (other keys, such as a shadow file's `rows`, are ignored), in eval mode."""
    return unstack(spec, {name: torch.stack([tensors[f"{i}.{name}"] for i in range(n)])
                          for name in spec.build().state_dict()})


def finish(out: str | Path, n_train: int) -> dict[str, Any]:
    """Check every unit's file and write `pool.json` (the key, each file's sha256): the pool's one name."""
    out = Path(out)
    planned = read_json(out / PLAN_JSON)
    missing = [u["file"] for u in planned["units"] if not _unit_done(out, u)]
    if missing:
        raise IntegrityError(f"the reference pool in {out} misses {', '.join(missing)}; {BUILD_HINT} (it resumes)")
    index = {"key": planned["key"], "n_train": n_train, "units": planned["units"],
             "files": {u["file"]: sha256_file(out / u["file"]) for u in planned["units"]}}
    write_json(out / POOL_JSON, index)
    return {"sha256": sha256_file(out / POOL_JSON), "files": len(index["files"])}


def build(out: str | Path, key: dict, data: Dataset, spec: ModelSpec, train: TrainConfig, cfg: PoolConfig
          ) -> dict[str, Any]:
    """Plan, build every missing unit, finish; returns `finish`'s summary with the units built."""
    todo = plan(out, key, data.num_classes, cfg)
    for u in todo:
        build_unit(out, u, data, spec, train, cfg)
    return finish(out, len(data.y_train)) | {"built_units": len(todo)}


class Shadows(NamedTuple):
    """The pool's membership shadows: the models, which training records each saw (bool [N, n_train]) and their
    logits on the train and test splits ([N, n_train, C], [N, n_test, C]), all in one order."""

    models: list[nn.Module]
    seen: torch.Tensor
    train_logits: torch.Tensor
    test_logits: torch.Tensor


@dataclass(frozen=True)
class Pool:
    """A verified, current reference pool; models are read (checksum-verified) only when asked for."""

    root: Path
    index: dict[str, Any]
    sha256: str

    def _models(self, file: str) -> tuple[list[nn.Module], dict[str, torch.Tensor]]:
        tensors = load_tensors(self.root / file, self.index["files"][file])
        meta = tensor_metadata(self.root / file)
        return unpack(ModelSpec.from_metadata(meta), tensors, int(meta["models"])), tensors

    def class_file(self, c: int) -> str:
        unit = next((u for u in self.index["units"] if u["kind"] == "class" and u["class"] == c), None)
        if unit is None:
            raise ConfigError(f"the reference pool has no retrains without class {c}")
        return unit["file"]

    def shadow_files(self) -> list[str]:
        return [u["file"] for u in self.index["units"] if u["kind"] == "shadows"]

    def class_models(self, c: int) -> list[nn.Module]:
        """The K retrains that never saw class `c`."""
        return self._models(self.class_file(c))[0]

    def shadows(self) -> Shadows:
        """The membership shadows, which records each saw, and their logits (`shadow_logits` wrote them when the
        pool was built), each shadow file read and checksum-verified once."""
        models: list[nn.Module] = []
        seen, train_logits, test_logits = [], [], []
        for unit in (u for u in self.index["units"] if u["kind"] == "shadows"):
            ms, tensors = self._models(unit["file"])
            models += ms
            member = torch.zeros(len(ms), self.index["n_train"], dtype=torch.bool)
            member.scatter_(1, tensors["rows"], True)
            seen.append(member)
            train_logits.append(tensors["train_logits"])
            test_logits.append(tensors["test_logits"])
        return Shadows(models, torch.cat(seen), torch.cat(train_logits), torch.cat(test_logits))


def _changed(old: dict, new: dict) -> list[str]:
    names = {"format": "how the pool's models are trained (a newer HyperForget)",
             "dataset_sha256": "the prepared data", "model_sha256": "θ0 (retrained)", "spec": "the architecture",
             "recipe": "the train: recipe", "pool": "the pool: settings"}
    return [names.get(k, k) for k in new if old.get(k) != new[k]]


def load(out: str | Path, key: dict) -> Pool:
    """The pool in `out`, verified to be built for `key`; ConfigError naming the fix when missing or stale."""
    out = Path(out)
    if not (out / POOL_JSON).exists():
        raise ConfigError(f"no reference pool in {out}: {BUILD_HINT}, once per data set and θ0; {PER_REQUEST_HINT}")
    index = read_json(out / POOL_JSON)
    changed = _changed(index.get("key", {}), key)
    if changed:
        raise ConfigError(f"the reference pool in {out} is stale: {', '.join(changed)} changed since it was built; "
                          "rebuild it with `hyperforget pool` (or `dvc repro pool`)")
    return Pool(out, index, sha256_file(out / POOL_JSON))


def describe(pool: Pool, files: Sequence[str]) -> dict[str, Any]:
    """What a verdict rests on, for its record and certificate: the pool's sha256 and the files it read."""
    return {"kind": "pool", "sha256": pool.sha256, "files": {f: pool.index["files"][f] for f in files}}
