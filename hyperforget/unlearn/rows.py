"""Retrain-shaped head rows: a repair after DiHyFo's sampling (counted in its time) that gives each forgotten
class the head row of a model that never saw it.

Why: DiHyFo's samples lie near θ0 (the zoo's trajectories start there), so the head row of a forgotten class
keeps θ0's row: its direction still reads the class from the features, only pushed down. A retrain's row for
a class it never saw was trained with no positive example: it learnt only to stay below the others, in no
direction of the class. Relearning tells the two apart: a few steps on a handful of forgotten examples lift
θ0's row back (measured on digits, DiHyFo-2 relearned the class in 12–21 Adam steps against the pool's
retrains' 40–97, and failed the relearn gate on 9 of 10 classes), while a never-trained row has to learn
the class's direction first. So each forgotten class's row (weights and bias) is re-initialised from a
seeded fresh model and trained on the retained training data's penultimate features with every other
parameter fixed: `steps` Adam steps of `batch_size` examples, as in EU-k but for one row of one layer and from the
features of the model being repaired. Its cost is the model's forward over the examples those steps draw, each
once: at most min(|D_r|, steps × batch_size) examples, whatever the data's size (under partial generation, only
the generated layers run, on the zoo's cached frozen-part features). The forget set is never shown. Level
matching (`unlearn/level.py`) runs after it and puts the row's level where the zoo's retrains leave it.

What it does not change: the features themselves. Where they still hold the class, a linear probe reads it
(digits class 9) and relearning stays faster than a retrain's (classes 0 and 8): `docs/results/
class-verdicts-digits.md`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hyperforget.models.nets import INFERENCE_BATCH

FRESH_SEED_OFFSET = 7100  # the fresh rows' seed: disjoint from θ0's, EU-k's (7000), the retrains' and the zoo's


def refit_rows(model: nn.Module, fresh: Callable[[], nn.Module], x_retain: torch.Tensor, y_retain: torch.Tensor,
               classes: Sequence[int], steps: int, lr: float, batch_size: int, seed: int,
               whole_head: bool = False, cut: str = "all") -> dict[str, object]:
    """Re-initialise the head rows of `classes` in `model` from `fresh()` (builds a seeded fresh model of the same
    spec; not called with `steps` 0) and train them on D_r's penultimate features, in place; returns what was done.
    With `whole_head` the retained classes' rows train too, from the values they have: the same steps (the cost
    is the drawn examples' features), so a head fed features that a generated fc1–fc3 (`generate: dense`) computes
    imprecisely is fitted to them; the forgotten rows still start fresh and see no forgotten example. With a `cut`,
    `x_retain` is what θ0's frozen part computes on D_r for it (the zoo's cached features, `Classifier.features`):
    only the generated layers run, once per drawn example."""
    if steps == 0:
        return {"applied": False}
    head = getattr(model, model.head)
    rows = torch.tensor(sorted(classes))
    trained = torch.arange(head.out_features) if whole_head else rows  # the rows the steps train
    new_model = fresh()
    new = getattr(new_model, new_model.head)
    start_fresh = torch.isin(trained, rows)  # forgotten rows start fresh, retained ones from their values
    w = torch.where(start_fresh[:, None], new.weight.detach()[trained], head.weight.detach()[trained])
    b = torch.where(start_fresh, new.bias.detach()[trained], head.bias.detach()[trained])
    w.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.Adam([w, b], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    batches = [torch.randint(len(y_retain), (batch_size,), generator=gen) for _ in range(steps)]
    model.eval()
    with torch.no_grad():
        norm_before = head.weight[rows].norm(dim=1)
        feats, positions = _features_of(model, x_retain, torch.stack(batches), cut)
    for idx, at in zip(batches, positions, strict=True):
        h = feats[at]
        with torch.no_grad():
            logits = F.linear(h, head.weight, head.bias)
        logits[:, trained] = h @ w.T + b
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(logits, y_retain[idx]).backward()
        opt.step()
    with torch.no_grad():
        head.weight[trained] = w
        head.bias[trained] = b
    after = head.weight.detach()[rows].norm(dim=1)
    return {"applied": True, "rows": rows.tolist(), "steps": steps, "whole_head": whole_head,
            "row_norm_before": norm_before.tolist(), "row_norm_after": after.tolist()}


def _features_of(model: nn.Module, x: torch.Tensor, drawn: torch.Tensor, cut: str,
                 chunk: int = INFERENCE_BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """The penultimate features of every example the steps draw ([steps, batch] indices), each computed once (in
    chunks), and where each drawn index's row is in them ([steps, batch]): the frozen model's forward is the refit's
    whole cost, and the steps' batches draw most examples several times (300 batches of 128 from LeNet's 7.2k
    retained examples: 5 times each)."""
    unique, positions = torch.unique(drawn, return_inverse=True)
    return torch.cat([model.features(x[part], cut) for part in unique.split(chunk)]), positions
