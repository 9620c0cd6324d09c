"""Prompts for the hypernetwork, drawn from the zoo's own loss statistics, and prompt alignment (R²).

A prompt asks for forget-class losses at a high percentile of what the zoo reached on those classes
and retained-class losses at a low percentile (papers.md "Prompt"): ambitious but inside the range
the hypernetwork has seen. With the zoo's `forget_mask`, the high percentile is taken over the rows
that forgot that class and the low one over the rows that kept it, so the many rows that never
touched a class do not drag its "forgotten" level down; without it, over all rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hyperforget.errors import ConfigError
from hyperforget.hypernet.data import conditioning


def class_levels(class_loss: torch.Tensor, num_classes: int, hi_pct: float = 95, lo_pct: float = 5,
                 forget_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class (low, high) loss levels [C] each: the lo/hi percentiles of the zoo's values."""
    if class_loss.dim() != 2 or class_loss.shape[1] != num_classes:
        raise ConfigError(f"class_loss must be [N, {num_classes}], got {tuple(class_loss.shape)}")
    if not 0 <= lo_pct <= hi_pct <= 100:
        raise ConfigError(f"prompt percentiles must satisfy 0 <= lo_pct <= hi_pct <= 100, got {lo_pct}, {hi_pct}")
    losses = class_loss.float()
    lo, hi = torch.empty(num_classes), torch.empty(num_classes)
    for c in range(num_classes):
        col = losses[:, c]
        forgot = forget_mask[:, c] > 0 if forget_mask is not None else torch.zeros_like(col, dtype=torch.bool)
        kept_vals = col[~forgot] if (~forgot).any() else col
        forgot_vals = col[forgot] if forgot.any() else col
        lo[c] = torch.quantile(kept_vals, lo_pct / 100)
        hi[c] = torch.quantile(forgot_vals, hi_pct / 100)
    return lo, hi


def _forget_vector(forget_classes: Sequence[int], num_classes: int) -> torch.Tensor:
    classes = [int(c) for c in forget_classes]
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad or len(set(classes)) != len(classes):
        raise ConfigError(f"forget_classes {list(forget_classes)} must be distinct classes in 0..{num_classes - 1}")
    mask = torch.zeros(num_classes)
    mask[classes] = 1.0
    return mask


def make_prompt(class_loss: torch.Tensor, forget_classes: Sequence[int], num_classes: int, variant: str,
                hi_pct: float = 95, lo_pct: float = 5,
                forget_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Unbatched conditioning for one request: forget classes at the high level, the rest at the low."""
    lo, hi = class_levels(class_loss, num_classes, hi_pct, lo_pct, forget_mask)
    mask = _forget_vector(forget_classes, num_classes)
    target = torch.where(mask > 0, hi, lo)
    return {k: v[0] for k, v in conditioning(target[None], mask[None], variant).items()}


def sweep_prompts(class_loss: torch.Tensor, forget_classes: Sequence[int], num_classes: int, variant: str,
                  n: int = 20, hi_pct: float = 95, lo_pct: float = 5, forget_mask: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """n evenly spaced forget-loss prompts for prompt alignment (G.pt prompts 20).

    Each forget class moves from its low to its high level in n even steps; retained classes stay at
    their low level. Returns the prompted forget loss (mean over forget classes) [n] and the conditions.
    """
    if not forget_classes:
        raise ConfigError("sweep_prompts needs at least one forget class")
    if n < 2:
        raise ConfigError(f"sweep_prompts needs n >= 2 prompts, got {n}")
    lo, hi = class_levels(class_loss, num_classes, hi_pct, lo_pct, forget_mask)
    mask = _forget_vector(forget_classes, num_classes)
    frac = torch.linspace(0, 1, n)[:, None]
    targets = torch.where(mask > 0, lo + frac * (hi - lo), lo)  # [n, C]
    conds = conditioning(targets, mask.expand(n, -1), variant)
    prompted = (targets * mask).sum(1) / mask.sum()
    return prompted, [{k: v[i] for k, v in conds.items()} for i in range(n)]


def r2(prompted: torch.Tensor | Sequence[float], achieved: torch.Tensor | Sequence[float]) -> float:
    """Coefficient of determination of the achieved losses against the prompted ones (prompted = truth,
    as sklearn's r2_score(prompted, achieved)): 1 is perfect alignment; NaN if all prompts are equal."""
    p = torch.as_tensor(prompted, dtype=torch.float64).flatten()
    a = torch.as_tensor(achieved, dtype=torch.float64).flatten()
    if p.shape != a.shape:
        raise ValueError(f"prompted and achieved differ in size: {p.numel()} vs {a.numel()}")
    total = ((p - p.mean()) ** 2).sum()
    if total == 0:
        return float("nan")
    return float(1 - ((p - a) ** 2).sum() / total)
