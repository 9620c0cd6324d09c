"""The frozen part's features for partial generation (`hypernet.generate: head | block_head | dense`).

When the hypernetwork generates only the last layers, every zoo checkpoint shares θ0's other layers, so what
those layers compute on the training and validation images is the same for all of them. It is computed once
(`cache_features`), stored beside the zoo as `features.safetensors` (sha256 sidecar, verified on every load)
with θ0's full flat vector and the positions of the generated values in it, and the zoo's trajectories,
head retrains and per-checkpoint metrics all run the generated layers alone on it: a small MLP on fixed
features instead of the whole network on images. Nothing here is a retrain: a model "retrained" on these
features kept θ0's frozen layers, which saw the forgotten data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hyperforget.base.errors import IntegrityError
from hyperforget.base.io import load_tensors, save_tensors, sha256_file, tensor_metadata
from hyperforget.data.datasets import Dataset
from hyperforget.models.nets import ModelSpec, Part, flatten, frozen_features, generated_part

FEATURES = "features.safetensors"


@dataclass(frozen=True)
class Features:
    """θ0's frozen-part output on the train [N, ...] and val [M, ...] splits for `part`, and θ0 itself [P]."""

    part: Part
    theta0: torch.Tensor
    train: torch.Tensor
    val: torch.Tensor

    @property
    def start(self) -> torch.Tensor:
        """θ0's generated values: where every trajectory starts."""
        return self.part.extract(self.theta0)


def compute_features(original: nn.Module, data: Dataset, generate: str) -> Features:
    part = generated_part(original, generate)
    return Features(part, flatten(original).float(), frozen_features(original, data.x_train, generate),
                    frozen_features(original, data.x_val, generate))


def cache_features(folder: str | Path, original: nn.Module, spec: ModelSpec, data: Dataset,
                   generate: str) -> tuple[Features, float]:
    """The features in `folder`, computed and written (atomically, with sha256) unless a valid file for this θ0
    and layer set is there; returns them and the seconds spent computing (0 when cached)."""
    path = Path(folder) / FEATURES
    theta0 = flatten(original).float()
    if path.exists():
        try:
            cached = load_features(folder, spec)
            if cached.part.name == generate and torch.equal(cached.theta0, theta0):
                return cached, 0.0
        except IntegrityError:
            pass  # corrupt or foreign: recompute
    t0 = time.perf_counter()
    feats = compute_features(original, data, generate)
    seconds = time.perf_counter() - t0
    save_tensors(path, {"theta0": feats.theta0, "index": feats.part.index, "train": feats.train.contiguous(),
                        "val": feats.val.contiguous()}, metadata={"generate": generate})
    return feats, seconds


def load_features(folder: str | Path, spec: ModelSpec) -> Features:
    """The cached features, checksum verified, with the Part they belong to."""
    path = Path(folder) / FEATURES
    if not path.exists():
        raise IntegrityError(f"{path} is missing: the zoo generates part of the network and caches its frozen "
                             "part's features there; re-run the zoo stage to recompute them")
    t = load_tensors(path)
    generate = tensor_metadata(path).get("generate", "")
    try:
        part = generated_part(spec.build().to("meta"), generate)
    except Exception as e:
        raise IntegrityError(f"{path} names no valid layer set ({generate!r}): {e}; re-run the zoo stage") from e
    if not torch.equal(part.index, t["index"]) or t["theta0"].shape != (part.size,):
        raise IntegrityError(f"{path} does not fit the {spec.arch} architecture's {generate} layers; re-run the zoo "
                             "stage")
    return Features(part, t["theta0"], t["train"], t["val"])


def features_sha256(folder: str | Path) -> str:
    return sha256_file(Path(folder) / FEATURES)
