"""The zoo on disk: `shard-UUU-KKK.safetensors` rows with sha256 sidecars, one record per work unit, the
index of every row and the manifest; and reading it back as tensors for the hypernetwork.

(Layout and resumability: `hyperforget.zoo.trajectories`.)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hyperforget.base.errors import DataError, IntegrityError
from hyperforget.base.io import load_tensors, read_json, save_tensors, sha256_bytes, sha256_file, write_json
from hyperforget.config.params import TrainConfig, ZooConfig
from hyperforget.data.datasets import Dataset
from hyperforget.models.features import load_features
from hyperforget.models.nets import (
    Layout,
    ModelSpec,
    num_params,
)

INDEX, MANIFEST, UNITS = "index.json", "zoo.json", "units"


def all_finite(t: torch.Tensor, chunk: int = 1 << 22) -> bool:
    """No NaN or inf in `t`, checked `chunk` values at a time: `torch.isfinite` of a whole zoo allocates about
    1.6× the zoo in temporaries (9.6 GB on a 5.9 GB zoo)."""
    flat = t.reshape(-1)
    return all(bool(torch.isfinite(flat[i : i + chunk]).all()) for i in range(0, flat.numel(), chunk))


@dataclass
class ZooTensors:
    """`weights` [N,P] targets; `start` [N,P] (or [1,P], broadcast) starting weights, usually θ0;
    `class_loss` [N,C] validation cross-entropy per class (nats); `forget_mask` [N,C] 0/1, the classes
    the row's trajectory was forgetting (all zero for the original model)."""

    weights: torch.Tensor
    start: torch.Tensor
    class_loss: torch.Tensor
    forget_mask: torch.Tensor
    layout: Layout
    num_classes: int
    generate: str = "all"  # the layers the rows hold (hypernet.generate); the rest is `frozen`'s
    frozen: torch.Tensor | None = None  # θ0's full flat vector, for generate != "all"
    index: torch.Tensor | None = None  # positions of the rows' values in it

    def assemble(self, vecs: torch.Tensor) -> torch.Tensor:
        """Full flat weights [..., P_full] of zoo-space vectors [..., P]: θ0's frozen layers + the given ones."""
        if self.generate == "all":
            return vecs
        out = self.frozen.to(vecs.dtype).repeat(*vecs.shape[:-1], 1)
        out[..., self.index] = vecs
        return out

    def __post_init__(self) -> None:
        if self.generate != "all" and (self.frozen is None or self.index is None):
            raise DataError(f"a zoo of {self.generate} layers needs θ0's frozen part (frozen, index)")
        n, p, c = self.weights.shape[0], num_params(self.layout), self.num_classes
        expected = {"weights": (n, p), "class_loss": (n, c), "forget_mask": (n, c)}
        for name, shape in expected.items():
            t = getattr(self, name)
            if tuple(t.shape) != shape:
                raise DataError(f"zoo {name} has shape {tuple(t.shape)}, expected {shape} (N rows, P={p}, C={c})")
        if self.start.dim() != 2 or self.start.shape[1] != p or self.start.shape[0] not in (1, n):
            raise DataError(f"zoo start has shape {tuple(self.start.shape)}, expected ({n}, {p}) or (1, {p})")
        for name in ("weights", "start", "class_loss"):
            if not all_finite(getattr(self, name)):
                raise DataError(f"zoo {name} contains NaN or inf; rebuild the zoo")
        if ((self.forget_mask != 0) & (self.forget_mask != 1)).any():
            raise DataError("zoo forget_mask must hold only 0 and 1")

    @property
    def num_rows(self) -> int:
        return self.weights.shape[0]

    def fingerprint(self) -> str:
        """sha256 over the tensors and layout: a resumed training must see the same data."""
        h = hashlib.sha256(json.dumps([self.layout, self.num_classes]).encode())
        for t in (self.weights, self.start, self.class_loss, self.forget_mask):
            h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()


def weights_sha256(vec: torch.Tensor) -> str:
    """sha256 of a flat weight vector's float32 bytes: ties the zoo (and hypernets) to one θ0."""
    return sha256_bytes(vec.detach().float().contiguous().numpy().tobytes())


def manifest_of(original_vec: torch.Tensor, spec: ModelSpec, layout: Layout, data: Dataset, cfg: ZooConfig,
              train_cfg: TrainConfig, requests: list[tuple[int, ...]]) -> dict[str, Any]:
    data_sha = sha256_bytes(b"".join(t.contiguous().numpy().tobytes() for t in
                                     (data.x_train, data.y_train, data.x_val, data.y_val)))
    # level retrains are no rows: a zoo given some later keeps its rows (`zoo.levels`)
    return {"config": cfg.model_dump(mode="json", exclude={"level_retrains"}),
            "train": train_cfg.model_dump(mode="json"),
            "spec": spec.to_metadata(), "layout": [[n, list(s)] for n, s in layout],
            "num_classes": data.num_classes, "theta0_sha256": weights_sha256(original_vec),
            "data_sha256": data_sha, "requests": [list(r) for r in requests]}


def unit_record(out: Path, u: int) -> Path:
    return out / UNITS / f"unit-{u:03d}.json"


def unit_done(out: Path, u: int) -> bool:
    """A unit counts as built when its record exists and every shard it lists passes its checksum."""
    path = unit_record(out, u)
    if not path.exists():
        return False
    shards = read_json(path)["shards"]
    return all((out / s["file"]).exists() and sha256_file(out / s["file"]) == s["sha256"] for s in shards)


def zoo_units(out_dir: str | Path) -> list[tuple[int, ...]]:
    """The work units of the zoo recorded in `out_dir`, as forget requests: θ0's empty one, then the manifest's."""
    return [(), *(tuple(r) for r in read_json(Path(out_dir) / MANIFEST)["requests"])]


def finish_zoo(out_dir: str | Path, seconds: float = 0.0, resumed: int = 0) -> dict[str, Any]:
    """Join the unit records, in unit order, into `index.json` and mark the zoo complete."""
    out = Path(out_dir)
    manifest, units = read_json(out / MANIFEST), range(len(zoo_units(out)))
    missing = [u for u in units if not unit_done(out, u)]
    if missing:
        raise IntegrityError(f"zoo units {missing} in {out} are missing or corrupt; re-run the zoo stage to build them")
    index: dict[str, Any] = {"shards": [], "rows": []}
    for u in units:
        record = read_json(unit_record(out, u))
        index["shards"] += record["shards"]
        index["rows"] += record["rows"]
    write_json(out / INDEX, index)
    counts = {k: sum(r["kind"] == k for r in index["rows"]) for k in ("original", "trajectory", "retrain")}
    if any(r["kind"] == "head_retrain" for r in index["rows"]):
        counts["head_retrain"] = sum(r["kind"] == "head_retrain" for r in index["rows"])
    summary = {"rows": len(index["rows"]), "shards": len(index["shards"]), "counts": counts,
               "num_requests": len(manifest["requests"])}
    # only what the zoo is goes in the folder (timings would make an identical rebuild look new to DVC)
    write_json(out / MANIFEST, {**manifest, **summary, "complete": True})
    return {"out_dir": str(out), **summary, "resumed_units": resumed, "seconds": seconds}


def write_shard(out: Path, record: dict[str, Any], name: str, weights: torch.Tensor,
                 rows: list[dict[str, Any]]) -> None:
    digest = save_tensors(out / name, {"weights": weights.float().contiguous()})
    record["shards"].append({"file": name, "sha256": digest, "rows": len(rows), "unit": record["unit"]})
    record["rows"] += [{**r, "shard": name, "row": i, "shard_sha256": digest} for i, r in enumerate(rows)]


def read_zoo_losses(out_dir: str | Path) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Recorded val losses [N, C] and forget masks [N, C] (from the index, no weights) and the manifest:
    all a prompt needs, so unlearning never pays for loading the zoo's weights."""
    out = Path(out_dir)
    if not (out / MANIFEST).exists():
        raise IntegrityError(f"no zoo in {out} ({MANIFEST} missing); build it with the zoo stage")
    manifest = read_json(out / MANIFEST)
    if not manifest.get("complete"):
        raise IntegrityError(f"the zoo build in {out} is incomplete; re-run the zoo stage to finish it")
    rows = read_json(out / INDEX)["rows"]
    mask = torch.zeros(len(rows), manifest["num_classes"])
    for i, r in enumerate(rows):
        mask[i, r["request"]] = 1.0
    return torch.tensor([r["val_loss"] for r in rows]), mask, manifest


def _shard_weights(path: Path, digest: str) -> torch.Tensor:
    """One shard's weights, checked against the sha256 the index recorded; a bad one names the fix."""
    try:
        return load_tensors(path, expected_sha256=digest)["weights"]
    except IntegrityError as e:
        raise IntegrityError(f"zoo shard {path} is corrupt or missing ({e}); re-run the zoo stage: it re-verifies "
                             "every shard and rebuilds from the first bad one") from e


def read_rows(out_dir: str | Path, index_rows: list[dict[str, Any]], rows: Sequence[int]) -> torch.Tensor:
    """The weights of the zoo rows `rows` (positions in the index, `index_rows`) [len(rows), P], reading only the
    shards that hold them, each checked against the sha256 the index recorded: what a lookup of a few rows costs,
    not the whole zoo's load."""
    out, wanted = Path(out_dir), {}
    for i, r in enumerate(rows):
        entry = index_rows[int(r)]
        wanted.setdefault((entry["shard"], entry["shard_sha256"]), []).append((i, entry["row"]))
    picked: list[torch.Tensor | None] = [None] * len(rows)
    for (name, digest), items in wanted.items():
        weights = _shard_weights(out / name, digest)
        for i, at in items:
            picked[i] = weights[at]
    return torch.stack(picked)


def load_zoo(out_dir: str | Path) -> tuple[ZooTensors, list[dict[str, Any]]]:
    """The zoo as hypernet training data (val losses as conditioning) and its index rows; every shard's
    sha256 is checked against the index."""
    out = Path(out_dir)
    class_loss, mask, manifest = read_zoo_losses(out)
    index = read_json(out / INDEX)
    rows, weights, held = index["rows"], None, 0
    for shard in index["shards"]:  # into one tensor as they are read: a list then torch.cat held the zoo twice
        part = _shard_weights(out / shard["file"], shard["sha256"])
        if weights is None:
            weights = part.new_empty((len(rows), *part.shape[1:]))
        if held + len(part) <= len(rows):
            weights[held : held + len(part)] = part
        held += len(part)
    if weights is None or held != len(rows):
        raise IntegrityError(f"{out / INDEX} lists {len(rows)} rows but the shards hold {held}; rebuild")
    theta0 = weights[[r["kind"] for r in rows].index("original")]
    generate, frozen = manifest.get("generate", "all"), {}
    if generate != "all":  # the rows hold θ0's generated layers; θ0 itself comes with the cached features
        feats = load_features(out, ModelSpec.from_metadata(manifest["spec"]))
        if weights_sha256(feats.theta0) != manifest["theta0_sha256"] or not torch.equal(feats.start, theta0):
            raise IntegrityError(f"the original row or the features in {out} do not match θ0; rebuild the zoo")
        frozen = {"generate": generate, "frozen": feats.theta0, "index": feats.part.index}
    elif weights_sha256(theta0) != manifest["theta0_sha256"]:
        raise IntegrityError(f"the original row in {out} does not match θ0's recorded sha256; rebuild the zoo")
    layout = [(n, tuple(s)) for n, s in manifest["layout"]]
    return ZooTensors(weights, theta0[None], class_loss, mask, layout, manifest["num_classes"], **frozen), rows
