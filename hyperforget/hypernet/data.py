"""The zoo as the hypernetwork sees it: flat weights, starting weights, per-class losses, forget masks.

`conditioning` turns per-class losses and a forget mask into the conditioning tensors of each DiHyFo
variant; training rows and prompts both go through it, so a prompt means what the zoo meant.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import torch

from hyperforget.errors import ConfigError, DataError
from hyperforget.models import Layout, num_params

VARIANTS = ("dihyfo1", "dihyfo2")


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

    def __post_init__(self) -> None:
        n, p, c = self.weights.shape[0], num_params(self.layout), self.num_classes
        expected = {"weights": (n, p), "class_loss": (n, c), "forget_mask": (n, c)}
        for name, shape in expected.items():
            t = getattr(self, name)
            if tuple(t.shape) != shape:
                raise DataError(f"zoo {name} has shape {tuple(t.shape)}, expected {shape} (N rows, P={p}, C={c})")
        if self.start.dim() != 2 or self.start.shape[1] != p or self.start.shape[0] not in (1, n):
            raise DataError(f"zoo start has shape {tuple(self.start.shape)}, expected ({n}, {p}) or (1, {p})")
        for name in ("weights", "start", "class_loss"):
            if not torch.isfinite(getattr(self, name)).all():
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


def conditioning(class_loss: torch.Tensor, forget_mask: torch.Tensor, variant: str) -> dict[str, torch.Tensor]:
    """Conditioning tensors for rows [..., C].

    dihyfo1: `forget_loss`/`retain_loss` = mean loss over the forgotten/retained classes, plus the mask.
    With nothing forgotten (or everything), the empty side takes the mean over all classes: there is
    then no separate forget signal, and the mask token tells the two cases apart.
    dihyfo2: `class_loss` as is (one token per class).
    """
    if variant not in VARIANTS:
        raise ConfigError(f"hypernet.variant: unknown {variant!r}; choose one of {', '.join(VARIANTS)}")
    class_loss, mask = class_loss.float(), forget_mask.float()
    if variant == "dihyfo2":
        return {"class_loss": class_loss}
    keep = 1 - mask
    overall = class_loss.mean(-1)
    n_f, n_r = mask.sum(-1), keep.sum(-1)
    forget = torch.where(n_f > 0, (class_loss * mask).sum(-1) / n_f.clamp_min(1), overall)
    retain = torch.where(n_r > 0, (class_loss * keep).sum(-1) / n_r.clamp_min(1), overall)
    return {"forget_loss": forget, "retain_loss": retain, "forget_mask": mask}
