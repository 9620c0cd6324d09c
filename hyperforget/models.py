"""Target classifiers and the flat-vector view of their weights that the hypernetwork learns.

Layer order is the order of `named_parameters()`, i.e. the order layers are defined below; weights
before biases within a layer. `param_layout` records it, and `flatten`/`unflatten` use it, so a
flat vector from one model of an architecture is a valid vector for every other.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from math import prod
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

from hyperforget.errors import ConfigError, IntegrityError
from hyperforget.io import load_tensors, save_tensors, tensor_metadata

Layout = list[tuple[str, tuple[int, ...]]]
MLP_LAYOUT_NAMES = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")


class MLP(nn.Module):
    """G.pt's MNIST MLP: in → hidden → classes (784→10→10 has 7,960 parameters)."""

    def __init__(self, in_features: int, num_classes: int = 10, hidden: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    head = "fc2"  # the classifier head: the last Linear, fed by `features`

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features relu(fc1(x)) [B, hidden]: what a linear probe reads."""
        return torch.relu(self.fc1(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


class CNN(nn.Module):
    """A ~5k-parameter ConvNet (G.pt's CIFAR size): three 3×3 conv blocks, pooled to 3×3, one linear head."""

    def __init__(self, in_channels: int, num_classes: int = 10, width: int = 8):
        super().__init__()
        w2 = 2 * width
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, w2, 3, padding=1)
        self.conv3 = nn.Conv2d(w2, w2, 3, padding=1)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.squeeze = nn.AdaptiveAvgPool2d(3)
        self.fc = nn.Linear(w2 * 9, num_classes)

    head = "fc"

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features [B, 2·width·9]: the flattened input of the head `fc`."""
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.squeeze(torch.relu(self.conv3(x))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


ARCHITECTURES = ("mlp", "cnn")
HEAD_LAYERS = {"mlp": MLP.head, "cnn": CNN.head}  # the classifier head (last Linear) of each architecture


def head_parameters(model: nn.Module) -> list[str]:
    """Parameter names of the classifier head (the Linear that maps `features` to logits): weight, bias."""
    head = getattr(model, "head", None)
    if not isinstance(head, str) or not isinstance(getattr(model, head, None), nn.Linear):
        raise ConfigError(f"{type(model).__name__} declares no Linear classifier head; set its `head` attribute")
    return [f"{head}.{name}" for name, _ in getattr(model, head).named_parameters()]
_GLOBAL_RNG = threading.Lock()


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch's global RNG seeded with `seed` for the block and restored afterwards, one block at a time.
    Why: module initialisers draw from that RNG, and threads that build models at once (zoo units,
    the two hypernetworks in the build flow) would otherwise interleave their draws."""
    with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_model(
    arch: str, input_shape: tuple[int, ...], num_classes: int, width: int, seed: int | None = None
) -> nn.Module:
    """Build a freshly initialised model; with `seed`, initialisation is reproducible (and thread-safe)."""
    if arch not in ARCHITECTURES:
        raise ConfigError(f"model.arch: unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")

    def make() -> nn.Module:
        return MLP(prod(input_shape), num_classes, width) if arch == "mlp" else CNN(input_shape[0], num_classes, width)

    if seed is None:
        with _GLOBAL_RNG:  # an unseeded draw must not land inside another thread's seeded block
            return make()
    with seeded(seed):
        return make()


def param_layout(model: nn.Module) -> Layout:
    return [(name, tuple(p.shape)) for name, p in model.named_parameters()]


def num_params(layout: Layout) -> int:
    return sum(prod(shape) for _, shape in layout)


def flatten(params: Mapping[str, torch.Tensor] | nn.Module, layout: Layout | None = None) -> torch.Tensor:
    """Concatenate parameters into one vector (leading batch dims preserved) in layout order."""
    if isinstance(params, nn.Module):
        layout = layout or param_layout(params)
        params = dict(params.named_parameters())
    if layout is None:
        raise ValueError("flatten needs a layout when given a mapping")
    parts = []
    for name, shape in layout:
        t = params[name]
        batch = t.shape[: t.dim() - len(shape)]
        parts.append(t.detach().reshape(*batch, -1))
    return torch.cat(parts, dim=-1)


def unflatten(vec: torch.Tensor, layout: Layout) -> dict[str, torch.Tensor]:
    """Split a flat vector (or a batch of them, leading dims kept) back into named tensors."""
    total = num_params(layout)
    if vec.shape[-1] != total:
        raise IntegrityError(f"flat weight vector has {vec.shape[-1]} values but the architecture needs {total}")
    out, start = {}, 0
    batch = vec.shape[:-1]
    for name, shape in layout:
        n = prod(shape)
        out[name] = vec[..., start : start + n].reshape(*batch, *shape)
        start += n
    return out


def load_flat(model: nn.Module, vec: torch.Tensor) -> nn.Module:
    """Copy a flat vector into `model`'s parameters in place and return the model."""
    tensors = unflatten(vec, param_layout(model))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(tensors[name])
    return model


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild an architecture; stored in each weight file's metadata."""

    arch: str
    input_shape: tuple[int, ...]
    num_classes: int
    width: int

    def build(self, seed: int | None = None) -> nn.Module:
        return build_model(self.arch, self.input_shape, self.num_classes, self.width, seed)

    def to_metadata(self) -> dict[str, str]:
        return {"arch": self.arch, "input_shape": json.dumps(list(self.input_shape)),
                "num_classes": str(self.num_classes), "width": str(self.width)}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> ModelSpec:
        try:
            return cls(meta["arch"], tuple(json.loads(meta["input_shape"])), int(meta["num_classes"]),
                       int(meta["width"]))
        except (KeyError, ValueError) as e:
            raise IntegrityError(f"weight file metadata lacks the model spec ({e}); re-create the file") from e


def save_model(path: str | Path, model: nn.Module, spec: ModelSpec, extra: Mapping[str, str] | None = None) -> str:
    """Save weights as safetensors (+ sha256 sidecar) with the spec in its metadata; return the digest."""
    return save_tensors(path, dict(model.state_dict()), metadata={**spec.to_metadata(), **(extra or {})})


def load_model(path: str | Path) -> tuple[nn.Module, ModelSpec]:
    """Rebuild the model a weight file describes, after verifying its checksum."""
    tensors = load_tensors(path)
    spec = ModelSpec.from_metadata(tensor_metadata(path))
    model = spec.build()
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise IntegrityError(f"{path} does not fit {spec}: {e}") from e
    return model.eval(), spec


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Logits of `model` on `x`, in eval mode, batched to bound memory."""
    model.eval()
    return torch.cat([model(xb) for xb in x.split(batch_size)]) if len(x) else torch.empty(0)


def batched_logits(
    template: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, shared: bool = False
) -> torch.Tensor:
    """Logits [N, B, C] of N stacked models on per-model inputs [N, B, ...] (or one `shared` batch [B, ...])."""

    def one(p: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
        return functional_call(template, p, (xb,))

    return torch.vmap(one, in_dims=(0, None if shared else 0))(params, x)
