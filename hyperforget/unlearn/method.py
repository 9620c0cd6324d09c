"""What an unlearning method is, and the small pieces the gradient-based methods share.

A method takes the original model, the data with its forget/retain split and its own typed options,
and returns the unlearned model plus a record of what it did. `wall_time_s` covers the unlearning
alone: methods time themselves with `Timer` around their work and never evaluate inside it. The
shared pieces (a working copy, seeded batch streams, a linear lr schedule) live here so that every
method draws batches and decays its lr the same way.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from hyperforget.base.artifacts import Artifacts
from hyperforget.config.params import GatesConfig
from hyperforget.data.datasets import Dataset, ForgetSplit
from hyperforget.models.nets import ModelSpec
from hyperforget.models.train import batch_order


@dataclass(frozen=True)
class UnlearnInputs:
    """What a method may use. `original` must not be modified: methods work on a copy. `artifacts` locates
    what a method reads beyond the data (DiHyFo: the zoo and its hypernetwork); `gates` are the release
    thresholds a method that selects among candidates (DiHyFo) selects by."""

    original: nn.Module
    spec: ModelSpec
    data: Dataset
    split: ForgetSplit
    seed: int = 0
    artifacts: Artifacts | None = None
    gates: GatesConfig = field(default_factory=GatesConfig)

    @property
    def x_forget(self):
        return self.data.x_train[self.split.forget_idx]

    @property
    def y_forget(self):
        return self.data.y_train[self.split.forget_idx]

    @property
    def x_retain(self):
        return self.data.x_train[self.split.retain_idx]

    @property
    def y_retain(self):
        return self.data.y_train[self.split.retain_idx]


@dataclass
class UnlearnResult:
    """The unlearned model (for multi-seed methods, `models` holds all of them, `model` the first)."""

    model: nn.Module
    method: str
    wall_time_s: float
    steps: int
    options: dict[str, Any]
    models: list[nn.Module] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {"method": self.method, "wall_time_s": self.wall_time_s, "steps": self.steps,
                "options": self.options, "n_models": max(1, len(self.models)), **self.info}


class Timer:
    """Wall time of the block, in seconds, as `.seconds`."""

    def __enter__(self) -> Timer:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0


MethodFn = Callable[[UnlearnInputs, BaseModel], UnlearnResult]


@dataclass(frozen=True)
class Method:
    run: MethodFn
    options: type[BaseModel]
    description: str


def working_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode: methods never touch the original, and unlearn with any normalisation
    statistics frozen (∇τ's authors unlearn in eval mode; our models have no batch-norm or dropout)."""
    return copy.deepcopy(model).eval()


def batch_stream(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless index batches over n samples, reshuffled at every pass."""
    while True:
        yield from batch_order(n, batch_size, generator)


def num_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def linear_lr(optimizer: torch.optim.Optimizer, total: int, end_factor: float) -> torch.optim.lr_scheduler.LinearLR:
    """lr decays linearly from its start value to start × end_factor over `total` scheduler steps."""
    return torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, end_factor, total_iters=max(1, total))
