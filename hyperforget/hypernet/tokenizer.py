"""Flat weight vectors ↔ per-layer tokens, per-layer normalisation, and MLP hidden-unit permutation.

As in G.pt, every layer is cut into its own chunks (a token never mixes two layers), so each token
position always holds the same parameters and can own its encoder/decoder. The tokenizer is an
`nn.Module` only so that `.to(device)` moves its index tables along with the denoiser; all its
buffers are non-persistent (the normaliser is saved explicitly via `normaliser_tensors`).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import ceil, prod

import torch
import torch.nn.functional as F
from torch import nn

from hyperforget.base.errors import ConfigError, IntegrityError
from hyperforget.models.nets import MLP_LAYOUT_NAMES, Layout, num_params


class Tokenizer(nn.Module):
    """Chunks each layer into tokens of `chunk_size` values (last chunk of a layer zero-padded)."""

    def __init__(self, layout: Layout, chunk_size: int):
        super().__init__()
        if chunk_size < 1:
            raise ConfigError(f"hypernet.chunk_size must be >= 1, got {chunk_size}")
        self.layout = [(name, tuple(shape)) for name, shape in layout]
        self.chunk_size = chunk_size
        self.num_params = num_params(self.layout)
        sizes = [prod(shape) for _, shape in self.layout]
        rows, layers, offset = [], [], 0
        for li, n in enumerate(sizes):
            k = ceil(n / chunk_size)
            idx = torch.arange(offset, offset + k * chunk_size)
            idx[idx >= offset + n] = self.num_params  # points at the appended zero
            rows.append(idx.view(k, chunk_size))
            layers += [li] * k
            offset += n
        gather = torch.cat(rows)
        self.register_buffer("gather", gather, persistent=False)  # [T, chunk] → index into padded vec
        self.register_buffer("scatter", (gather.flatten() < self.num_params).nonzero().squeeze(1), persistent=False)
        self.register_buffer("token_layer", torch.tensor(layers), persistent=False)
        self.register_buffer("param_layer", torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)),
                             persistent=False)
        self.register_buffer("mean", None, persistent=False)
        self.register_buffer("std", None, persistent=False)

    @property
    def num_tokens(self) -> int:
        return self.gather.shape[0]

    @property
    def num_layers(self) -> int:
        return len(self.layout)

    def encode(self, vec: torch.Tensor) -> torch.Tensor:
        """[..., P] → [..., T, chunk_size]."""
        self._check(vec)
        return F.pad(vec, (0, 1))[..., self.gather]

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """[..., T, chunk_size] → [..., P]; padding values are dropped."""
        return tokens.flatten(-2)[..., self.scatter]

    def fit_normaliser(self, vecs: torch.Tensor, eps: float = 1e-8, chunk: int = 1 << 22) -> Tokenizer:
        """Per-layer mean and std over a zoo [N, P], so every layer enters the diffusion at unit scale
        (G.pt scales parameters to a fixed std; per layer because biases and weights differ in scale).

        Two passes in float64 over about `chunk` values of a layer at a time: a float64 copy of the whole zoo
        (and the temporaries of its std) came to about 4× the zoo's own size, which on the 10k split's CNN with
        141 class sets (25k rows of 59k values, 5.9 GB) ran a 24 GiB machine out of memory."""
        self._check(vecs)
        flat = vecs.reshape(-1, self.num_params)
        means, stds, start = [], [], 0
        for _, shape in self.layout:
            end = start + prod(shape)
            rows, count = max(1, chunk // (end - start)), flat.shape[0] * (end - start)
            chunks = range(0, flat.shape[0], rows)
            mean = sum(flat[i : i + rows, start:end].double().sum() for i in chunks) / count
            var = sum((flat[i : i + rows, start:end].double() - mean).square().sum() for i in chunks) / count
            means.append(mean)
            stds.append(var.sqrt())
            start = end
        device = self.gather.device
        self.mean = torch.stack(means).float().to(device)
        self.std = torch.stack(stds).clamp_min(eps).float().to(device)
        return self

    def normalise(self, vec: torch.Tensor) -> torch.Tensor:
        """(vec − mean) / std per layer, dividing in place the difference it made: a whole zoo then costs one
        copy, not two (the same values as the plain expression)."""
        self._check(vec, fitted=True)
        return (vec - self.mean[self.param_layer]).div_(self.std[self.param_layer])

    def denormalise(self, vec: torch.Tensor) -> torch.Tensor:
        self._check(vec, fitted=True)
        return vec * self.std[self.param_layer] + self.mean[self.param_layer]

    def normaliser_tensors(self) -> dict[str, torch.Tensor]:
        self._check(None, fitted=True)
        return {"mean": self.mean, "std": self.std}

    def load_normaliser(self, tensors: dict[str, torch.Tensor]) -> Tokenizer:
        for key in ("mean", "std"):
            t = tensors.get(key)
            if t is None or t.shape != (self.num_layers,):
                raise IntegrityError(f"normaliser {key!r} must have shape ({self.num_layers},) for this layout")
        self.mean = tensors["mean"].float().to(self.gather.device)
        self.std = tensors["std"].float().to(self.gather.device)
        return self

    def _check(self, vec: torch.Tensor | None, fitted: bool = False) -> None:
        if vec is not None and vec.shape[-1] != self.num_params:
            raise IntegrityError(f"weight vector has {vec.shape[-1]} values but the layout needs {self.num_params}")
        if fitted and self.mean is None:
            raise RuntimeError("call fit_normaliser or load_normaliser before normalising")


def check_mlp_layout(layout: Layout) -> None:
    names = tuple(name for name, _ in layout)
    if names != MLP_LAYOUT_NAMES:
        raise ConfigError(f"hypernet.permute_augment needs the MLP layout {MLP_LAYOUT_NAMES}, got {names}")


def permute_mlp_hidden(vecs: Sequence[torch.Tensor], layout: Layout, generator: torch.Generator) -> list[torch.Tensor]:
    """Permute the MLP's hidden units, one random permutation per row shared by all `vecs` ([N, P] each).

    Used as G.pt's augmentation: the same permutation goes to the noisy input, the starting weights and
    the target so the pair stays consistent, and the network's function is unchanged. Works on
    normalised vectors too, since normalisation is per layer.
    """
    check_mlp_layout(layout)
    hidden, n_in = layout[0][1]
    rows = vecs[0].shape[0]
    perm = torch.argsort(torch.rand(rows, hidden, generator=generator), dim=1).to(vecs[0].device)
    w1 = hidden * n_in
    classes = layout[2][1][0]
    w1_idx = (perm[:, :, None] * n_in + torch.arange(n_in, device=perm.device)).flatten(1)
    b1_idx = w1 + perm
    rows_of_fc2 = torch.arange(classes, device=perm.device)[None, :, None] * hidden
    w2_idx = (w1 + hidden + rows_of_fc2 + perm[:, None, :]).flatten(1)
    b2_idx = torch.arange(w1 + hidden + classes * hidden, num_params(layout), device=perm.device).expand(rows, -1)
    index = torch.cat([w1_idx, b1_idx, w2_idx, b2_idx], dim=1)
    return [v.gather(1, index) for v in vecs]
