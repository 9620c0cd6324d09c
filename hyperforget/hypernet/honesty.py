"""Honesty checks reported with every sampled model (papers.md, "known traps": weight generators often
copy their training checkpoints, so a good sample proves little on its own).

- Prompt alignment (G.pt): sweep the forget-class losses of a request from their low to their high level in
  `n` prompts, sample, and report R² between prompted and achieved validation loss, over the mean of the
  forget classes and per forget class; retained classes (held at their low level) get a mean absolute error.
- Memorisation: L2 distance from the sample to its nearest zoo checkpoint, against the zoo's own median
  nearest-neighbour spacing (a ratio near 0 means the sample is a copy).
- Baselines the caller evaluates like any model: (a) retrieval, the zoo checkpoint whose recorded validation
  losses best match the prompt (in log1p space, as the denoiser sees losses); (b) that checkpoint plus
  Gaussian noise whose norm is the sample's nearest-zoo distance. If they do as well as the sample, the
  hypernetwork adds nothing over a lookup.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from hyperforget.data.datasets import Dataset
from hyperforget.hypernet.conditioning import conditioning
from hyperforget.hypernet.diffusion import Hypernet, candidate_seeds, sample
from hyperforget.hypernet.prompts import r2, sweep_targets
from hyperforget.models.metrics import class_metrics
from hyperforget.models.nets import ModelSpec, frozen_features, load_flat
from hyperforget.zoo.shards import ZooTensors


@torch.no_grad()
def prompt_alignment(hypernet: Hypernet, zoo: ZooTensors, classes: Sequence[int], spec: ModelSpec, data: Dataset,
                     n: int = 20, k: int = 2, hi_pct: float = 95, lo_pct: float = 5, seed: int = 0,
                     steps: int | None = None) -> dict[str, Any]:
    """R² of achieved vs prompted validation loss over `n` prompts (k samples each, averaged)."""
    targets, mask = sweep_targets(zoo.class_loss, zoo.forget_mask, classes, n, hi_pct, lo_pct)  # [n, C], [C]
    conds = conditioning(targets.repeat_interleave(k, 0), mask.float().expand(n * k, -1), hypernet.config.variant)
    sampled = sample(hypernet, zoo.start[0], conds, steps=steps, seeds=candidate_seeds(seed, n * k))  # one batch
    achieved = zoo_val_metrics(zoo, spec, sampled, data)[0].view(n, k, -1).mean(1)  # [n, C]
    forget = list(classes)
    return {"r2": r2(targets[:, forget].mean(1), achieved[:, forget].mean(1)),
            "r2_per_class": {str(c): r2(targets[:, c], achieved[:, c]) for c in forget},
            "retained_mae": (achieved[:, ~mask] - targets[:, ~mask]).abs().mean().item(),
            "prompted": targets[:, forget].mean(1).tolist(), "achieved": achieved[:, forget].mean(1).tolist(),
            "n": n, "k": k}


def zoo_val_metrics(zoo: ZooTensors, spec: ModelSpec, vecs: torch.Tensor,
                    data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class val loss and accuracy [R, C] of zoo-space vectors; for a partially generated zoo, θ0's frozen
    part runs once over val and the generated layers on its output (`metrics.class_metrics` with a cut)."""
    if zoo.generate == "all":
        return class_metrics(spec, vecs, data.x_val, data.y_val)
    h = frozen_features(load_flat(spec.build(), zoo.frozen), data.x_val, zoo.generate)
    return class_metrics(spec, vecs, h, data.y_val, cut=zoo.generate)


def nearest(zoo_weights: torch.Tensor, vecs: torch.Tensor, exclude: torch.Tensor | None = None,
            chunk: int = 512, zoo_chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance to and index of each vector's nearest zoo row, in float64, `chunk` vectors against `zoo_chunk`
    zoo rows at a time: a whole zoo in float64 at once (21,191 LeNet rows: 10 GB) ran out of memory here.
    `exclude[i]`: a zoo row vector i may not take (itself, when the vectors are zoo rows)."""
    dists, idxs = [], []
    for start, part in zip(range(0, len(vecs), chunk), vecs.split(chunk), strict=True):
        part, best = part.double(), torch.full((len(part),), float("inf"), dtype=torch.float64)
        arg = torch.zeros(len(part), dtype=torch.long)
        own = None if exclude is None else exclude[start:start + len(part)]
        for z in range(0, len(zoo_weights), zoo_chunk):
            d = torch.cdist(part, zoo_weights[z:z + zoo_chunk].double())
            if own is not None:
                hit = ((own >= z) & (own < z + d.shape[1])).nonzero().squeeze(1)
                d[hit, own[hit] - z] = float("inf")
            value, where = d.min(1)
            better = value < best
            best, arg = torch.where(better, value, best), torch.where(better, where + z, arg)
        dists.append(best)
        idxs.append(arg)
    return torch.cat(dists).float(), torch.cat(idxs)


SPACING_QUERIES = 2048  # zoo rows whose nearest neighbour estimates the median spacing (all, in smaller zoos)


def zoo_spacing(zoo_weights: torch.Tensor, queries: int = SPACING_QUERIES, seed: int = 0) -> float:
    """Median distance from a zoo checkpoint to its nearest other checkpoint, over every checkpoint of a zoo of
    at most `queries` rows and over a seeded sample of `queries` rows (each against the whole zoo) in a larger
    one. Why the sample: every row against every row costs N²·P (21,191 LeNet fc1–fc3 rows, P ≈ 59k: 7·10¹³
    flops). On that model's 1,631-row zoo (exact median 0.558, 18 s on 1 thread), samples of 512 and 1,024 rows
    gave medians within 3% of it (seeds 0–2)."""
    n = len(zoo_weights)
    rows = (torch.arange(n) if n <= queries
            else torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:queries])
    return nearest(zoo_weights, zoo_weights[rows], exclude=rows)[0].median().item()


def retrieval_row(class_loss: torch.Tensor, target: torch.Tensor) -> int:
    """The zoo row whose recorded per-class losses are closest to the prompt's targets (log1p space)."""
    return int(((class_loss.log1p() - target.log1p()) ** 2).sum(1).argmin())


def nearest_rows(class_loss: torch.Tensor, targets: torch.Tensor, per: Sequence[int]) -> torch.Tensor:
    """Retrieval@K's rows: for prompt level i (targets [L, C]), the `per[i]` zoo rows whose recorded per-class
    losses are nearest its targets (log1p space), levels concatenated (a row near two levels comes twice)."""
    dist = ((class_loss.log1p()[None] - targets.log1p()[:, None]) ** 2).sum(-1)  # [L, N]
    return torch.cat([dist[i].topk(n, largest=False).indices for i, n in enumerate(per)])


def honesty_report(hypernet: Hypernet, zoo: ZooTensors, rows: list[dict[str, Any]], sampled: torch.Tensor,
                   classes: Sequence[int], target: torch.Tensor, spec: ModelSpec, data: Dataset,
                   spacing: float | None = None, seed: int = 0, **alignment: Any) -> dict[str, Any]:
    """The JSON-able honesty record of one sampled weight vector `sampled` [P] prompted with `target` [C].

    `spacing` (zoo_spacing) can be passed to reuse it across requests; `alignment` goes to prompt_alignment.
    A full weight vector of a partially generated zoo is compared on its generated layers (the zoo's space).
    """
    if zoo.index is not None and sampled.shape[-1] != zoo.weights.shape[1]:
        sampled = sampled[..., zoo.index]
    dist, idx = (v.item() for v in nearest(zoo.weights, sampled[None].float()))
    spacing = zoo_spacing(zoo.weights) if spacing is None else spacing
    ret = retrieval_row(zoo.class_loss, target)

    def row(i: int) -> dict[str, Any]:
        return {k: rows[i][k] for k in ("run", "kind", "step", "request")} | {"row": i}

    return {
        "alignment": prompt_alignment(hypernet, zoo, classes, spec, data, seed=seed, **alignment),
        "nearest_zoo": {**row(idx), "distance": dist},
        "zoo_nn_spacing_median": spacing,
        "distance_ratio": dist / spacing if spacing > 0 else float("inf"),
        "distance_to_theta0": (sampled - zoo.start[0]).norm().item(),
        "retrieval": {**row(ret), "distance_to_sample": (zoo.weights[ret] - sampled).norm().item(),
                      "val_loss": rows[ret]["val_loss"]},
        "retrieval_noise": {"seed": seed, "noise_norm": dist},
    }


def baseline_weights(zoo: ZooTensors, report: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The two baselines' flat weights: the retrieved checkpoint, and it plus noise at the sample's distance."""
    base = zoo.weights[report["retrieval"]["row"]]
    noise = torch.randn(base.shape, generator=torch.Generator().manual_seed(report["retrieval_noise"]["seed"]))
    return {"retrieval": base, "retrieval_noise": base + noise * report["retrieval_noise"]["noise_norm"] / noise.norm()}
