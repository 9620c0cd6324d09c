"""Small pieces the gradient-based methods share: a working copy, seeded batch streams, schedules."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import nn

from hyperforget.train import batch_order


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
