"""DDPM over normalised flat weights (G.pt): schedule, training loop with resumable checkpoints, DDIM sampler.

1,000 steps, linear β 1e-4→0.02, the denoiser predicts x0 and is trained with MSE in the normalised
weight space. Every random draw of training step s comes from a generator seeded with (seed, s), so a
run resumed from a checkpoint draws exactly what the uninterrupted run would have drawn.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from hyperforget.base.errors import ConfigError
from hyperforget.config.options import HypernetConfig
from hyperforget.hypernet.checkpoint import CHECKPOINT_JSON, load_checkpoint, read_meta, save_checkpoint
from hyperforget.hypernet.conditioning import conditioning
from hyperforget.hypernet.denoiser import Denoiser
from hyperforget.hypernet.tokenizer import Tokenizer, check_mlp_layout, permute_mlp_hidden
from hyperforget.models.nets import Layout, seeded
from hyperforget.zoo.requests import held_out_rows, refuse_held_out
from hyperforget.zoo.shards import ZooTensors

log = logging.getLogger(__name__)

NUM_TIMESTEPS = 1000
# settings that do not change the trained weights; a resumed run may change them
_RESUMABLE_CHANGES = {"checkpoint_every", "device", "sample_steps"}


def alphas_cumprod(device: torch.device | str = "cpu") -> torch.Tensor:
    betas = torch.linspace(1e-4, 0.02, NUM_TIMESTEPS, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0).float().to(device)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("hypernet.device is 'cuda' but no CUDA device is available; use 'cpu' or 'auto'")
    return torch.device(name)


def build_denoiser(cfg: HypernetConfig, layout: Layout, num_classes: int) -> Denoiser:
    """A fresh denoiser initialised from cfg.seed without touching the global RNG (thread-safe)."""
    with seeded(cfg.seed):
        return Denoiser(Tokenizer(layout, cfg.chunk_size), num_classes, cfg.variant, cfg.width, cfg.depth, cfg.heads)


def denoising_loss(model: Denoiser, x0: torch.Tensor, start: torch.Tensor, cond: dict[str, torch.Tensor],
                   t: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """MSE between the clean normalised weights and the model's x0 prediction from step t."""
    a = abar[t][:, None]
    noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
    return F.mse_loss(model(noisy, start, t, cond), x0)


def lr_at(cfg: HypernetConfig, step: int) -> float:
    """Linear warmup, then cosine decay to zero at cfg.steps."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: Denoiser, cfg: HypernetConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (and per-position weight stacks) only, as in nanoGPT."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999))


@dataclass
class Hypernet:
    """A trained hypernetwork ready to sample: the EMA denoiser (with its fitted tokenizer) and its config."""

    model: Denoiser
    config: HypernetConfig
    num_classes: int
    step: int

    @property
    def tokenizer(self) -> Tokenizer:
        return self.model.tokenizer


def train_hypernet(data: ZooTensors, cfg: HypernetConfig, out_dir: str | Path, progress: bool = True,
                   resume: bool = True, held_out: Sequence[Sequence[int]] = ()) -> dict[str, Any]:
    """Train (or resume training) a denoiser on the zoo; checkpoints land in `out_dir`.

    `held_out`: the class sets kept out for measuring generalisation (`ZooConfig.held_out`); a zoo row whose
    forgotten classes are one of them is refused (ConfigError) before anything trains.
    Returns a summary: out_dir, step, final_loss, losses ([step, mean loss] per interval), seconds,
    steps_per_s (this call), resumed_from, num_params, num_tokens, device.
    """
    bad = held_out_rows(data.forget_mask, held_out)
    if bad.any():
        refuse_held_out([data.forget_mask[i].nonzero().flatten().tolist() for i in bad.nonzero().flatten()],
                        held_out, "hypernetwork's training data")
    out, device = Path(out_dir), resolve_device(cfg.device)
    if cfg.generate != data.generate:
        raise ConfigError(f"hypernet.generate is {cfg.generate!r} but the zoo holds the {data.generate!r} layers; "
                          f"rebuild the zoo with hypernet.generate: {cfg.generate} (dvc repro zoo) or set it back")
    if cfg.permute_augment:
        check_mlp_layout(data.layout)
    model = build_denoiser(cfg, data.layout, data.num_classes).to(device)
    tok = model.tokenizer.fit_normaliser(data.weights.to(device))
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = make_optimizer(model, cfg)
    meta = {"config": cfg.model_dump(), "layout": [[n, list(s)] for n, s in data.layout],
            "num_classes": data.num_classes, "data_sha256": data.fingerprint(), "num_tokens": tok.num_tokens}
    step, losses, resumed_from = 0, [], None
    if resume and (out / CHECKPOINT_JSON).exists():
        old = read_meta(out)
        _check_resumable(old, meta, out)
        load_checkpoint(out, old, ema=ema, model=model, opt=opt)
        step, losses, resumed_from = old["step"], old["losses"], old["step"]

    weights = tok.normalise(data.weights.to(device))
    start = tok.normalise(data.start.to(device)).expand_as(weights)
    cond = {k: v.to(device) for k, v in conditioning(data.class_loss, data.forget_mask, cfg.variant).items()}
    abar = alphas_cumprod(device)
    log_every = max(1, cfg.steps // 100)
    acc, acc_n, t0, first = torch.zeros((), device=device), 0, time.perf_counter(), step
    bar = _progress_bar(progress, cfg.steps, step)
    model.train()
    while step < cfg.steps:
        g = torch.Generator().manual_seed((cfg.seed << 32) + step)  # this step's draws, whatever came before
        idx, t, noise = (x.to(device) for x in _draw(g, data.num_rows, cfg.batch_size, tok.num_params))
        x0, s = weights[idx], start[idx]
        if cfg.permute_augment:
            x0, s = permute_mlp_hidden([x0, s], data.layout, g)
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step)
        loss = denoising_loss(model, x0, s, {k: v[idx] for k, v in cond.items()}, t, noise, abar)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        decay = min(cfg.ema, (1 + step) / (10 + step))  # short warmup so early EMA is not stuck at init
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters(), strict=True):
                e.lerp_(p, 1 - decay)
        step += 1
        acc, acc_n = acc + loss.detach(), acc_n + 1
        at_ckpt = step % cfg.checkpoint_every == 0 or step == cfg.steps
        if step % log_every == 0 or at_ckpt:
            losses.append([step, (acc / acc_n).item()])
            acc, acc_n = torch.zeros((), device=device), 0
            _report(bar, progress, step, cfg.steps, losses[-1][1], len(losses) % 10 == 0)
        if at_ckpt:
            # no wall time in the folder: it is a DVC output, and identical weights must hash the same
            save_checkpoint(out, step, model, ema, opt, tok, {**meta, "losses": losses})
    if bar is not None:
        bar.close()
    session = time.perf_counter() - t0
    return {"out_dir": str(out), "step": step, "final_loss": losses[-1][1] if losses else None, "losses": losses,
            "seconds": session, "steps_per_s": (step - first) / session if step > first else None,
            "resumed_from": resumed_from, "num_params": sum(p.numel() for p in model.parameters()),
            "num_tokens": tok.num_tokens, "device": str(device)}


def load_hypernet(out_dir: str | Path, device: str | None = None) -> Hypernet:
    """Load the EMA denoiser and normaliser from a checkpoint folder, verifying every sha256."""
    meta = read_meta(Path(out_dir))
    cfg = HypernetConfig.model_validate(meta["config"])
    layout = [(n, tuple(s)) for n, s in meta["layout"]]
    model = build_denoiser(cfg, layout, meta["num_classes"])
    load_checkpoint(Path(out_dir), meta, ema=model)
    return Hypernet(model.to(resolve_device(device or cfg.device)).eval(), cfg, meta["num_classes"], meta["step"])


def candidate_seeds(seed: int, k: int) -> list[int]:
    """The noise seeds of the k candidates of a draw seeded `seed` (one generator per candidate)."""
    return [seed * 1_000_003 + i for i in range(k)]


@torch.no_grad()
def sample(hypernet: Hypernet, start: torch.Tensor, cond: dict[str, torch.Tensor], k: int | None = None,
           steps: int | None = None, seed: int = 0, seeds: Sequence[int] | None = None) -> torch.Tensor:
    """Draw K weight vectors [K,P] in ONE batch with DDIM (eta 0) over `steps` timesteps.

    `start` [P] is the model to unlearn (θ0). `cond` is either one request's unbatched conditioning
    (`forget_mask` [C]; every candidate gets it) or a batch of K conditionings (`forget_mask` [K, C]:
    candidate i gets row i), so all prompts of a request and all their candidates are one call.
    Candidate i starts from x_T drawn by its own generator seeded `seeds[i]` (default
    `candidate_seeds(seed, K)`): candidate i of a batch is the sample a single call with `seeds=[seeds[i]]`
    and row i's conditioning returns (up to the float summation order of batched matrix products).
    K = len(seeds), else the conditioning's batch size, else k (default 16).
    """
    model, tok = hypernet.model, hypernet.tokenizer
    device = next(model.parameters()).device
    steps = steps or hypernet.config.sample_steps
    if not 1 <= steps <= NUM_TIMESTEPS:
        raise ConfigError(f"sample steps must be in 1..{NUM_TIMESTEPS}, got {steps}")
    batched = cond["forget_mask"].dim() == 2
    n = len(seeds) if seeds is not None else cond["forget_mask"].shape[0] if batched else (k or 16)
    if (batched and cond["forget_mask"].shape[0] != n) or (k is not None and k != n):
        raise ConfigError(f"sample: {n} candidates asked for, but k={k} and the conditioning holds "
                          f"{cond['forget_mask'].shape[0] if batched else 1} rows")
    seeds = list(seeds) if seeds is not None else candidate_seeds(seed, n)
    abar = alphas_cumprod(device)
    x = torch.stack([torch.randn(tok.num_params, generator=torch.Generator().manual_seed(sd))
                     for sd in seeds]).to(device)  # one generator per candidate: batching never changes x_T
    s = tok.normalise(start.reshape(1, -1).float().to(device)).expand(n, -1)
    c = {key: v.float().to(device) if batched else v.float().to(device).expand(n, *v.shape) for key, v in cond.items()}
    ts = torch.linspace(NUM_TIMESTEPS - 1, 0, steps).round().long().unique_consecutive().tolist()
    context = model.context(s, c)  # start and conditioning tokens: the same at every step
    for i, t in enumerate(ts):
        x0 = model(x, s, torch.full((n,), t, device=device), c, context)
        a, a_prev = abar[t], (abar[ts[i + 1]] if i + 1 < len(ts) else torch.ones((), device=device))
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return tok.denormalise(x).cpu()


def _draw(g: torch.Generator, rows: int, batch: int, params: int) -> tuple[torch.Tensor, ...]:
    """Row indices, diffusion steps and noise for one minibatch, drawn on the CPU for device-independent runs."""
    return (torch.randint(rows, (batch,), generator=g), torch.randint(NUM_TIMESTEPS, (batch,), generator=g),
            torch.randn(batch, params, generator=g))


def _check_resumable(old: dict[str, Any], new: dict[str, Any], out: Path) -> None:
    if old.get("data_sha256") != new["data_sha256"] or old.get("layout") != new["layout"]:
        raise ConfigError(f"{out} holds a checkpoint trained on different zoo data; delete it or pass resume=False")
    changed = sorted(k for k, v in new["config"].items()
                     if k not in _RESUMABLE_CHANGES and old.get("config", {}).get(k) != v)
    if changed:
        raise ConfigError(f"{out} holds a checkpoint trained with different hypernet settings ({', '.join(changed)}); "
                          "restore them, delete the folder, or pass resume=False")


def _progress_bar(progress: bool, total: int, initial: int):
    if not (progress and sys.stderr.isatty()):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="hypernet", unit="step")


def _report(bar, progress: bool, step: int, total: int, loss: float, log_line: bool) -> None:
    if bar is not None:
        bar.n = step
        bar.set_postfix(loss=f"{loss:.4f}")
    elif progress and (log_line or step == total):
        log.info("hypernet step %d/%d loss %.4f", step, total, loss)

