"""Prompts for the hypernetwork, drawn from the zoo's own loss statistics, and prompt alignment (R²).
The one place prompts are built: DiHyFo's sampling and the honesty checks both call these.

A prompt asks for forget-class losses at a high percentile of what the zoo reached on those classes
and retained-class losses at a low percentile (papers.md "Prompt"): ambitious but inside the range
the hypernetwork has seen. With the zoo's `forget_mask`, the high percentile is taken over the rows
that forgot that class and the low one over the rows that kept it, so the many rows that never
touched a class do not drag its "forgotten" level down; without it, over all rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hyperforget.base.errors import ConfigError
from hyperforget.hypernet.conditioning import conditioning


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


def request_rows(forget_mask: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Zoo rows [N] bool that forgot any of the request's classes: what the zoo reached while forgetting them."""
    n = forget_mask.shape[1]
    if not classes or any(not 0 <= c < n for c in classes) or len(set(classes)) != len(classes):
        raise ConfigError(f"forget classes {list(classes)} must be distinct classes in 0..{n - 1}")
    rows = forget_mask[:, list(classes)].amax(1) > 0
    if not rows.any():
        raise ConfigError(f"the zoo holds no rows that forget any of classes {list(classes)}; rebuild it with them")
    return rows


def request_levels(class_loss: torch.Tensor, forget_mask: torch.Tensor, classes: Sequence[int], hi_pct: float = 95,
                   lo_pct: float = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class (low, high) levels [C] over the request's rows only (`request_rows`)."""
    rows = request_rows(forget_mask, classes)
    return class_levels(class_loss[rows], class_loss.shape[1], hi_pct, lo_pct, forget_mask[rows])


def sweep_targets(class_loss: torch.Tensor, forget_mask: torch.Tensor, classes: Sequence[int], n: int = 20,
                  hi_pct: float = 95, lo_pct: float = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """n evenly spaced prompts for prompt alignment (G.pt prompts 20): each forget class moves from its low
    to its high level, retained classes stay low. Returns the targets [n, C] and the forget mask [C]."""
    if n < 2:
        raise ConfigError(f"a prompt sweep needs n >= 2 prompts, got {n}")
    lo, hi = request_levels(class_loss, forget_mask, classes, hi_pct, lo_pct)
    mask = torch.zeros(class_loss.shape[1], dtype=torch.bool)
    mask[list(classes)] = True
    return torch.where(mask, lo + torch.linspace(0, 1, n)[:, None] * (hi - lo), lo), mask


def request_prompt(class_loss: torch.Tensor, forget_mask: torch.Tensor, classes: Sequence[int], variant: str,
                   hi_pct: float = 95, lo_pct: float = 5) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The unbatched conditioning of one class request and its per-class target losses [C].

    Percentiles are taken over the request's rows only (`request_rows`): forget classes at `hi_pct` of
    the rows that forgot them, retained classes at `lo_pct` of the rows that kept them while forgetting
    these. Over the whole zoo the retained levels come from other requests' rows, a combination no zoo
    model reaches (on digits it halved the number of classes meeting the definition of done).
    """
    cond, targets = request_prompts(class_loss, forget_mask, classes, variant, [(hi_pct, lo_pct)])
    return {k: v[0] for k, v in cond.items()}, targets[0]


def request_prompts(class_loss: torch.Tensor, forget_mask: torch.Tensor, classes: Sequence[int], variant: str,
                    ladder: Sequence[tuple[float, float]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """`request_prompt` for every (hi_pct, lo_pct) of `ladder` at once: batched conditioning [L, ...] and
    targets [L, C], ready for one batched `diffusion.sample` call.

    Composed per class, as `request_prompt`: forget class c at hi_pct of the rows that forgot c, retained
    class r at lo_pct of the rows that kept r while forgetting a class of the request. Nothing here needs
    rows of the exact set, so a set the zoo never held (a held-out set) gets its prompt from its classes.
    """
    rows = request_rows(forget_mask, classes)
    losses, forgot = class_loss[rows].float(), forget_mask[rows] > 0
    hi_q = torch.tensor([hi for hi, _ in ladder], dtype=torch.float32) / 100
    lo_q = torch.tensor([lo for _, lo in ladder], dtype=torch.float32) / 100
    if not (lo_q >= 0).all() or not (lo_q <= hi_q).all() or not (hi_q <= 1).all():
        raise ConfigError(f"prompt percentiles must satisfy 0 <= lo_pct <= hi_pct <= 100, got {list(ladder)}")
    nan = torch.tensor(float("nan"))
    # a class no row forgot (or kept) takes its percentile over all the request's rows, as class_levels
    forgot_vals = torch.where(forgot | ~forgot.any(0), losses, nan)
    kept_vals = torch.where(~forgot | forgot.all(0), losses, nan)
    hi, lo = torch.nanquantile(forgot_vals, hi_q, dim=0), torch.nanquantile(kept_vals, lo_q, dim=0)  # [L, C]
    mask = torch.zeros(class_loss.shape[1])
    mask[list(classes)] = 1.0
    targets = torch.where(mask > 0, hi, lo)
    return conditioning(targets, mask.expand(len(ladder), -1), variant), targets


def prompt_ladder(hi_pct: float, lo_pct: float, levels: int) -> list[tuple[float, float]]:
    """(hi, lo) percentile pairs from the zoo median (a typical endpoint) to (hi_pct, lo_pct) (the most
    ambitious): the hypernetwork's samples for one prompt are near-identical, so the K candidates only
    differ, and selection only has a choice, if their prompts differ."""
    if levels == 1:
        return [(hi_pct, lo_pct)]
    return [(50 + (hi_pct - 50) * u, 50 - (50 - lo_pct) * u) for u in torch.linspace(0, 1, levels).tolist()]


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
