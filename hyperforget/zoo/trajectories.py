"""Unlearning trajectories from θ0 and retrained endpoints: what one zoo work unit computes.

Per request (every single class, the explicit `pairs` and `class_sets` random sets of 2–3 classes; never one
of the held-out sets, which the build refuses: `refuse_held_out`) the zoo holds (either of the first two may be
0: `trajectories: 0` keeps the retrain-shaped targets alone)
- `retrain_seeds` models retrained from scratch on D_r (`train.train_many`, the params' train recipe): the
  ideal endpoints;
- `trajectories` unlearning runs from θ0 in one vmapped batch, each with its own seeded Adam lr
  (log-uniform), ascent weight w (uniform) and batch order, keeping every `save_every`-th step. The loss is
  ∇τ's bounded ascent, w·ReLU(τ − mean ℓ(B_f))² + (1 − w)·mean ℓ(B_r), with τ the class-request level of
  `gradtau` (tau=auto): the forgotten labels' loss on the other classes' validation samples under θ0. The
  ascent stops where a model that never learnt the class would be, so endpoints converge instead of
  diverging. (The retrained models' own loss on the class is no level: over-confident, it spans 20–90 nats
  on MNIST, and an ascent that far cost the endpoints ~8 points of retained accuracy.) The lr decays
  linearly to 0.1× so the endpoints settle;
- θ0 itself once (forget mask all zero).
Every checkpoint records per-class mean cross-entropy and accuracy on the train and validation splits.

Partial generation (`hypernet.generate: head | block_head | dense`, `plan_zoo(generate=...)`): the rows hold only the
generated layers (the manifest's `layout` is their sub-layout, `generate` names them); θ0's frozen part is
run once over train and val (`features.cache_features`, `features.safetensors` + sha256 here), and the
trajectories, the metrics and the retrained endpoints run the generated layers alone on those features. Those
endpoints (kind `head_retrain`) re-initialise only the generated layers and keep θ0's frozen ones, which saw
the forgotten class: a cheap zoo member, never a retrain (the reference stays `unlearn.retrain`).

Storage: `shard-UUU-KKK.safetensors` ([rows, P] float32 in `models.flatten` order, sha256 sidecar), one
record per work unit `units/unit-UUU.json` (its shards and rows, written after them), `index.json` (every
row, joined in unit order once all units are built) and `zoo.json` (config, spec, layout, θ0 sha256,
counts, `complete`). The work unit is θ0 or one request; units are independent, so the Prefect `build`
flow fans them out as tasks, and a rerun keeps every unit whose shards pass their checksums and rebuilds
the rest. CPU runs are bitwise repeatable, so a resumed or thread-parallel build equals a sequential one
(with the same torch thread count: worker processes set to one thread differ in the last bits).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from hyperforget.config.params import TrainConfig, ZooConfig
from hyperforget.data.datasets import Dataset
from hyperforget.models.features import Features
from hyperforget.models.nets import (
    Layout,
    ModelSpec,
    batched_logits,
    flatten,
    generated_part,
    load_flat,
    param_layout,
    unflatten,
)
from hyperforget.models.objectives import bounded_ascent, unseen_loss
from hyperforget.models.train import train_many, train_many_params

RETRAIN_SEED_OFFSET = 5000  # disjoint from the original's seed and unlearn.retrain's 1000 + seed + i


def _stream(n: int, batch: int, steps: int, g: torch.Generator) -> torch.Tensor:
    """[steps, b] indices from successive seeded permutations (fixed b = min(batch, n), so runs vmap)."""
    b = min(batch, n)
    reps = -(-steps * b // n)
    return torch.cat([torch.randperm(n, generator=g) for _ in range(reps)])[: steps * b].view(steps, b)


def run_trajectories(spec: ModelSpec, theta0: torch.Tensor, xf: torch.Tensor, yf: torch.Tensor, xr: torch.Tensor,
                     yr: torch.Tensor, tau: float, lrs: torch.Tensor, ascent: torch.Tensor, seeds: list[int],
                     cfg: ZooConfig, cut: str = "all") -> tuple[list[int], torch.Tensor]:
    """One request's trajectories in one vmapped batch: ∇τ's bounded ascent (`objectives.bounded_ascent`)
    with torch's Adam, one parameter group (own lr, decaying linearly to 0.1×) per trajectory. Returns the
    saved steps and the weights [N · len(steps), P], trajectory-major. With a `cut` (hypernet.generate),
    theta0 holds θ0's generated layers only and xf/xr are the frozen part's features: only they train."""
    template = spec.build().to("meta")
    layout = param_layout(template) if cut == "all" else generated_part(template, cut).layout
    n = len(seeds)
    start = unflatten(theta0, layout)
    leaves = [{k: v.clone().requires_grad_() for k, v in start.items()} for _ in range(n)]
    opt = torch.optim.Adam([{"params": list(p.values()), "lr": lr} for p, lr in zip(leaves, lrs.tolist(), strict=True)],
                           foreach=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - 0.9 * step / cfg.steps)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    fidx = torch.stack([_stream(len(yf), cfg.batch_size, cfg.steps, g) for g in gens])
    ridx = torch.stack([_stream(len(yr), cfg.batch_size, cfg.steps, g) for g in gens])

    def per_sample(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                   idx: torch.Tensor) -> torch.Tensor:
        logits = batched_logits(template, params, x[idx], cut=cut)
        return F.cross_entropy(logits.flatten(0, 1), y[idx].flatten(), reduction="none").view(idx.shape)

    saved, snaps = [], []
    for step in range(cfg.steps):
        params = {k: torch.stack([p[k] for p in leaves]) for k in start}
        loss = bounded_ascent(per_sample(params, xf, yf, fidx[:, step]).mean(1),
                              per_sample(params, xr, yr, ridx[:, step]).mean(1), tau, ascent)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        sched.step()
        if (step + 1) % cfg.save_every == 0:
            saved.append(step + 1)
            snaps.append(torch.stack([flatten(p, layout) for p in leaves]))
    return saved, torch.stack(snaps, 1).flatten(0, 1)


def align_hidden(weights: torch.Tensor, reference: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Permute the hidden units of a chain of Linear layers [R, P] (the MLP; LeNet's generated fc2 + fc3 or
    fc1–fc3) to best match `reference` (weight matching, Ainsworth et al. 2023), one hidden layer at a time from
    the input side: a unit is its incoming weights (columns already permuted by the layer before), its bias and
    its outgoing weights. The function is unchanged; retrained models land nearer θ0 and each other, so the
    hypernetwork is not asked to learn H! equivalent copies. Other layouts are returned as they are."""
    if not _linear_chain(layout):
        return weights
    pairs = [(layout[i][0], layout[i + 1][0]) for i in range(0, len(layout), 2)]
    ref, out = unflatten(reference, layout), []
    for vec in weights:
        p = unflatten(vec, layout)
        for (w, b), (w_next, _) in itertools.pairwise(pairs):
            mine, theirs = (torch.cat([q[w], q[b][:, None], q[w_next].T], 1) for q in (p, ref))
            rows, cols = linear_sum_assignment((mine @ theirs.T).numpy(), maximize=True)
            perm = torch.as_tensor(rows[cols.argsort()])  # reference unit j ← unit perm[j]
            p[w], p[b], p[w_next] = p[w][perm], p[b][perm], p[w_next][:, perm]
        out.append(flatten(p, layout))
    return torch.stack(out)


def _linear_chain(layout: Layout) -> bool:
    """[H1, I] weight, [H1] bias, [H2, H1] weight, [H2] bias, …: two or more Linear layers, each feeding the next."""
    if len(layout) < 4 or len(layout) % 2 or [len(s) for _, s in layout] != [2, 1] * (len(layout) // 2):
        return False
    shapes = [s for _, s in layout]
    weights, biases = shapes[0::2], shapes[1::2]
    return all(w[0] == b[0] for w, b in zip(weights, biases, strict=True)) and \
        all(nxt[1] == w[0] for w, nxt in itertools.pairwise(weights))


def compute_unit(original_vec: torch.Tensor, spec: ModelSpec, data: Dataset, request: tuple[int, ...], u: int,
          cfg: ZooConfig, train_cfg: TrainConfig, feats: Features | None = None
          ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Weights [R, P] and row records (without metrics) of one work unit. With `feats` (partial generation)
    the rows hold the generated layers only, trained on the frozen part's features; the retrained endpoints
    are then those layers re-initialised and trained on D_r's features (kind `head_retrain`), never retrains."""
    cut, start = (feats.part.name, feats.start) if feats is not None else ("all", original_vec)
    if not request:
        return start[None], [{"run": "original", "kind": "original", "step": 0, "request": [],
                              "lr": None, "forget_weight": None, "seed": None, "tau": None}]
    slug = "c" + "-".join(map(str, request))
    forget = torch.isin(data.y_train, torch.tensor(request))
    x = data.x_train if feats is None else feats.train
    xf, yf, xr, yr = x[forget], data.y_train[forget], x[~forget], data.y_train[~forget]
    weights, rows = [], []
    if cfg.retrain_seeds:
        seeds = [RETRAIN_SEED_OFFSET + 1024 * cfg.seed + i for i in range(cfg.retrain_seeds)]
        kind = "retrain" if feats is None else "head_retrain"
        if feats is None:
            models = train_many(spec, seeds, xr, yr, train_cfg, desc=f"zoo retrain {slug}")
            layout, vecs = param_layout(models[0]), torch.stack([flatten(m) for m in models])
        else:
            layout = feats.part.layout
            vecs = flatten(train_many_params(spec, seeds, xr, yr, train_cfg, f"zoo {kind} {slug}", cut), layout)
        weights.append(align_hidden(vecs, start, layout))
        steps = train_cfg.epochs * -(-len(yr) // train_cfg.batch_size)
        rows += [{"run": f"{slug}/{kind}{i}", "kind": kind, "step": steps, "request": list(request),
                  "lr": train_cfg.lr, "forget_weight": None, "seed": s, "tau": None} for i, s in enumerate(seeds)]
    if not cfg.trajectories:  # a zoo of retrain-shaped targets only (zoo.trajectories: 0)
        return torch.cat(weights), rows
    tau = unseen_loss(load_flat(spec.build(), original_vec), data.x_val, data.y_val, request)
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + u)
    lo, hi = (math.log(v) for v in cfg.lr)
    lrs = torch.exp(torch.empty(cfg.trajectories).uniform_(lo, hi, generator=g))
    ascent = torch.empty(cfg.trajectories).uniform_(*cfg.forget_weight, generator=g)
    seeds = torch.randint(2**31 - 1, (cfg.trajectories,), generator=g).tolist()
    saved, traj = run_trajectories(spec, start, xf, yf, xr, yr, tau, lrs, ascent, seeds, cfg, cut)
    weights.append(traj)
    rows += [{"run": f"{slug}/traj{j:03d}", "kind": "trajectory", "step": s, "request": list(request),
              "lr": lrs[j].item(), "forget_weight": ascent[j].item(), "seed": seeds[j], "tau": tau}
             for j in range(cfg.trajectories) for s in saved]
    return torch.cat(weights), rows
