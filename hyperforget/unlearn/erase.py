"""Set erasure: a repair after DiHyFo's sampling (counted in its time) for class *sets*, so that the penultimate
features stop telling the forgotten classes apart, as a retrain's do.

Why: on LeNet-5, DiHyFo's answers to held-out class sets fail one check far more often than any other, the
cross-fitted linear probe (docs/results/heldout.md): a probe reads the set's classes from the features the sampled
fc1–fc2 compute more confidently than from a retrain's. A retrain's fc1–fc2 never learnt to separate the set's
classes from each other (nothing in its training data asks for it), while a sample that starts from θ0's weights
keeps θ0's separation. A single class has no such within-set separation; the repair is the identity there.

What it does: LEACE (Belrose et al. 2023, "LEACE: Perfect linear concept erasure in closed form") on the
pre-activation of the last generated hidden Linear layer (LeNet's fc2), with the concept "which of the forgotten
classes", fitted on D_f's own training examples (what the request names; no retrain is read). With Σ the
covariance of the pre-activations z on D_f, W = Σ^(-1/2), Σ_zc the cross-covariance with the class one-hot and P
the orthogonal projection onto the columns of W Σ_zc, the eraser z ↦ z − W⁺PW(z − μ) leaves no linear predictor
of the concept better than a constant on D_f. `strength` s scales that step (z ↦ z − s·W⁺PW(z − μ)); it is folded
into the layer's weight and bias, so the model keeps its architecture. At most k − 1 of the layer's directions
(k classes in the set) are touched, fitted on the forgotten classes only; the head is refit afterwards
(`unlearn/rows.py`), as a retrain's head learns on the features it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from hyperforget.models.nets import generated_hidden_stages

_RANK_TOL = 1e-6  # eigenvalues (relative to the largest) below this are dead units: no direction to whiten


class Eraser(NamedTuple):
    """eraser(z) = z − (z − μ) Mᵀ, with `rank` the number of directions M touches."""

    matrix: torch.Tensor  # M [d, d]
    mean: torch.Tensor  # μ [d]
    rank: int


def leace(z: torch.Tensor, labels: torch.Tensor) -> Eraser:
    """The LEACE eraser of the concept `labels` (class ids) from `z` [n, d]. float64 throughout: the whitening
    inverts small eigenvalues."""
    z = z.double()
    mu = z.mean(0)
    zc = z - mu
    onehot = torch.nn.functional.one_hot(labels.unique(return_inverse=True)[1]).double()
    cov = zc.T @ zc / len(z)
    cross = zc.T @ (onehot - onehot.mean(0)) / len(z)  # [d, k]
    vals, vecs = torch.linalg.eigh(cov)
    live = vals > _RANK_TOL * vals.max().clamp_min(1e-300)
    root = vals.clamp_min(0).sqrt()
    w = vecs[:, live] @ torch.diag(1 / root[live]) @ vecs[:, live].T
    w_pinv = vecs[:, live] @ torch.diag(root[live]) @ vecs[:, live].T
    u, sing, _ = torch.linalg.svd(w @ cross, full_matrices=False)
    basis = u[:, sing > _RANK_TOL * sing.max().clamp_min(1e-300)]
    return Eraser(w_pinv @ basis @ basis.T @ w, mu, basis.shape[1])


@torch.no_grad()
def erase_set(model: nn.Module, x_forget: torch.Tensor, y_forget: torch.Tensor, classes: Sequence[int],
              strength: float, cut: str = "all") -> dict[str, object]:
    """Fold the eraser of "which forgotten class" into `model`'s last generated hidden Linear layer, in place.
    `x_forget` is D_f as the generated layers take it (images with the cut "all", else the frozen part's
    features). A single class, a strength of 0 or a model whose last generated hidden layer is not a Linear with a
    bias is left as is."""
    stages = generated_hidden_stages(model, cut)
    layer = getattr(model, stages[-1][0]) if stages else None
    if strength == 0 or len(set(classes)) < 2 or not isinstance(layer, nn.Linear) or layer.bias is None:
        return {"applied": False}
    model.eval()
    seen: list[torch.Tensor] = []  # the layer's own output, whatever its stage does before it (e.g. a flatten)
    hook = layer.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        h = x_forget
        for _, fn in stages:
            h = fn(h)
    finally:
        hook.remove()
    m, mu, rank = leace(seen[0], y_forget)
    step = strength * m  # z ↦ z − step (z − μ) = (I − step) z + step μ
    keep = torch.eye(len(m), dtype=m.dtype) - step
    layer.weight.copy_((keep @ layer.weight.double()).to(layer.weight.dtype))
    layer.bias.copy_((keep @ layer.bias.double() + step @ mu).to(layer.bias.dtype))
    return {"applied": True, "layer": stages[-1][0], "strength": strength,
            "directions": rank, "rows": len(x_forget)}
