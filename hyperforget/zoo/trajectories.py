"""The weight zoo: unlearning trajectories from θ0 and retrained endpoints → sharded checkpoints + index.

Per request (every single class, the explicit `pairs` and `class_sets` random sets of 2–3 classes; never one
of the held-out sets, which the build refuses: `refuse_held_out`) the zoo holds
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

Partial generation (`hypernet.generate: head | block_head`, `plan_zoo(generate=...)`): the rows hold only the
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

import hashlib
import json
import math
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from hyperforget.base.errors import ConfigError, DataError, IntegrityError
from hyperforget.base.io import load_tensors, read_json, save_tensors, sha256_bytes, sha256_file, write_json
from hyperforget.base.progress import progress as progress_iter
from hyperforget.config.params import TrainConfig, ZooConfig
from hyperforget.data.datasets import Dataset
from hyperforget.models.features import Features, cache_features, load_features
from hyperforget.models.metrics import class_metrics
from hyperforget.models.nets import (
    Layout,
    ModelSpec,
    batched_logits,
    flatten,
    generated_part,
    load_flat,
    num_params,
    param_layout,
    unflatten,
)
from hyperforget.models.objectives import bounded_ascent, unseen_loss
from hyperforget.models.train import train_many, train_many_params

INDEX, MANIFEST, UNITS = "index.json", "zoo.json", "units"
RETRAIN_SEED_OFFSET = 5000  # disjoint from the original's seed and unlearn.retrain's 1000 + seed + i


@dataclass
class ZooTensors:
    """`weights` [N,P] targets; `start` [N,P] (or [1,P], broadcast) starting weights, usually θ0;
    `class_loss` [N,C] validation cross-entropy per class (nats); `forget_mask` [N,C] 0/1, the classes
    the row's trajectory was forgetting (all zero for the original model)."""

    weights: torch.Tensor
    start: torch.Tensor
    class_loss: torch.Tensor
    forget_mask: torch.Tensor
    layout: Layout
    num_classes: int
    generate: str = "all"  # the layers the rows hold (hypernet.generate); the rest is `frozen`'s
    frozen: torch.Tensor | None = None  # θ0's full flat vector, for generate != "all"
    index: torch.Tensor | None = None  # positions of the rows' values in it

    def assemble(self, vecs: torch.Tensor) -> torch.Tensor:
        """Full flat weights [..., P_full] of zoo-space vectors [..., P]: θ0's frozen layers + the given ones."""
        if self.generate == "all":
            return vecs
        out = self.frozen.to(vecs.dtype).repeat(*vecs.shape[:-1], 1)
        out[..., self.index] = vecs
        return out

    def __post_init__(self) -> None:
        if self.generate != "all" and (self.frozen is None or self.index is None):
            raise DataError(f"a zoo of {self.generate} layers needs θ0's frozen part (frozen, index)")
        n, p, c = self.weights.shape[0], num_params(self.layout), self.num_classes
        expected = {"weights": (n, p), "class_loss": (n, c), "forget_mask": (n, c)}
        for name, shape in expected.items():
            t = getattr(self, name)
            if tuple(t.shape) != shape:
                raise DataError(f"zoo {name} has shape {tuple(t.shape)}, expected {shape} (N rows, P={p}, C={c})")
        if self.start.dim() != 2 or self.start.shape[1] != p or self.start.shape[0] not in (1, n):
            raise DataError(f"zoo start has shape {tuple(self.start.shape)}, expected ({n}, {p}) or (1, {p})")
        for name in ("weights", "start", "class_loss"):
            if not torch.isfinite(getattr(self, name)).all():
                raise DataError(f"zoo {name} contains NaN or inf; rebuild the zoo")
        if ((self.forget_mask != 0) & (self.forget_mask != 1)).any():
            raise DataError("zoo forget_mask must hold only 0 and 1")

    @property
    def num_rows(self) -> int:
        return self.weights.shape[0]

    def fingerprint(self) -> str:
        """sha256 over the tensors and layout: a resumed training must see the same data."""
        h = hashlib.sha256(json.dumps([self.layout, self.num_classes]).encode())
        for t in (self.weights, self.start, self.class_loss, self.forget_mask):
            h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()


def zoo_requests(cfg: ZooConfig, num_classes: int) -> list[tuple[int, ...]]:
    """Every single class, then cfg.pairs, then cfg.class_sets random sets (sorted, no duplicates); a
    held-out set among them is refused (`refuse_held_out`)."""
    out: list[tuple[int, ...]] = []
    for r in [(c,) for c in range(num_classes)] + [tuple(sorted(p)) for p in cfg.pairs] + \
            cfg.random_sets(num_classes):
        if r not in out:
            out.append(r)
    refuse_held_out(out, cfg.held_out(num_classes))
    return out


def refuse_held_out(requests: Iterable[Sequence[int]], held_out: Iterable[Sequence[int]], where: str = "zoo") -> None:
    """ConfigError if any request (or zoo row's forgotten classes) is a held-out set: those sets exist to
    measure generalisation and must never be trained on."""
    held = {tuple(sorted(h)) for h in held_out}
    bad = sorted({tuple(sorted(r)) for r in requests} & held)
    if bad:
        raise ConfigError(f"the {where} holds the held-out class sets {[list(b) for b in bad]}; held-out sets never "
                          "enter the zoo or the hypernetwork's training: rebuild the zoo with these zoo params")


def held_out_rows(forget_mask: torch.Tensor, held_out: Iterable[Sequence[int]]) -> torch.Tensor:
    """Rows [N] bool whose forget mask is exactly one of the held-out sets."""
    hit = torch.zeros(forget_mask.shape[0], dtype=torch.bool)
    for h in held_out:
        target = torch.zeros(forget_mask.shape[1])
        target[list(h)] = 1.0
        hit |= (forget_mask == target).all(1)
    return hit


def weights_sha256(vec: torch.Tensor) -> str:
    """sha256 of a flat weight vector's float32 bytes: ties the zoo (and hypernets) to one θ0."""
    return sha256_bytes(vec.detach().float().contiguous().numpy().tobytes())


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
    """Permute the hidden units of two-Linear weight vectors [R, P] (the MLP; LeNet's generated fc2 + fc3) to
    best match `reference` (weight matching, Ainsworth et al. 2023). The function is unchanged; retrained
    models land nearer θ0 and each other, so the hypernetwork is not asked to learn H! equivalent copies.
    Other layouts are returned as they are."""
    if not _two_linear(layout):
        return weights
    w1, b1, w2, b2 = (n for n, _ in layout)

    def units(vec: torch.Tensor) -> torch.Tensor:
        p = unflatten(vec, layout)
        return torch.cat([p[w1], p[b1][:, None], p[w2].T], 1)

    ref, out = units(reference), []
    for vec in weights:
        rows, cols = linear_sum_assignment((units(vec) @ ref.T).numpy(), maximize=True)
        perm = torch.as_tensor(rows[cols.argsort()])  # reference unit j ← unit perm[j]
        p = unflatten(vec, layout)
        q = {w1: p[w1][perm], b1: p[b1][perm], w2: p[w2][:, perm], b2: p[b2]}
        out.append(flatten(q, layout))
    return torch.stack(out)


def _two_linear(layout: Layout) -> bool:
    """[H, I] weight, [H] bias, [C, H] weight, [C] bias: a hidden layer of H units feeding an output layer."""
    if len(layout) != 4 or [len(s) for _, s in layout] != [2, 1, 2, 1]:
        return False
    (_, (h, _)), (_, (hb,)), (_, (c, h2)), (_, (cb,)) = layout
    return h == hb == h2 and c == cb


def _unit(original_vec: torch.Tensor, spec: ModelSpec, data: Dataset, request: tuple[int, ...], u: int,
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


def _manifest(original_vec: torch.Tensor, spec: ModelSpec, layout: Layout, data: Dataset, cfg: ZooConfig,
              train_cfg: TrainConfig, requests: list[tuple[int, ...]]) -> dict[str, Any]:
    data_sha = sha256_bytes(b"".join(t.contiguous().numpy().tobytes() for t in
                                     (data.x_train, data.y_train, data.x_val, data.y_val)))
    return {"config": cfg.model_dump(mode="json"), "train": train_cfg.model_dump(mode="json"),
            "spec": spec.to_metadata(), "layout": [[n, list(s)] for n, s in layout],
            "num_classes": data.num_classes, "theta0_sha256": weights_sha256(original_vec),
            "data_sha256": data_sha, "requests": [list(r) for r in requests]}


def _unit_record(out: Path, u: int) -> Path:
    return out / UNITS / f"unit-{u:03d}.json"


def _unit_done(out: Path, u: int) -> bool:
    """A unit counts as built when its record exists and every shard it lists passes its checksum."""
    path = _unit_record(out, u)
    if not path.exists():
        return False
    shards = read_json(path)["shards"]
    return all((out / s["file"]).exists() and sha256_file(out / s["file"]) == s["sha256"] for s in shards)


def zoo_units(out_dir: str | Path) -> list[tuple[int, ...]]:
    """The work units of the zoo recorded in `out_dir`, as forget requests: θ0's empty one, then the manifest's."""
    return [(), *(tuple(r) for r in read_json(Path(out_dir) / MANIFEST)["requests"])]


def plan_zoo(original: nn.Module, spec: ModelSpec, data: Dataset, cfg: ZooConfig, train_cfg: TrainConfig,
             out_dir: str | Path, generate: str = "all", timings: dict[str, float] | None = None) -> list[int]:
    """Record the manifest (refusing a folder built with other settings) and return the work units still
    to build: unit 0 is θ0, unit u ≥ 1 the zoo's (u-1)-th request. Units are independent, so callers may
    build them in any order or in parallel (the Prefect `build` flow fans them out as tasks).
    With `generate` other than "all" (hypernet.generate) the zoo holds only those layers: the manifest's
    `layout` is their sub-layout, and θ0's frozen-part features are cached here first (`features`; their
    cost in seconds goes to `timings["features_s"]`, 0 when the cache was valid)."""
    out = Path(out_dir)
    original_vec = flatten(original).float()
    requests = zoo_requests(cfg, data.num_classes)
    layout = param_layout(original) if generate == "all" else generated_part(original, generate).layout
    manifest = _manifest(original_vec, spec, layout, data, cfg, train_cfg, requests)
    if generate != "all":  # absent = "all": zoos of every layer keep their manifest
        manifest["generate"] = generate
    if (out / MANIFEST).exists():
        old = read_json(out / MANIFEST)
        changed = sorted(k for k, v in manifest.items() if old.get(k) != v)
        if changed:
            raise ConfigError(f"{out} holds a zoo built with different {', '.join(changed)}; "
                              "delete the folder (or choose another zoo dir) to build this one")
    write_json(out / MANIFEST, {**manifest, "complete": False})
    if generate != "all":
        _, seconds = cache_features(out, original, spec, data, generate)
        if timings is not None:
            timings["features_s"] = seconds
    return [u for u in range(len(requests) + 1) if not _unit_done(out, u)]


def build_unit(original: nn.Module, spec: ModelSpec, data: Dataset, cfg: ZooConfig, train_cfg: TrainConfig,
               out_dir: str | Path, u: int) -> dict[str, Any]:
    """Compute unit `u` (after `plan_zoo`), write its shards, then its record; a no-op if already built."""
    out = Path(out_dir)
    if _unit_done(out, u):
        return {"unit": u, "rows": sum(s["rows"] for s in read_json(_unit_record(out, u))["shards"]), "built": False}
    units = zoo_units(out)
    if not 0 <= u < len(units):
        raise ConfigError(f"zoo unit {u} does not exist: the zoo in {out} has units 0..{len(units) - 1}")
    request = units[u]
    refuse_held_out([request] if request else [], cfg.held_out(data.num_classes))
    generate = read_json(out / MANIFEST).get("generate", "all")
    feats = load_features(out, spec) if generate != "all" else None
    weights, rows = _unit(flatten(original).float(), spec, data, request, u, cfg, train_cfg, feats)
    xs = (data.x_train, data.x_val) if feats is None else (feats.train, feats.val)
    metrics = [class_metrics(spec, weights, xs[0], data.y_train, cut=generate),
               class_metrics(spec, weights, xs[1], data.y_val, cut=generate)]
    for i, row in enumerate(rows):
        for (loss, acc), split in zip(metrics, ("train", "val"), strict=True):
            row[f"{split}_loss"], row[f"{split}_acc"] = loss[i].tolist(), acc[i].tolist()
    record: dict[str, Any] = {"unit": u, "request": list(request), "shards": [], "rows": []}
    for k, start in enumerate(range(0, len(rows), cfg.shard_rows)):
        stop = min(start + cfg.shard_rows, len(rows))
        _write_shard(out, record, f"shard-{u:03d}-{k:03d}.safetensors", weights[start:stop], rows[start:stop])
    write_json(_unit_record(out, u), record)
    return {"unit": u, "rows": len(rows), "built": True}


def finish_zoo(out_dir: str | Path, seconds: float = 0.0, resumed: int = 0) -> dict[str, Any]:
    """Join the unit records, in unit order, into `index.json` and mark the zoo complete."""
    out = Path(out_dir)
    manifest, units = read_json(out / MANIFEST), range(len(zoo_units(out)))
    missing = [u for u in units if not _unit_done(out, u)]
    if missing:
        raise IntegrityError(f"zoo units {missing} in {out} are missing or corrupt; re-run the zoo stage to build them")
    index: dict[str, Any] = {"shards": [], "rows": []}
    for u in units:
        record = read_json(_unit_record(out, u))
        index["shards"] += record["shards"]
        index["rows"] += record["rows"]
    write_json(out / INDEX, index)
    counts = {k: sum(r["kind"] == k for r in index["rows"]) for k in ("original", "trajectory", "retrain")}
    if any(r["kind"] == "head_retrain" for r in index["rows"]):
        counts["head_retrain"] = sum(r["kind"] == "head_retrain" for r in index["rows"])
    summary = {"rows": len(index["rows"]), "shards": len(index["shards"]), "counts": counts,
               "num_requests": len(manifest["requests"])}
    # only what the zoo is goes in the folder (timings would make an identical rebuild look new to DVC)
    write_json(out / MANIFEST, {**manifest, **summary, "complete": True})
    return {"out_dir": str(out), **summary, "resumed_units": resumed, "seconds": seconds}


def build_zoo(original: nn.Module, spec: ModelSpec, data: Dataset, cfg: ZooConfig, train_cfg: TrainConfig,
              out_dir: str | Path, progress: bool = True, workers: int = 1, generate: str = "all") -> dict[str, Any]:
    """Build (or resume building) the zoo in `out_dir`, `workers` units at a time in a thread pool (the
    result does not depend on it); returns a JSON-able summary (with `features_s` for partial generation)."""
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    todo = plan_zoo(original, spec, data, cfg, train_cfg, out_dir, generate, timings)
    resumed = len(zoo_units(out_dir)) - len(todo)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        built = pool.map(lambda u: build_unit(original, spec, data, cfg, train_cfg, out_dir, u), todo)
        for _ in progress_iter(built, "zoo", total=len(todo)) if progress else built:
            pass
    return finish_zoo(out_dir, time.perf_counter() - t0, resumed) | timings


def _write_shard(out: Path, record: dict[str, Any], name: str, weights: torch.Tensor,
                 rows: list[dict[str, Any]]) -> None:
    digest = save_tensors(out / name, {"weights": weights.float().contiguous()})
    record["shards"].append({"file": name, "sha256": digest, "rows": len(rows), "unit": record["unit"]})
    record["rows"] += [{**r, "shard": name, "row": i, "shard_sha256": digest} for i, r in enumerate(rows)]


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
    generate, frozen = manifest.get("generate", "all"), {}
    if generate != "all":  # the rows hold θ0's generated layers; θ0 itself comes with the cached features
        feats = load_features(out, ModelSpec.from_metadata(manifest["spec"]))
        if weights_sha256(feats.theta0) != manifest["theta0_sha256"] or not torch.equal(feats.start, theta0):
            raise IntegrityError(f"the original row or the features in {out} do not match θ0; rebuild the zoo")
        frozen = {"generate": generate, "frozen": feats.theta0, "index": feats.part.index}
    elif weights_sha256(theta0) != manifest["theta0_sha256"]:
        raise IntegrityError(f"the original row in {out} does not match θ0's recorded sha256; rebuild the zoo")
    layout = [(n, tuple(s)) for n, s in manifest["layout"]]
    return ZooTensors(weights, theta0[None], class_loss, mask, layout, manifest["num_classes"], **frozen), rows
