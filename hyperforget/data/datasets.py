"""Prepared data sets and forget/retain splits: `prepare` turns a set's original files (`readers`) into
seeded, stratified train/val/test tensors, saved as safetensors with a dataset card."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hyperforget.base import records
from hyperforget.base.errors import DataError
from hyperforget.base.io import load_tensors, save_tensors, tensor_metadata, write_json
from hyperforget.config.params import DataConfig, ForgetConfig
from hyperforget.data.readers import load_raw


@dataclass(frozen=True)
class Dataset:
    """Prepared tensors: x as float32 [N, C, H, W] (standardised), y as int64."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


@dataclass(frozen=True)
class ForgetSplit:
    """Indices into the train split: D_f (forget) and D_r (retain); `classes` for class requests."""

    forget_idx: torch.Tensor
    retain_idx: torch.Tensor
    classes: tuple[int, ...] | None

    def retained_classes(self, num_classes: int) -> list[int]:
        return [c for c in range(num_classes) if c not in (self.classes or ())]


# ---------- splits ----------


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held) with `fraction` of every class held out; seeded and sorted."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n = round(len(idx) * fraction)
        held.append(idx[:n])
        keep.append(idx[n:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def prepare(cfg: DataConfig) -> Dataset:
    """Train/val/test tensors. Files with their own test split (MNIST's four originals: 60k + 10k; CIFAR-10)
    keep it as the test split and carve validation (`val_fraction`, seeded, stratified) from their training
    images; files without one (digits, the 10k-only MNIST folder) first carve a test split (`test_fraction`)."""
    x, y, tx, ty = load_raw(cfg.name, Path(cfg.raw_dir) / cfg.name)
    if tx is None:
        train_idx, test_idx = stratified_split(y, cfg.test_fraction, cfg.seed)
        x, y, tx, ty = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
    train_idx, val_idx = stratified_split(y, cfg.val_fraction, cfg.seed + 1)
    scale = 16.0 if cfg.name == "digits" else 255.0
    xf = torch.from_numpy(x.astype(np.float32) / scale)
    mean, std = xf[train_idx].mean(), xf[train_idx].std()

    def norm(a: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(a.astype(np.float32) / scale) - mean) / std

    def lab(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    return Dataset(cfg.name, norm(x[train_idx]), lab(y[train_idx]), norm(x[val_idx]), lab(y[val_idx]),
                   norm(tx), lab(ty), cfg.num_classes)


def forget_split(ds: Dataset, req: ForgetConfig) -> ForgetSplit:
    y = ds.y_train
    if req.classes is not None:
        bad = [c for c in req.classes if c >= ds.num_classes]
        if bad:
            raise DataError(f"forget classes {bad} do not exist in {ds.name} (classes 0..{ds.num_classes - 1})")
        mask = torch.isin(y, torch.tensor(req.classes))
        classes = tuple(sorted(req.classes))
    elif req.samples is not None:  # a record-level request: train indices and/or record hashes
        mask = torch.zeros(len(y), dtype=torch.bool)
        mask[records.resolve(records.read_ids(req.samples), ds)] = True
        classes = None
    else:
        g = torch.Generator().manual_seed(req.seed)
        n = round(req.fraction * len(y))
        mask = torch.zeros(len(y), dtype=torch.bool)
        mask[torch.randperm(len(y), generator=g)[:n]] = True
        classes = None
    if not mask.any():
        raise DataError(f"the forget request {req.slug()} selects no training samples")
    return ForgetSplit(mask.nonzero().squeeze(1), (~mask).nonzero().squeeze(1), classes)


# ---------- persistence ----------


def save_dataset(ds: Dataset, folder: str | Path) -> dict:
    folder = Path(folder)
    tensors = {k: getattr(ds, k) for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
    digest = save_tensors(folder / "dataset.safetensors", tensors,
                          metadata={"name": ds.name, "num_classes": str(ds.num_classes)})
    card = {
        "name": ds.name,
        "num_classes": ds.num_classes,
        "input_shape": list(ds.input_shape),
        "sizes": {s: len(getattr(ds, f"y_{s}")) for s in ("train", "val", "test")},
        "class_counts": {s: dict(sorted(Counter(getattr(ds, f"y_{s}").tolist()).items()))
                         for s in ("train", "val", "test")},
        "sha256": digest,
    }
    write_json(folder / "dataset_card.json", card)
    return card


def load_dataset(folder: str | Path) -> Dataset:
    path = Path(folder) / "dataset.safetensors"
    if not path.exists():
        raise DataError(f"{path} not found; run `hyperforget prepare` (or `dvc repro prepare`) first")
    t = load_tensors(path)
    meta = tensor_metadata(path)
    return Dataset(meta["name"], t["x_train"], t["y_train"], t["x_val"], t["y_val"], t["x_test"], t["y_test"],
                   int(meta["num_classes"]))


