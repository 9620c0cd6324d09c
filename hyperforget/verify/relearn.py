"""Relearn time (arXiv 2506.01318: even a retrain relearns): how many fine-tuning steps on m forgotten
examples bring the forgotten classes back. A speed to compare with the reference, never an absolute."""

from __future__ import annotations

import copy

import torch
from torch import nn

from hyperforget.base.errors import DataError
from hyperforget.models.nets import INFERENCE_BATCH

_EPS = 1e-9  # float noise never decides a check


def relearn_steps(model: nn.Module, x_f: torch.Tensor, y_f: torch.Tensor, x_eval: torch.Tensor,
                  y_eval: torch.Tensor, m: int, lr: float, max_steps: int, seed: int, target: float = 0.5) -> int:
    """Adam steps (fixed lr, one full batch of m examples drawn from (x_f, y_f)) on a copy of `model` until
    its accuracy on (x_eval, y_eval) reaches `target`: 0 if it already does, `max_steps + 1` if never."""
    if m > len(y_f):
        raise DataError(f"relearning needs m = {m} forget examples but D_f has {len(y_f)}; lower relearn_m")
    if len(y_eval) == 0:
        raise DataError("relearning needs test examples of the forgotten classes to measure accuracy on")
    pick = torch.randperm(len(y_f), generator=torch.Generator().manual_seed(seed))[:m]
    xb, yb = x_f[pick], y_f[pick]
    work = copy.deepcopy(model)
    opt = torch.optim.Adam(work.parameters(), lr=lr)
    for step in range(max_steps + 1):
        if reaches(work, x_eval, y_eval, target):
            return step
        if step == max_steps:
            break
        work.train()
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(work(xb), yb).backward()
        opt.step()
    return max_steps + 1


@torch.no_grad()
def reaches(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: float) -> bool:
    """Whether `model`'s accuracy on (x, y) is at least `target`, read batch by batch (`predict`'s batches, so the
    same predictions) and decided as soon as the batches read settle it: the check runs after every relearning
    step, and while the class is still far from back (most steps) half the images settle it."""
    model.eval()
    need = (target - _EPS) * len(y)
    hits, left = 0, len(y)
    for xb, yb in zip(x.split(INFERENCE_BATCH), y.split(INFERENCE_BATCH), strict=True):
        hits += int((model(xb).argmax(1) == yb).sum())
        left -= len(yb)
        if hits >= need or hits + left < need:
            break
    return hits >= need
