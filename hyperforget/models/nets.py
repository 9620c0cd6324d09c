"""Target classifiers and the flat-vector view of their weights that the hypernetwork learns.

Layer order is the order of `named_parameters()`, i.e. the order layers are defined below; weights
before biases within a layer. `param_layout` records it, and `flatten`/`unflatten` use it, so a
flat vector from one model of an architecture is a valid vector for every other.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from math import prod
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

from hyperforget.base.errors import ConfigError, IntegrityError
from hyperforget.base.io import load_tensors, save_tensors, tensor_metadata

Layout = list[tuple[str, tuple[int, ...]]]
MLP_LAYOUT_NAMES = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")


GENERATE = ("all", "block_head", "head", "dense")  # layer sets a hypernetwork may generate (hypernet.generate)

# Images per forward pass when a model is only evaluated. Why 256, not thousands: on a CPU a conv net's activations
# for a large batch leave the caches (LeNet-5's first block on 1,000 MNIST images: 19 MB), and the pass slows down;
# LeNet-5 on MNIST's 10,000 test images took 234 ms in batches of 256 against 462 ms in batches of 4,096 (228–328 ms
# from 64 to 1,024), the logits bit for bit the same (bench/inference_batch.py). An MLP does not care.
INFERENCE_BATCH = 256


class Classifier(nn.Module):
    """trunk → block → head: the shape every target model has, so partial generation can cut it.

    `head` names the classifier head (the last Linear, fed by `features`); `block` the layers of the last
    block before it. A cut names what is generated (`GENERATE`): "head" (the head alone), "block_head" (the
    block and the head), "dense" (every fully-connected layer after the last non-Linear one: LeNet's fc1–fc3,
    the MLP's both, the CNN's head) or "all". `frozen_features(x, cut)` is what the frozen rest computes: the
    input of the generated layers; `forward(h, cut)` runs only the generated layers on it, so
    `forward(frozen_features(x, cut), cut) == forward(x)`. With the default cut "all", forward is the model.
    Why "dense": a linear probe still reads a forgotten class from the penultimate features while fc1 keeps
    θ0's weights (issue 23: EU-2 fails the probe on LeNet, EU-3 passes), so generating fc2 + fc3 alone
    cannot look like a retrain there.
    """

    head: str
    block: tuple[str, ...]

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def last_block(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def features(self, x: torch.Tensor, cut: str = "all") -> torch.Tensor:
        """Penultimate features [B, F]: the input of the head, what a linear probe reads. With a `cut`, `x` is what
        the frozen part computes (`frozen_features(x, cut)`, e.g. the zoo's cache) and only the generated layers
        before the head run on it."""
        _check_cut(cut)
        if cut == "dense":
            return run_stages(self.dense_stages()[:-1], x)
        if cut == "all":
            x = self.trunk(x)
        return x if cut == "head" else self.last_block(x)

    def frozen_features(self, x: torch.Tensor, cut: str) -> torch.Tensor:
        _check_cut(cut)
        if cut == "all":
            return x
        if cut == "dense":
            stages = self.stages()
            return run_stages(stages[:len(stages) - len(self.dense_stages())], x)
        h = self.trunk(x)
        return h if cut == "block_head" else self.last_block(h)

    def stages(self) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
        """The forward pass as one stage per parametric layer, in order: (layer name, the layer with what
        follows it up to the next layer). Running every stage is `forward`; the last k are what EU-k
        re-initialises and trains on what the first n − k compute."""
        raise NotImplementedError

    def dense_stages(self) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
        """The trailing stages whose layer is an nn.Linear (the cut "dense"); never empty, the head is Linear."""
        stages = self.stages()
        n = 0
        while n < len(stages) and isinstance(getattr(self, stages[-1 - n][0]), nn.Linear):
            n += 1
        return stages[len(stages) - n:]

    def forward(self, x: torch.Tensor, cut: str = "all") -> torch.Tensor:
        return getattr(self, self.head)(self.features(x, cut))


def run_stages(stages: list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]], x: torch.Tensor) -> torch.Tensor:
    """`x` through `stages` (a slice of `Classifier.stages()`) in order."""
    for _, fn in stages:
        x = fn(x)
    return x


def _check_cut(cut: str) -> None:
    if cut not in GENERATE:
        raise ConfigError(f"hypernet.generate: unknown layer set {cut!r}; choose one of {', '.join(GENERATE)}")


class MLP(Classifier):
    """G.pt's MNIST MLP: in → hidden → classes (784→10→10 has 7,960 parameters). Its last block is fc1, so
    block_head is every layer (with the flattened input as "features")."""

    head, block = "fc2", ("fc1",)

    def __init__(self, in_features: int, num_classes: int = 10, hidden: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def last_block(self, h: torch.Tensor) -> torch.Tensor:
        """relu(fc1(x)) [B, hidden]."""
        return torch.relu(self.fc1(h))

    def stages(self) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
        return [("fc1", lambda x: torch.relu(self.fc1(x.flatten(1)))), ("fc2", self.fc2)]


class CNN(Classifier):
    """A ~5k-parameter ConvNet (G.pt's CIFAR size): three 3×3 conv blocks, pooled to 3×3, one linear head;
    its last block is conv3 (+ the 3×3 pooling)."""

    head, block = "fc", ("conv3",)

    def __init__(self, in_channels: int, num_classes: int = 10, width: int = 8):
        super().__init__()
        w2 = 2 * width
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, w2, 3, padding=1)
        self.conv3 = nn.Conv2d(w2, w2, 3, padding=1)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.squeeze = nn.AdaptiveAvgPool2d(3)
        self.fc = nn.Linear(w2 * 9, num_classes)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        return self.pool(torch.relu(self.conv2(x)))

    def last_block(self, h: torch.Tensor) -> torch.Tensor:
        """[B, 2·width·9]: the flattened input of the head `fc`."""
        return self.squeeze(torch.relu(self.conv3(h))).flatten(1)

    def stages(self) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
        return [("conv1", lambda x: self.pool(torch.relu(self.conv1(x)))),
                ("conv2", lambda x: self.pool(torch.relu(self.conv2(x)))),
                ("conv3", self.last_block), ("fc", self.fc)]


class LeNet(Classifier):
    """LeNet-5 as deployed on MNIST (61,706 parameters at 28×28): conv 6@5×5 (pad 2) → max-pool → conv 16@5×5 →
    max-pool → fc 120 → fc 84 → fc 10, ReLU. The last block is fc2 (the 84 units), the head fc3. On inputs
    too small for an unpadded second conv (digits' 8×8), conv2 is padded by 2 as well (a LeNet-like net)."""

    head, block = "fc3", ("fc2",)

    def __init__(self, input_shape: tuple[int, ...], num_classes: int = 10):
        super().__init__()
        channels, height, width = input_shape
        side = min(height, width) // 2
        pad = 0 if side >= 10 else 2
        self.conv1 = nn.Conv2d(channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5, padding=pad)
        self.pool = nn.MaxPool2d(2)
        h, w = ((height // 2 + 2 * pad - 4) // 2, (width // 2 + 2 * pad - 4) // 2)
        self.fc1 = nn.Linear(16 * h * w, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The conv blocks and fc1: relu(fc1(...)) [B, 120]."""
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return torch.relu(self.fc1(x.flatten(1)))

    def last_block(self, h: torch.Tensor) -> torch.Tensor:
        """relu(fc2(h)) [B, 84]."""
        return torch.relu(self.fc2(h))

    def stages(self) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
        return [("conv1", lambda x: self.pool(torch.relu(self.conv1(x)))),
                ("conv2", lambda x: self.pool(torch.relu(self.conv2(x))).flatten(1)),
                ("fc1", lambda h: torch.relu(self.fc1(h))), ("fc2", self.last_block), ("fc3", self.fc3)]


ARCHITECTURES = ("mlp", "cnn", "lenet")
MODEL_CLASSES: dict[str, type[Classifier]] = {"mlp": MLP, "cnn": CNN, "lenet": LeNet}
HEAD_LAYERS = {arch: cls.head for arch, cls in MODEL_CLASSES.items()}  # the classifier head (last Linear) of each


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

    def make() -> nn.Module:  # lenet has a fixed size: `width` is ignored
        if arch == "lenet":
            return LeNet(tuple(input_shape), num_classes)
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


def generated_layers(model: nn.Module, part: str) -> tuple[str, ...]:
    """The layers (module names) that `part` (hypernet.generate) generates in `model`."""
    _check_cut(part)
    if not isinstance(model, Classifier):
        raise ConfigError(f"{type(model).__name__} is not a Classifier: it cannot be generated in parts")
    if part == "all":
        return tuple(dict.fromkeys(name.rsplit(".", 1)[0] for name, _ in model.named_parameters()))
    if part == "dense":
        return tuple(name for name, _ in model.dense_stages())
    return (*model.block, model.head) if part == "block_head" else (model.head,)


def generated_hidden_stages(model: nn.Module, part: str) -> list[tuple[str, Callable]]:
    """`model`'s stages (`Classifier.stages`) that `part` generates, in order, the head excluded: the layers a
    repair after sampling may edit (`unlearn.scale`, `unlearn.erase`) before the head is refit on them."""
    names = set(generated_layers(model, part))
    return [s for s in model.stages() if s[0] in names][:-1]


@dataclass(frozen=True)
class Part:
    """The layers a hypernetwork generates as a slice of the flat weight vector: `layout` is their sub-layout
    (in `param_layout` order), `index` their positions in the full `flatten` vector of `size` values. Every
    other value is θ0's, frozen: `assemble` puts generated values into a copy of θ0, `extract` takes them out."""

    name: str
    layout: Layout
    index: torch.Tensor
    size: int

    @property
    def is_all(self) -> bool:
        return len(self.index) == self.size

    def extract(self, vec: torch.Tensor) -> torch.Tensor:
        if vec.shape[-1] != self.size:
            raise IntegrityError(f"flat weight vector has {vec.shape[-1]} values, the architecture {self.size}")
        return vec[..., self.index]

    def assemble(self, frozen: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        """Full vectors [..., size]: θ0's `frozen` [size] with the generated values [..., len(index)] in place."""
        if generated.shape[-1] != len(self.index):
            raise IntegrityError(f"generated vector has {generated.shape[-1]} values but {self.name} needs "
                                 f"{len(self.index)}")
        out = frozen.to(generated.dtype).repeat(*generated.shape[:-1], 1)
        out[..., self.index] = generated
        return out


def generated_part(model: nn.Module, part: str) -> Part:
    """`part`'s slice of `model`'s flat vector (any instance of the architecture: shapes are all it reads)."""
    layers = set(generated_layers(model, part))
    layout, index, offset = [], [], 0
    for name, shape in param_layout(model):
        if name.rsplit(".", 1)[0] in layers:
            layout.append((name, shape))
            index.append(torch.arange(offset, offset + prod(shape)))
        offset += prod(shape)
    return Part(part, layout, torch.cat(index), offset)


@torch.no_grad()
def frozen_features(model: nn.Module, x: torch.Tensor, part: str, batch_size: int = INFERENCE_BATCH) -> torch.Tensor:
    """What the frozen layers of `model` compute on `x` for `part` (the generated layers' input), in eval mode."""
    model.eval()
    if part == "all":
        return x
    return torch.cat([model.frozen_features(xb, part) for xb in x.split(batch_size)]) if len(x) else x[:0]


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
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = INFERENCE_BATCH, cut: str = "all") -> torch.Tensor:
    """Logits of `model` on `x`, in eval mode, batched to bound memory. With a `cut` (see `Classifier`), x is
    what the model's frozen part computes (`frozen_features`) and only the layers after the cut run."""
    model.eval()
    kwargs = {} if cut == "all" else {"cut": cut}
    return torch.cat([model(xb, **kwargs) for xb in x.split(batch_size)]) if len(x) else torch.empty(0)


def batched_logits(
    template: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, shared: bool = False, cut: str = "all"
) -> torch.Tensor:
    """Logits [N, B, C] of N stacked models on per-model inputs [N, B, ...] (or one `shared` batch [B, ...]).
    With a `cut` (see `Classifier`), `params` holds only the generated layers and x their input features."""
    kwargs = {} if cut == "all" else {"cut": cut}

    def one(p: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
        return functional_call(template, p, (xb,), kwargs)

    return torch.vmap(one, in_dims=(0, None if shared else 0))(params, x)
