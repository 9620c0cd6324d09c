"""Training objectives that unlearning methods and the weight zoo share: ∇τ's bounded ascent and its τ.

Why one module: ∇τ (`unlearn.gradtau`) and the zoo's trajectories (`zoo.run_trajectories`, one
vmapped batch of such runs) optimise the same loss towards the same level; written twice, the two
drifted. Both functions work elementwise, so they serve one model or a batch of trajectories alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def unseen_loss(model: nn.Module, xv: torch.Tensor, yv: torch.Tensor, classes: tuple[int, ...] | None) -> float:
    """τ: mean loss on unseen data D_v; for forgotten `classes`, the loss of their labels on D_v samples of
    the other classes (what a model that never learnt those classes would see)."""
    if classes is None:
        return F.cross_entropy(model(xv), yv).item()
    logp = F.log_softmax(model(xv[~torch.isin(yv, torch.tensor(list(classes)))]), 1)
    return -logp[:, list(classes)].mean().item()


def bounded_ascent(forget_loss: torch.Tensor, retain_loss: torch.Tensor, tau: float,
                   alpha: float | torch.Tensor) -> torch.Tensor:
    """α · ReLU(τ − ℓ_f)² + (1 − α) · ℓ_r: the ascent on D_f fades as its loss reaches τ and stops there."""
    return alpha * F.relu(tau - forget_loss) ** 2 + (1 - alpha) * retain_loss
