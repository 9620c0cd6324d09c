"""G.pt-style transformer denoiser: predicts clean (normalised) weights from noisy ones.

Sequence: T noisy-target tokens, T starting-weight tokens, 1 diffusion-step token, then conditioning
tokens (3 for DiHyFo-1: forget loss, retain loss, forget mask; C for DiHyFo-2: one per class, its loss
embedding + the class's embedding + a kept/forgotten embedding). Every
chunk position has its own linear encoder/decoder (a batched [T, in, out] weight and one einsum), the
transformer attends without a mask, and the output is a global residual on the starting weights with
zero-initialised decoders, so an untrained model returns θ0 exactly and training learns the change.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hyperforget.base.errors import ConfigError
from hyperforget.config.options import VARIANTS
from hyperforget.hypernet.tokenizer import Tokenizer

FREQ_DIM = 128  # sin+cos features per frequency embedding


def frequency_embedding(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """[...] → [..., 2F]: cos and sin of x at each frequency."""
    args = x.float()[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def timestep_freqs(dim: int = FREQ_DIM, max_period: float = 10_000.0) -> torch.Tensor:
    """DiT/DDPM frequencies for integer steps 0..999."""
    half = dim // 2
    return torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)


def loss_freqs(dim: int = FREQ_DIM) -> torch.Tensor:
    """Geometric frequencies π/2 … 64π for log1p(loss) ∈ [0, ~2.5].

    Why log1p: cross-entropy spans 0..~10 nats, with retain losses crowded near 0 (0.01–0.3) and
    forget losses spread over 2–10. log1p keeps small losses resolvable (≈ linear near 0) and
    compresses the long upper tail; the lowest frequency's half-period (2) then covers the whole
    range without wrapping, and the highest resolves ~1% relative changes.
    """
    return math.pi * 2.0 ** torch.linspace(-1.0, 6.0, dim // 2)


def loss_features(loss: torch.Tensor) -> torch.Tensor:
    return torch.log1p(loss.float().clamp_min(0))


class PositionLinear(nn.Module):
    """A separate linear map per token position: x [B,T,in] → [B,T,out] with weight [T,in,out]."""

    def __init__(self, positions: int, d_in: int, d_out: int, zero: bool = False):
        super().__init__()
        bound = 1 / math.sqrt(d_in)
        weight = torch.empty(positions, d_in, d_out)
        self.weight = nn.Parameter(weight.zero_() if zero else weight.uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(positions, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bti,tio->bto", x, self.weight) + self.bias


class ScalarEmbedder(nn.Module):
    """Scalar → frequency embedding → MLP → one token."""

    def __init__(self, width: int, freqs: torch.Tensor):
        super().__init__()
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * freqs.numel(), width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(frequency_embedding(x, self.freqs))


class Denoiser(nn.Module):
    """x0-predicting denoiser over a tokenizer's layout; `variant` picks the conditioning tokens."""

    def __init__(self, tokenizer: Tokenizer, num_classes: int, variant: str = "dihyfo2",
                 width: int = 64, depth: int = 2, heads: int = 4):
        super().__init__()
        if variant not in VARIANTS:
            raise ConfigError(f"hypernet.variant: unknown {variant!r}; choose one of {', '.join(VARIANTS)}")
        self.tokenizer, self.variant, self.num_classes = tokenizer, variant, num_classes
        t, c = tokenizer.num_tokens, tokenizer.chunk_size
        self.enc_noisy = PositionLinear(t, c, width)
        self.enc_start = PositionLinear(t, c, width)
        self.dec = PositionLinear(t, width, c, zero=True)
        self.step = ScalarEmbedder(width, timestep_freqs())
        if variant == "dihyfo1":
            self.forget_loss = ScalarEmbedder(width, loss_freqs())
            self.retain_loss = ScalarEmbedder(width, loss_freqs())
            self.forget_mask = nn.Linear(num_classes, width)
            n_cond = 3
        else:
            self.class_loss = ScalarEmbedder(width, loss_freqs())
            self.class_emb = nn.Parameter(torch.randn(num_classes, width) * 0.02)
            self.mask_emb = nn.Parameter(torch.randn(2, width) * 0.02)  # kept / forgotten, added per class token
            n_cond = num_classes
        self.pos = nn.Parameter(torch.randn(2 * t + 1 + n_cond, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(width), enable_nested_tensor=False)

    def cond_tokens(self, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """Conditioning dict (see `hypernet.data.conditioning`) → [B, n_cond, width]."""
        try:
            if self.variant == "dihyfo1":
                mask = cond["forget_mask"].float()
                self._check_classes(mask)
                return torch.stack([self.forget_loss(loss_features(cond["forget_loss"])),
                                    self.retain_loss(loss_features(cond["retain_loss"])),
                                    self.forget_mask(mask)], dim=1)
            losses, mask = cond["class_loss"], cond["forget_mask"]
            self._check_classes(losses)
            self._check_classes(mask)
            # torch.where, not mask_emb[index]: the backward of an index gather accumulates in a thread-dependent
            # order on CPU, and the hypernet's weights must be bitwise repeatable (they are a DVC output)
            kept_or_forgotten = torch.where(mask[..., None] > 0.5, self.mask_emb[1], self.mask_emb[0])
            return self.class_loss(loss_features(losses)) + self.class_emb + kept_or_forgotten
        except KeyError as e:
            raise ConfigError(f"{self.variant} conditioning needs {e}; build it with hypernet.data.conditioning") from e

    def context(self, start: torch.Tensor, cond: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The tokens that stay fixed while sampling (encoded starting weights, conditioning): computed once."""
        return self.enc_start(self.tokenizer.encode(start)), self.cond_tokens(cond)

    def forward(self, noisy: torch.Tensor, start: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor],
                context: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """noisy, start [B,P] (normalised), t [B] integer steps → predicted clean weights [B,P]; `context` is
        `self.context(start, cond)` when the caller reuses it over several steps (the same numbers)."""
        tok = self.tokenizer
        start_tokens, cond_tokens = context if context is not None else self.context(start, cond)
        h = torch.cat([self.enc_noisy(tok.encode(noisy)), start_tokens, self.step(t)[:, None], cond_tokens], dim=1)
        h = self.blocks(h + self.pos)
        return start + tok.decode(self.dec(h[:, : tok.num_tokens]))

    def _check_classes(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.num_classes:
            raise ConfigError(f"conditioning has {x.shape[-1]} classes; the hypernetwork has {self.num_classes}")
