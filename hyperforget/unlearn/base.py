"""The one interface every unlearning method implements.

A method takes the original model, the data with its forget/retain split and its own typed options,
and returns the unlearned model plus a record of what it did. `wall_time_s` covers the unlearning
alone: methods time themselves with `Timer` around their work and never evaluate inside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from torch import nn

from hyperforget.data import Dataset, ForgetSplit
from hyperforget.models import ModelSpec


@dataclass(frozen=True)
class UnlearnInputs:
    """What a method may use. `original` must not be modified: methods work on a copy."""

    original: nn.Module
    spec: ModelSpec
    data: Dataset
    split: ForgetSplit
    seed: int = 0

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
