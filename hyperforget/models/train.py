"""Seeded training of one model, and of many at once with torch.func (functional_call + vmap).

Both paths draw the initialisation from `torch.manual_seed(seed)` and the batch order from a
`torch.Generator` seeded with the same seed, and Adam is elementwise, so model j of a vmapped run
follows the same trajectory as a separate run with seed j (up to float summation order).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import stack_module_state

from hyperforget.base.progress import progress
from hyperforget.config.params import TrainConfig
from hyperforget.models.metrics import accuracy
from hyperforget.models.nets import ModelSpec, batched_logits, generated_part, predict


def batch_order(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    return list(torch.randperm(n, generator=generator).split(batch_size))


def lr_schedule(opt: torch.optim.Optimizer, cfg: TrainConfig, n: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The recipe's lr, stepped once per batch: constant, or cosine from lr to 0 over all `cfg.epochs` epochs."""
    total = cfg.epochs * -(-n // cfg.batch_size)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)


def train_model(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    seed: int,
    x_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None,
    desc: str = "train",
) -> dict:
    """Train in place with Adam; with `cfg.patience` and a val split, stop early and keep the best epoch."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = lr_schedule(opt, cfg, len(y))
    history: dict = {"loss": [], "val_acc": []}
    best, best_state, since_best = -1.0, None, 0
    for _ in progress(range(cfg.epochs), desc):
        model.train()
        total = 0.0
        for idx in batch_order(len(y), cfg.batch_size, gen):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        history["loss"].append(total / len(y))
        if x_val is not None and y_val is not None:
            acc = accuracy(predict(model, x_val), y_val)
            history["val_acc"].append(acc)
            if acc > best:
                best, best_state, since_best = acc, copy.deepcopy(model.state_dict()), 0
            else:
                since_best += 1
            if cfg.patience and since_best >= cfg.patience:
                break
    if cfg.patience and best_state is not None:
        model.load_state_dict(best_state)
    history["epochs_run"] = len(history["loss"])
    return history


def stack(models: Sequence[nn.Module]) -> dict[str, torch.Tensor]:
    """Stack the parameters of same-architecture models into leaf tensors with a leading model axis."""
    params, _ = stack_module_state(list(models))
    return params


def unstack(spec: ModelSpec, params: dict[str, torch.Tensor]) -> list[nn.Module]:
    n = next(iter(params.values())).shape[0]
    models = []
    for i in range(n):
        m = spec.build()
        m.load_state_dict({k: v[i].detach().clone() for k, v in params.items()})
        models.append(m.eval())
    return models


def train_many(
    spec: ModelSpec, seeds: Sequence[int], x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, desc: str = "train×N",
    rows: torch.Tensor | None = None,
) -> list[nn.Module]:
    """Train one fresh model per seed, all in one vmapped batch (each on its `rows` of x when given); returns the
    trained models."""
    return unstack(spec, train_many_params(spec, seeds, x, y, cfg, desc, rows=rows))


def train_many_params(spec: ModelSpec, seeds: Sequence[int], x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                      desc: str = "train×N", cut: str = "all", rows: torch.Tensor | None = None
                      ) -> dict[str, torch.Tensor]:
    """`train_many`'s stacked parameters [N, ...]. With a `cut` (models.Classifier), only the layers it generates
    are initialised (as the seed initialises them in a whole model) and trained, on x = the frozen part's
    features (`models.frozen_features`): the rest of the network is someone else's and fixed.
    With `rows` [N, m] (indices into x), model n trains on x[rows[n]] only: the membership shadows of the
    reference pool, each on its own half of the data, still in one vmapped batch (equal sizes m)."""
    template = spec.build().to("meta")
    params = stack([spec.build(seed=s) for s in seeds])
    if cut != "all":
        keep = {name for name, _ in generated_part(template, cut).layout}
        params = {k: v for k, v in params.items() if k in keep}
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    opt = torch.optim.Adam(params.values(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(y) if rows is None else rows.shape[1]
    sched = lr_schedule(opt, cfg, n)
    for _ in progress(range(cfg.epochs), desc):
        orders = [batch_order(n, cfg.batch_size, g) for g in gens]
        for step in range(len(orders[0])):
            idx = torch.stack([o[step] for o in orders])  # [N, B]
            if rows is not None:
                idx = torch.gather(rows, 1, idx)
            logits = batched_logits(template, params, x[idx], cut=cut)
            per_model = F.cross_entropy(logits.flatten(0, 1), y[idx].flatten(), reduction="none").view(idx.shape)
            opt.zero_grad(set_to_none=True)
            per_model.mean(1).sum().backward()
            opt.step()
            sched.step()
    return params
