"""Level retrains: true retrains per single-class request, kept only as the loss they leave on the class (what
DiHyFo's level matching aims at, `unlearn/level.py`).

Why: under partial generation the zoo's retrained endpoints (kind `head_retrain`) re-learn only the generated
layers on θ0's frozen features, which saw the class; they leave it shallower than a true retrain does. On MNIST-60k
LeNet-5 (fc1–fc3 generated) their median validation loss on the class is 13.8–19.2 nats where two true retrains
leave 16.4–27.1, and at that level DiHyFo-1's answer (at θ0's scale) sat above the retrains that judge it on 8 of 10
classes (LiRA AUC 0.76–0.98) and relearnt 5 classes 2–3× too fast (`bench/level_and_scale.py`). A partial zoo
cannot hold a true retrain as a row (its rows are the generated layers on θ0's frozen part), so `zoo.level_retrains`
retrains per single class are trained on the images of D_r with the train recipe and only their per-class
validation loss and accuracy are kept, in a file per work unit (`units/levels-UUU.json`) joined into `levels.json`.
Their seeds are their own: none of the pool's retrains that judge an answer, nor of a held-out control's, is one of
them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hyperforget.base.io import read_json, write_json
from hyperforget.config.params import TrainConfig, ZooConfig
from hyperforget.data.datasets import Dataset
from hyperforget.models.metrics import class_metrics
from hyperforget.models.nets import ModelSpec, flatten
from hyperforget.models.train import train_many
from hyperforget.zoo.shards import UNITS

LEVELS = "levels.json"
LEVEL_SEED = 3_000_000  # + 1024 · zoo.seed + i: disjoint from θ0's, the zoo's (5000+), the pool's (20,000+) and
#                         the controls' (500+, 1000+) seeds


def wanted(request: tuple[int, ...] | list[int], n: int) -> bool:
    """Whether a work unit trains level retrains: single-class requests only (a set's classes read their own)."""
    return n > 0 and len(request) == 1


def unit_path(out: Path, u: int) -> Path:
    return out / UNITS / f"levels-{u:03d}.json"


def unit_done(out: Path, u: int, request: tuple[int, ...], n: int) -> bool:
    """The unit needs no level retrains, or its file holds at least `n` (seeds 0..n−1 are the same at any n)."""
    if not wanted(request, n):
        return True
    path = unit_path(out, u)
    return path.exists() and len(read_json(path)["retrains"]) >= n


def build(out: Path, u: int, spec: ModelSpec, data: Dataset, request: tuple[int, ...], cfg: ZooConfig,
          train_cfg: TrainConfig) -> None:
    """Train the unit's `cfg.level_retrains` retrains without its class (one vmapped batch, the images of D_r) and
    write their per-class validation loss and accuracy."""
    keep = ~torch.isin(data.y_train, torch.tensor(request))
    seeds = [LEVEL_SEED + 1024 * cfg.seed + i for i in range(cfg.level_retrains)]
    models = train_many(spec, seeds, data.x_train[keep], data.y_train[keep], train_cfg,
                        desc=f"zoo level retrain c{request[0]}")
    loss, acc = class_metrics(spec, torch.stack([flatten(m) for m in models]), data.x_val, data.y_val)
    write_json(unit_path(out, u), {"request": list(request), "retrains": [
        {"seed": s, "val_loss": loss[i].tolist(), "val_acc": acc[i].tolist()} for i, s in enumerate(seeds)]})


def join(out: Path, units: list[tuple[int, ...]], n: int) -> dict[str, Any] | None:
    """Write `levels.json` ({class: the val loss on it of each of its first `n` level retrains}); with n = 0 remove
    it, so a zoo never offers levels its settings no longer ask for."""
    path = out / LEVELS
    if n == 0:
        path.unlink(missing_ok=True)
        return None
    classes = {}
    for u, request in enumerate(units):
        if wanted(request, n):
            c = request[0]
            classes[str(c)] = [r["val_loss"][c] for r in read_json(unit_path(out, u))["retrains"][:n]]
    write_json(path, {"level_retrains": n, "classes": classes})
    return {"level_retrains": n, "classes": len(classes)}


def read(zoo_dir: str | Path) -> dict[int, list[float]]:
    """{class: its level retrains' val losses on it}; empty when the zoo has none."""
    path = Path(zoo_dir) / LEVELS
    if not path.exists():
        return {}
    return {int(c): v for c, v in read_json(path)["classes"].items()}
