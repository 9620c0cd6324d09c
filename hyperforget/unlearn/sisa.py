"""SISA: exact unlearning that is cheap by construction (Bourtoule et al., arXiv 1912.03817).

Where a membership test cannot tell θ0 from a retrain (records on MNIST: θ0 barely remembers single
examples), no approximate answer can be certified, and the honest answer is an exact one. A full
retrain is exact and slow; SISA makes the exact answer cheaper by training differently from the start:
the training set is split into `shards` disjoint parts, each part into `slices`, and one constituent
model per shard is trained incrementally: stage r trains on the shard's slices 0..r, starting from the
weights stage r-1 ended with (a checkpoint is kept per stage). The deployed model is the ensemble of the
constituents (mean of their softmax outputs). Deleting records retrains only the shards that hold them,
each from the checkpoint before the earliest slice that held one; every other stage is reused as is.

Exactness is by construction, and bit-for-bit: each stage starts a fresh Adam with a batch order seeded
by (seed, shard, stage) alone, so a constituent after a deletion is the very model `train_constituent`
trains from scratch on its slices without the records (pinned by a test). The price is accuracy (each
constituent sees 1/shards of the data) and the deployment of an ensemble; both are measured in
`bench/sisa.py`, not assumed. A class request hits every shard at slice 0: SISA then costs a full retrain.

Not a registered method (`hyperforget.unlearn.METHODS`): those start from the deployed θ0, while SISA's
answer exists only for a model trained the SISA way. Nor is it in the product yet: serving an ensemble, keeping its
checkpoints between requests and answering record requests with it are what is left (issue #22's note).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hyperforget.base.errors import ConfigError
from hyperforget.config.params import TrainConfig
from hyperforget.models.nets import ModelSpec
from hyperforget.models.train import train_model


@dataclass(frozen=True)
class Layout:
    """How the training set is cut: `shards` constituents, each trained over `slices` incremental stages."""

    shards: int
    slices: int
    seed: int = 0

    def __post_init__(self) -> None:
        if self.shards < 1 or self.slices < 1:
            raise ConfigError(f"SISA needs at least 1 shard and 1 slice, got shards={self.shards}, "
                              f"slices={self.slices}")

    def init_seed(self, shard: int) -> int:
        return 2000 + 100 * self.seed + shard

    def stage_seed(self, shard: int, stage: int) -> int:
        return 50_000 + 10_000 * self.seed + 100 * stage + shard


def stage_recipe(train: TrainConfig, slices: int) -> TrainConfig:
    """Each stage's recipe: the recipe's lr, batch and schedule (restarted per stage) for 2E/(slices+1) epochs
    (at least 1), so a constituent sees each of its examples about as often (E times) as the recipe's one
    model sees it: stage r trains on (r+1)/slices of the shard."""
    epochs = max(1, round(2 * train.epochs / (slices + 1)))
    return train.model_copy(update={"epochs": epochs, "patience": 0})


def cut(n_train: int, layout: Layout) -> list[list[torch.Tensor]]:
    """The training indices, shuffled by the layout's seed, as [shard][slice] → indices (sizes differ by ≤ 1)."""
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(layout.seed))
    shards = order.tensor_split(layout.shards)
    rows = [list(s.tensor_split(layout.slices)) for s in shards]
    if min(len(r) for s in rows for r in s) == 0:
        raise ConfigError(f"{n_train} training examples cannot fill {layout.shards} shards × {layout.slices} "
                          "slices: choose fewer")
    return rows


def train_constituent(spec: ModelSpec, x: torch.Tensor, y: torch.Tensor, slices: list[torch.Tensor],
                      recipe: TrainConfig, layout: Layout, shard: int, start: int = 0,
                      resume: dict[str, torch.Tensor] | None = None) -> tuple[nn.Module, list[dict]]:
    """One shard's constituent, stages `start`..last, with the weights after each (the checkpoints): from its
    initialisation, or from `resume`, the weights stage `start` − 1 ended with. Stage r trains on slices 0..r
    with a fresh Adam and the batch order of (seed, shard, r) alone, which is what makes a resumed run the same
    as one from scratch."""
    model = spec.build(seed=layout.init_seed(shard))
    if resume is not None:
        model.load_state_dict(resume)
    checkpoints = []
    for stage in range(start, layout.slices):
        rows = torch.cat(slices[:stage + 1])
        train_model(model, x[rows], y[rows], recipe, layout.stage_seed(shard, stage), desc=f"sisa stage {stage}")
        checkpoints.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return model.eval(), checkpoints


class Ensemble(nn.Module):
    """The deployed SISA model: log of the constituents' mean softmax, so its outputs read as logits (argmax,
    cross-entropy and every verification check work on it unchanged)."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([F.softmax(m(x), dim=-1) for m in self.members]).mean(0)
        return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


@dataclass
class Sisa:
    """A SISA-trained model: its layout, recipe, the rows each [shard][slice] holds now (deleted records are gone
    from them) and the weights after every stage [shard][stage]."""

    spec: ModelSpec
    layout: Layout
    recipe: TrainConfig
    rows: list[list[torch.Tensor]]
    checkpoints: list[list[dict[str, torch.Tensor]]]

    def model(self) -> Ensemble:
        members = []
        for shard in range(self.layout.shards):
            member = self.spec.build()
            member.load_state_dict(self.checkpoints[shard][-1])
            members.append(member.eval())
        return Ensemble(members).eval()

    def where(self, records: torch.Tensor) -> dict[int, int]:
        """Shard → the earliest slice holding one of `records` (shards that hold none are absent)."""
        wanted = torch.as_tensor(records, dtype=torch.long)
        first: dict[int, int] = {}
        for shard, slices in enumerate(self.rows):
            for r, rows in enumerate(slices):
                if torch.isin(rows, wanted).any():
                    first[shard] = r
                    break
        return first


def train(spec: ModelSpec, x: torch.Tensor, y: torch.Tensor, train_cfg: TrainConfig, layout: Layout) -> Sisa:
    """Cut the training set and train every constituent, keeping each stage's weights."""
    rows, recipe = cut(len(y), layout), stage_recipe(train_cfg, layout.slices)
    checkpoints = [train_constituent(spec, x, y, rows[s], recipe, layout, s)[1] for s in range(layout.shards)]
    return Sisa(spec, layout, recipe, rows, checkpoints)


def forget(sisa: Sisa, x: torch.Tensor, y: torch.Tensor, records: torch.Tensor) -> tuple[Sisa, dict[str, Any]]:
    """The exact answer to deleting `records` (training-split indices): a new Sisa in which every shard that held
    one is retrained from the checkpoint before its earliest slice that did, on its slices without them. Returns
    it and what it cost: shards retrained, stages retrained of all, seconds. The given `sisa` is not changed."""
    records = torch.as_tensor(records, dtype=torch.long).unique()
    if len(records) and (records.min() < 0 or records.max() >= len(y)):
        raise ConfigError(f"records must be training-split indices in [0, {len(y)}); got {records.min().item()}…"
                          f"{records.max().item()}")
    t0 = time.perf_counter()
    first = sisa.where(records)
    rows = [[r[~torch.isin(r, records)] for r in slices] if s in first else slices
            for s, slices in enumerate(sisa.rows)]
    checkpoints = [list(c) for c in sisa.checkpoints]
    for shard, start in first.items():
        resume = sisa.checkpoints[shard][start - 1] if start > 0 else None
        checkpoints[shard][start:] = train_constituent(sisa.spec, x, y, rows[shard], sisa.recipe, sisa.layout, shard,
                                                       start, resume)[1]
    seconds = time.perf_counter() - t0
    stages = sum(sisa.layout.slices - start for start in first.values())
    new = Sisa(sisa.spec, sisa.layout, sisa.recipe, rows, checkpoints)
    return new, {"records": len(records), "shards_retrained": len(first), "restart_slices": first,
                 "stages_retrained": stages, "stages": sisa.layout.shards * sisa.layout.slices, "seconds": seconds}
