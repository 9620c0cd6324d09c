"""Conditioning: what the hypernetwork is prompted with.

`conditioning` turns per-class losses and a forget mask into the conditioning tensors of each DiHyFo
variant; training rows and prompts both go through it, so a prompt means what the zoo meant.
"""

from __future__ import annotations

import torch

from hyperforget.base.errors import ConfigError
from hyperforget.config.options import VARIANTS


def conditioning(class_loss: torch.Tensor, forget_mask: torch.Tensor, variant: str) -> dict[str, torch.Tensor]:
    """Conditioning tensors for rows [..., C].

    dihyfo1: `forget_loss`/`retain_loss` = mean loss over the forgotten/retained classes, plus the mask.
    With nothing forgotten (or everything), the empty side takes the mean over all classes: there is
    then no separate forget signal, and the mask token tells the two cases apart.
    dihyfo2: `class_loss` as is plus the mask (one token per class: its loss and whether it is forgotten),
    so a set the zoo never held is a new combination of per-class tokens the model has seen.
    """
    if variant not in VARIANTS:
        raise ConfigError(f"hypernet.variant: unknown {variant!r}; choose one of {', '.join(VARIANTS)}")
    class_loss, mask = class_loss.float(), forget_mask.float()
    if variant == "dihyfo2":
        return {"class_loss": class_loss, "forget_mask": mask}
    keep = 1 - mask
    overall = class_loss.mean(-1)
    n_f, n_r = mask.sum(-1), keep.sum(-1)
    forget = torch.where(n_f > 0, (class_loss * mask).sum(-1) / n_f.clamp_min(1), overall)
    retain = torch.where(n_r > 0, (class_loss * keep).sum(-1) / n_r.clamp_min(1), overall)
    return {"forget_loss": forget, "retain_loss": retain, "forget_mask": mask}
