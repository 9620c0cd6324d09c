"""Level matching: put the forgotten classes' outputs where a retrain leaves them, not further (a repair after
DiHyFo's sampling, counted in its time).

Why: on class requests the outputs an auditor reads on D_f are dominated by one number per model, how far
the forgotten class's logit sits below the others (φ = log(p_y / (1 − p_y)), `verify.lira`). A retrain
that never saw the class leaves it at a level of its own; DiHyFo's samples land far below it on the LeNet
(over-forgetting: LiRA AUC 0, relearning three times slower than a retrain) or above it on digits
(relearning faster than a retrain). Both are signatures. The zoo records, per request, the validation loss
of its retrained endpoints (`kind` retrain, or head_retrain under partial generation), and, where it has them,
of true retrains kept for this alone (`zoo.level_retrains`, `zoo/levels.py`: under partial generation the
head_retrain endpoints sit shallower than a retrain): the level a model that never learnt the class shows on
held-out examples of it. So after sampling, the head's bias of each
forgotten class c is shifted by δ_c until the model's mean validation cross-entropy on class c equals the
median of those endpoints' (the zoo's retrains, never the reference pool's retrains that judge the answer,
and the validation split, never the test split). Only the bias moves, so the logits shift by δ_c in column c
and the search runs on logits computed once (bisection; a few milliseconds). A shift that would make a
forgotten class recognisable again (val accuracy on it above `max_forget_acc`) or cost retained validation
accuracy (more than `RETAIN_SLACK`) is pulled back toward 0 until it does not.

Bias or row (`row_share`, the DiHyFo option `level_row_share`): the level can also be carried by the forgotten
row itself, its weights scaled by s_c (logit column c becomes b_c + s_c·(z_c − b_c)), the bias kept. Why: on
MNIST-60k LeNet-5 the refit row of the classes DiHyFo-1 relearnt twice as fast as a retrain (0, 6, 7) pushed the
class down through its features far beyond a retrain (w_c·h −21 to −29 on the class's test images against the
held-out retrain's −12 to −13), and the bias shift made up the difference (+13 to +19; the retrain's bias stays
at its initial value, ≈ 0: a class never seen gets almost no gradient on it). Relearning bends the features, and
the row's pull through them is what comes back. With `row_share` λ ∈ [0, 1] the row is scaled by s*^λ, s* the
scale that alone would meet the target, and the bias shift does the rest: λ = 0 is the bias alone (the default),
λ = 1 the row alone. Measured in `bench/level_and_scale.py`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hyperforget.models.nets import predict

RETAIN_SLACK = 0.002  # retained val accuracy the shift may cost at most
_SPAN = 200.0  # δ is searched in [−_SPAN, _SPAN] logits
_ROW_SPAN = 1e3  # a row's scale is searched in [1/_ROW_SPAN, _ROW_SPAN]


def zoo_levels(rows: Sequence[dict], classes: Sequence[int],
               retrains: dict[int, list[float]] | None = None) -> dict[int, float]:
    """Per forgotten class, the median val loss on it of the zoo's level retrains of that class (`zoo.levels`:
    true retrains) where it has them, else of the zoo's retrained endpoints of the single-class request for it (a
    set's classes each read their own request's, as DiHyFo's prompts compose per class)."""
    out = {}
    for c in classes:
        losses = torch.tensor((retrains or {}).get(c) or [
            r["val_loss"][c] for r in rows if r.get("kind") in ("retrain", "head_retrain")
            and list(r.get("request", [])) == [c]])
        if len(losses):
            out[c] = float(losses.double().quantile(0.5))  # the middle two's mean for an even count
    return out


def _class_loss(logits: torch.Tensor, y: torch.Tensor, c: int) -> float:
    m = y == c
    return float(F.cross_entropy(logits[m].double(), y[m])) if m.any() else float("nan")


def _shifted(logits: torch.Tensor, delta: dict[int, float]) -> torch.Tensor:
    out = logits.double().clone()
    for c, d in delta.items():
        out[:, c] += d
    return out


def _acc(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> float:
    return float((logits[mask].argmax(1) == y[mask]).double().mean()) if mask.any() else float("nan")


def _rescaled(logits: torch.Tensor, bias: dict[int, float], scale: dict[int, float]) -> torch.Tensor:
    """The logits with row c's weights scaled by scale[c], its bias b_c kept: column c becomes b_c + s·(z_c − b_c)."""
    out = logits.double().clone()
    for c, s in scale.items():
        out[:, c] = bias[c] + s * (out[:, c] - bias[c])
    return out


def _bisect(loss_at, lo: float, hi: float, target: float, rising: bool) -> float:
    """Where `loss_at(x)` crosses `target` in [lo, hi] (60 halvings), the loss rising or falling with x."""
    for _ in range(60):
        mid = (lo + hi) / 2
        if (loss_at(mid) > target) == rising:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


def _within(z: torch.Tensor, y: torch.Tensor, forgotten: torch.Tensor, max_forget_acc: float,
            retained_before: float) -> bool:
    return _acc(z, y, forgotten) <= max_forget_acc and _acc(z, y, ~forgotten) >= retained_before - RETAIN_SLACK


def row_scales(logits: torch.Tensor, y: torch.Tensor, bias: dict[int, float], targets: dict[int, float],
               share: float, max_forget_acc: float) -> dict[int, float]:
    """Per forgotten class c, s*^share: s* the scale of c's head row (bias b_c kept) at which the val loss on c meets
    its target alone (Gauss–Seidel sweeps of bisection in log s), then pulled toward 1 where it breaks the forget or
    retained accuracy bounds. A row that does not push its class down on its own examples (mean z_c − b_c ≥ 0 there)
    keeps scale 1: scaling it cannot lower the class, the bias does it all."""
    scale = dict.fromkeys(targets, 1.0)
    if share == 0:
        return scale
    pushes_down = {c: bool((logits[y == c, c].double() - bias[c]).mean() < 0) for c in targets}
    for _ in range(3):
        for c, target in targets.items():
            if not pushes_down[c]:
                continue
            span = math.log(_ROW_SPAN)  # in log s; the class's loss rises with the row's scale
            scale[c] = math.exp(_bisect(lambda t, c=c: _class_loss(_rescaled(logits, bias, scale | {c: math.exp(t)}),
                                                                   y, c), -span, span, target, rising=True))
    scale = {c: s ** share for c, s in scale.items()}
    forgotten = torch.isin(y, torch.tensor(list(targets)))
    retained_before = _acc(logits.double(), y, ~forgotten)
    for _ in range(40):
        if _within(_rescaled(logits, bias, scale), y, forgotten, max_forget_acc, retained_before):
            break
        scale = {c: math.sqrt(s) for c, s in scale.items()}
    return scale


def solve(logits: torch.Tensor, y: torch.Tensor, targets: dict[int, float], max_forget_acc: float,
          retained_before: float | None = None) -> dict[int, float]:
    """δ per class such that the shifted logits' val loss on each class meets its target (a few Gauss–Seidel
    sweeps of bisection), then pulled toward 0 where it breaks the forget or retained accuracy bounds (retained
    accuracy against `retained_before`, default the given logits')."""
    forgotten = torch.isin(y, torch.tensor(list(targets)))
    if retained_before is None:
        retained_before = _acc(logits.double(), y, ~forgotten)
    delta = dict.fromkeys(targets, 0.0)
    for _ in range(3):
        for c, target in targets.items():
            delta[c] = _bisect(lambda d, c=c: _class_loss(_shifted(logits, delta | {c: d}), y, c), -_SPAN, _SPAN,
                               target, rising=False)  # the class's loss falls as δ_c rises
    for _ in range(40):  # bounds: halve the shift until it keeps the class forgotten and the rest intact
        if _within(_shifted(logits, delta), y, forgotten, max_forget_acc, retained_before):
            break
        delta = {c: d / 2 for c, d in delta.items()}
    return delta


def last_linear(model: nn.Module) -> nn.Linear:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


@torch.no_grad()
def match_level(model: nn.Module, x_val: torch.Tensor, y_val: torch.Tensor, targets: dict[int, float],
                max_forget_acc: float, cut: str = "all", row_share: float = 0.0) -> dict[str, object]:
    """Scale the forgotten rows (`row_share`) and shift their head bias in place (see the module docstring);
    returns what was done. With a `cut`, x_val is the frozen part's features cached with the zoo
    (`models.features`): the validation logits are those of the whole model, at the cost of the generated layers
    only (on MNIST-60k DiHyFo-1 took 1.35 s with two whole-model passes over the 6,000 validation images, 0.74 s
    without: docs/results/mnist-lenet.md)."""
    if not targets:
        return {"applied": False, "reason": "the zoo holds no retrained endpoints for these classes"}
    logits = predict(model, x_val, cut=cut)
    before = {c: _class_loss(logits, y_val, c) for c in targets}
    head = last_linear(model)
    bias = {c: float(head.bias[c]) for c in targets}
    scale = row_scales(logits, y_val, bias, targets, row_share, max_forget_acc)
    forgotten = torch.isin(y_val, torch.tensor(list(targets)))
    scaled = _rescaled(logits, bias, scale)  # a row's scale moves column c alone, about its bias
    delta = solve(scaled, y_val, targets, max_forget_acc, retained_before=_acc(logits.double(), y_val, ~forgotten))
    for c in targets:
        head.weight[c] *= scale[c]
        head.bias[c] += delta[c]
    shifted = _shifted(scaled, delta)  # a bias shift moves column c of the logits by δ_c, nothing else
    after = {c: _class_loss(shifted, y_val, c) for c in targets}
    return {"applied": True, "delta": delta, "row_share": row_share, "row_scale": scale, "target_val_loss": targets,
            "val_loss_before": before, "val_loss_after": after}
