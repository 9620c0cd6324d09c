"""The weight zoo: unlearning trajectories from θ0 and retrained endpoints → sharded checkpoints + index.

Per request (every single class plus `pairs`, minus `holdout_pairs`) the zoo holds
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

Storage: `shard-NNNNN.safetensors` ([rows, P] float32 in `models.flatten` order, sha256 sidecar), `index.json`
(one row per checkpoint, rewritten atomically after each shard) and `zoo.json` (config, spec, layout, θ0
sha256, counts, `complete`). The work unit is one request and a shard never spans two. A rerun verifies
the recorded shards, keeps the intact prefix and recomputes the rest; CPU runs are bitwise repeatable, so
a resumed build equals an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from hyperforget.config import TrainConfig, ZooConfig
from hyperforget.data import Dataset
from hyperforget.errors import ConfigError, DataError, IntegrityError
from hyperforget.hypernet.data import ZooTensors
from hyperforget.hypernet.tokenizer import MLP_LAYOUT_NAMES
from hyperforget.io import load_tensors, read_json, save_tensors, sha256_bytes, sha256_file, write_json
from hyperforget.models import Layout, ModelSpec, flatten, load_flat, param_layout, unflatten
from hyperforget.progress import progress as progress_iter
from hyperforget.train import batched_logits, train_many

INDEX, MANIFEST = "index.json", "zoo.json"
RETRAIN_SEED_OFFSET = 5000  # disjoint from the original's seed and unlearn.retrain's 1000 + seed + i


def zoo_requests(cfg: ZooConfig, num_classes: int) -> list[tuple[int, ...]]:
    """Every single class, then cfg.pairs, minus cfg.holdout_pairs (sorted, no duplicates)."""
    held = {tuple(sorted(p)) for p in cfg.holdout_pairs}
    out: list[tuple[int, ...]] = []
    for r in [(c,) for c in range(num_classes)] + [tuple(sorted(p)) for p in cfg.pairs]:
        if r not in held and r not in out:
            out.append(r)
    return out


def weights_sha256(vec: torch.Tensor) -> str:
    """sha256 of a flat weight vector's float32 bytes: ties the zoo (and hypernets) to one θ0."""
    return sha256_bytes(vec.detach().float().contiguous().numpy().tobytes())


@torch.no_grad()
def class_metrics(spec: ModelSpec, weights: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                  chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class mean cross-entropy and accuracy [R, C] of R flat weight vectors, vmapped in chunks."""
    template = spec.build().to("meta")
    layout = param_layout(template)
    onehot = F.one_hot(y, spec.num_classes).float()
    counts = onehot.sum(0)
    if (counts == 0).any():
        raise DataError(f"classes {(counts == 0).nonzero().flatten().tolist()} have no samples in a split")
    losses, accs = [], []
    for w in weights.float().split(chunk):
        logits = batched_logits(template, unflatten(w, layout), x, shared=True)  # [r, B, C]
        ce = -logits.log_softmax(-1).gather(-1, y.expand(len(w), -1)[..., None]).squeeze(-1)
        losses.append(ce @ onehot / counts)
        accs.append((logits.argmax(-1) == y).float() @ onehot / counts)
    return torch.cat(losses), torch.cat(accs)


def _stream(n: int, batch: int, steps: int, g: torch.Generator) -> torch.Tensor:
    """[steps, b] indices from successive seeded permutations (fixed b = min(batch, n), so runs vmap)."""
    b = min(batch, n)
    reps = -(-steps * b // n)
    return torch.cat([torch.randperm(n, generator=g) for _ in range(reps)])[: steps * b].view(steps, b)


def run_trajectories(spec: ModelSpec, theta0: torch.Tensor, xf: torch.Tensor, yf: torch.Tensor, xr: torch.Tensor,
                     yr: torch.Tensor, tau: float, lrs: torch.Tensor, ascent: torch.Tensor, seeds: list[int],
                     cfg: ZooConfig) -> tuple[list[int], torch.Tensor]:
    """One request's trajectories in one vmapped batch (Adam, lr per trajectory): saved steps, weights
    [N · len(steps), P] trajectory-major."""
    template = spec.build().to("meta")
    layout = param_layout(template)
    n = len(seeds)
    params = {k: v.expand(n, *v.shape).clone().requires_grad_() for k, v in unflatten(theta0, layout).items()}
    moments = {k: (torch.zeros_like(v), torch.zeros_like(v)) for k, v in params.items()}
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    fidx = torch.stack([_stream(len(yf), cfg.batch_size, cfg.steps, g) for g in gens])
    ridx = torch.stack([_stream(len(yr), cfg.batch_size, cfg.steps, g) for g in gens])

    def per_sample(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        logits = batched_logits(template, params, x[idx])
        return F.cross_entropy(logits.flatten(0, 1), y[idx].flatten(), reduction="none").view(idx.shape)

    saved, snaps = [], []
    for step in range(cfg.steps):
        lf = per_sample(xf, yf, fidx[:, step]).mean(1)
        lr_ = per_sample(xr, yr, ridx[:, step]).mean(1)
        loss = ascent * F.relu(tau - lf) ** 2 + (1 - ascent) * lr_
        grads = torch.autograd.grad(loss.sum(), list(params.values()))
        rate = lrs * (1 - 0.9 * step / cfg.steps)
        with torch.no_grad():
            for (k, p), g in zip(params.items(), grads, strict=True):
                m, v = moments[k]
                m.lerp_(g, 0.1)
                v.mul_(0.999).addcmul_(g, g, value=0.001)
                m_hat, v_hat = m / (1 - 0.9 ** (step + 1)), v / (1 - 0.999 ** (step + 1))
                p.sub_(rate.view(n, *[1] * (p.dim() - 1)) * m_hat / (v_hat.sqrt() + 1e-8))
        if (step + 1) % cfg.save_every == 0:
            saved.append(step + 1)
            snaps.append(flatten(params, layout))
    return saved, torch.stack(snaps, 1).flatten(0, 1)


@torch.no_grad()
def class_level_tau(spec: ModelSpec, theta0: torch.Tensor, data: Dataset, request: tuple[int, ...]) -> float:
    """∇τ's class-request level: the forgotten labels' loss on the other classes' validation samples."""
    other = ~torch.isin(data.y_val, torch.tensor(request))
    model = load_flat(spec.build(), theta0)
    return -model(data.x_val[other]).log_softmax(1)[:, list(request)].mean().item()


def align_hidden(weights: torch.Tensor, reference: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Permute the hidden units of MLP weight vectors [R, P] to best match `reference` (weight matching,
    Ainsworth et al. 2023). The function is unchanged; retrained models land nearer θ0 and each other, so
    the hypernetwork is not asked to learn 10! equivalent copies. Other layouts are returned as they are."""
    if tuple(n for n, _ in layout) != MLP_LAYOUT_NAMES:
        return weights

    def units(vec: torch.Tensor) -> torch.Tensor:
        p = unflatten(vec, layout)
        return torch.cat([p["fc1.weight"], p["fc1.bias"][:, None], p["fc2.weight"].T], 1)

    ref, out = units(reference), []
    for vec in weights:
        rows, cols = linear_sum_assignment((units(vec) @ ref.T).numpy(), maximize=True)
        perm = torch.as_tensor(rows[cols.argsort()])  # reference unit j ← unit perm[j]
        p = unflatten(vec, layout)
        q = {"fc1.weight": p["fc1.weight"][perm], "fc1.bias": p["fc1.bias"][perm],
             "fc2.weight": p["fc2.weight"][:, perm], "fc2.bias": p["fc2.bias"]}
        out.append(flatten(q, layout))
    return torch.stack(out)


def _unit(original_vec: torch.Tensor, spec: ModelSpec, data: Dataset, request: tuple[int, ...], u: int,
          cfg: ZooConfig, train_cfg: TrainConfig) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Weights [R, P] and row records (without metrics) of one work unit."""
    if not request:
        return original_vec[None], [{"run": "original", "kind": "original", "step": 0, "request": [],
                                     "lr": None, "forget_weight": None, "seed": None, "tau": None}]
    slug = "c" + "-".join(map(str, request))
    forget = torch.isin(data.y_train, torch.tensor(request))
    xf, yf, xr, yr = data.x_train[forget], data.y_train[forget], data.x_train[~forget], data.y_train[~forget]
    weights, rows = [], []
    if cfg.retrain_seeds:
        seeds = [RETRAIN_SEED_OFFSET + 1024 * cfg.seed + i for i in range(cfg.retrain_seeds)]
        models = train_many(spec, seeds, xr, yr, train_cfg, desc=f"zoo retrain {slug}")
        weights.append(align_hidden(torch.stack([flatten(m) for m in models]), original_vec, param_layout(models[0])))
        steps = train_cfg.epochs * -(-len(yr) // train_cfg.batch_size)
        rows += [{"run": f"{slug}/retrain{i}", "kind": "retrain", "step": steps, "request": list(request),
                  "lr": train_cfg.lr, "forget_weight": None, "seed": s, "tau": None} for i, s in enumerate(seeds)]
    tau = class_level_tau(spec, original_vec, data, request)
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + u)
    lo, hi = (math.log(v) for v in cfg.lr)
    lrs = torch.exp(torch.empty(cfg.trajectories).uniform_(lo, hi, generator=g))
    ascent = torch.empty(cfg.trajectories).uniform_(*cfg.forget_weight, generator=g)
    seeds = torch.randint(2**31 - 1, (cfg.trajectories,), generator=g).tolist()
    saved, traj = run_trajectories(spec, original_vec, xf, yf, xr, yr, tau, lrs, ascent, seeds, cfg)
    weights.append(traj)
    rows += [{"run": f"{slug}/traj{j:03d}", "kind": "trajectory", "step": s, "request": list(request),
              "lr": lrs[j].item(), "forget_weight": ascent[j].item(), "seed": seeds[j], "tau": tau}
             for j in range(cfg.trajectories) for s in saved]
    return torch.cat(weights), rows


def _manifest(original_vec: torch.Tensor, spec: ModelSpec, layout: Layout, data: Dataset, cfg: ZooConfig,
              train_cfg: TrainConfig, requests: list[tuple[int, ...]]) -> dict[str, Any]:
    data_sha = sha256_bytes(b"".join(t.contiguous().numpy().tobytes() for t in
                                     (data.x_train, data.y_train, data.x_val, data.y_val)))
    return {"config": cfg.model_dump(mode="json"), "train": train_cfg.model_dump(mode="json"),
            "spec": spec.to_metadata(), "layout": [[n, list(s)] for n, s in layout],
            "num_classes": data.num_classes, "theta0_sha256": weights_sha256(original_vec),
            "data_sha256": data_sha, "requests": [list(r) for r in requests]}


def _intact_index(out: Path) -> dict[str, Any]:
    """The recorded index cut at the first shard that is missing or fails its checksum."""
    if not (out / INDEX).exists():
        return {"shards": [], "rows": []}
    index = read_json(out / INDEX)
    keep = []
    for shard in index["shards"]:
        path = out / shard["file"]
        if not path.exists() or sha256_file(path) != shard["sha256"]:
            break
        keep.append(shard)
    files = {s["file"] for s in keep}
    return {"shards": keep, "rows": [r for r in index["rows"] if r["shard"] in files]}


def build_zoo(original: nn.Module, spec: ModelSpec, data: Dataset, cfg: ZooConfig, train_cfg: TrainConfig,
              out_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Build (or resume building) the zoo in `out_dir`; returns a JSON-able summary."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    layout, original_vec = param_layout(original), flatten(original).float()
    requests = zoo_requests(cfg, data.num_classes)
    manifest = _manifest(original_vec, spec, layout, data, cfg, train_cfg, requests)
    if (out / MANIFEST).exists():
        old = read_json(out / MANIFEST)
        changed = sorted(k for k, v in manifest.items() if old.get(k) != v)
        if changed:
            raise ConfigError(f"{out} holds a zoo built with different {', '.join(changed)}; "
                              "delete the folder (or choose another zoo dir) to build this one")
    write_json(out / MANIFEST, {**manifest, "complete": False})
    index = _intact_index(out)
    resumed = len(index["shards"])
    done = {s["unit"] for s in index["shards"] if s["last"]}
    units = [(), *requests]
    for u, request in enumerate(progress_iter(units, "zoo") if progress else units):
        if u in done:
            continue
        weights, rows = _unit(original_vec, spec, data, request, u, cfg, train_cfg)
        metrics = [class_metrics(spec, weights, data.x_train, data.y_train),
                   class_metrics(spec, weights, data.x_val, data.y_val)]
        for i, row in enumerate(rows):
            for (loss, acc), split in zip(metrics, ("train", "val"), strict=True):
                row[f"{split}_loss"], row[f"{split}_acc"] = loss[i].tolist(), acc[i].tolist()
        written = sum(s["rows"] for s in index["shards"] if s["unit"] == u)
        for start in range(written, len(rows), cfg.shard_rows):
            stop = min(start + cfg.shard_rows, len(rows))
            _write_shard(out, index, u, weights[start:stop], rows[start:stop], last=stop == len(rows))
    counts = {k: sum(r["kind"] == k for r in index["rows"]) for k in ("original", "trajectory", "retrain")}
    summary = {"rows": len(index["rows"]), "shards": len(index["shards"]), "counts": counts,
               "num_requests": len(requests), "resumed_shards": resumed, "seconds": time.perf_counter() - t0}
    write_json(out / MANIFEST, {**manifest, **summary, "complete": True})
    return {"out_dir": str(out), **summary}


def _write_shard(out: Path, index: dict[str, Any], unit: int, weights: torch.Tensor,
                 rows: list[dict[str, Any]], last: bool) -> None:
    """Write one shard, then commit it (and its rows) to the index atomically."""
    name = f"shard-{len(index['shards']):05d}.safetensors"
    digest = save_tensors(out / name, {"weights": weights.float().contiguous()})
    index["shards"].append({"file": name, "sha256": digest, "rows": len(rows), "unit": unit, "last": last})
    index["rows"] += [{**r, "shard": name, "row": i, "shard_sha256": digest} for i, r in enumerate(rows)]
    write_json(out / INDEX, index)


def read_zoo_losses(out_dir: str | Path) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Recorded val losses [N, C] and forget masks [N, C] (from the index, no weights) and the manifest:
    all a prompt needs, so unlearning never pays for loading the zoo's weights."""
    out = Path(out_dir)
    if not (out / MANIFEST).exists():
        raise IntegrityError(f"no zoo in {out} ({MANIFEST} missing); build it with the zoo stage")
    manifest = read_json(out / MANIFEST)
    if not manifest.get("complete"):
        raise IntegrityError(f"the zoo build in {out} is incomplete; re-run the zoo stage to finish it")
    rows = read_json(out / INDEX)["rows"]
    mask = torch.zeros(len(rows), manifest["num_classes"])
    for i, r in enumerate(rows):
        mask[i, r["request"]] = 1.0
    return torch.tensor([r["val_loss"] for r in rows]), mask, manifest


def load_zoo(out_dir: str | Path) -> tuple[ZooTensors, list[dict[str, Any]]]:
    """The zoo as hypernet training data (val losses as conditioning) and its index rows; every shard's
    sha256 is checked against the index."""
    out = Path(out_dir)
    class_loss, mask, manifest = read_zoo_losses(out)
    index = read_json(out / INDEX)
    parts = []
    for shard in index["shards"]:
        try:
            parts.append(load_tensors(out / shard["file"], expected_sha256=shard["sha256"])["weights"])
        except IntegrityError as e:
            raise IntegrityError(f"zoo shard {out / shard['file']} is corrupt or missing ({e}); re-run the zoo "
                                 "stage: it re-verifies every shard and rebuilds from the first bad one") from e
    rows, weights = index["rows"], torch.cat(parts)
    if len(weights) != len(rows):
        raise IntegrityError(f"{out / INDEX} lists {len(rows)} rows but the shards hold {len(weights)}; rebuild")
    theta0 = weights[[r["kind"] for r in rows].index("original")]
    if weights_sha256(theta0) != manifest["theta0_sha256"]:
        raise IntegrityError(f"the original row in {out} does not match θ0's recorded sha256; rebuild the zoo")
    layout = [(n, tuple(s)) for n, s in manifest["layout"]]
    return ZooTensors(weights, theta0[None], class_loss, mask, layout, manifest["num_classes"]), rows
