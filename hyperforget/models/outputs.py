"""θ0's outputs on the prepared train and test splits, computed once per (θ0, data set, layer set) and read by
every request.

Why: every request scores θ0 (the fixed membership attack, the power check) and then its answer on the whole
train and test splits. On MNIST-60k each is a LeNet-5 pass over 70k images, 3 s on 2 cores: with the reference
pool read instead of trained, those two passes were a third of a DiHyFo answer's 17 s end to end. θ0's logits
do not depend on the request, so they are kept. An answer that kept θ0's frozen layers (DiHyFo generates only
the layers after `hypernet.generate`'s cut; EU-k and head fine-tuning train above it too) computes θ0's
features below that cut, so its logits come from θ0's frozen features there, running the generated layers
alone (`OriginalOutputs.logits`); any other answer runs on the images. Same batches, same operations: the
logits are the ones the whole network computes (tested).

Kept as one safetensors file (sha256 sidecar, verified on load) with θ0's flat weights, the data set's sha256
and the layer set in it; a file for another θ0, data set or layer set, or a damaged one, is computed again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hyperforget.base.errors import IntegrityError
from hyperforget.base.io import load_tensors, save_tensors, tensor_metadata
from hyperforget.data.datasets import Dataset
from hyperforget.models.nets import Part, flatten, frozen_features, generated_layers, generated_part, predict


@dataclass(frozen=True)
class OriginalOutputs:
    """θ0's logits on the train and test splits; with a `part` (a layer set other than all), θ0's frozen-part
    features on both (what that part's generated layers read)."""

    theta0: torch.Tensor
    train_logits: torch.Tensor
    test_logits: torch.Tensor
    part: Part | None = None
    frozen_train: torch.Tensor | None = None
    frozen_test: torch.Tensor | None = None

    def logits(self, model: nn.Module, original: nn.Module, data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """`model`'s logits on the train and test splits: θ0's own when `model` is θ0, from the frozen features
        when it kept every weight and buffer of θ0's frozen layers, else a pass over the images."""
        if same_state(model, original):
            return self.train_logits, self.test_logits
        if self.part is not None and same_state(model, original, generated_layers(original, self.part.name)):
            return (predict(model, self.frozen_train, cut=self.part.name),
                    predict(model, self.frozen_test, cut=self.part.name))
        return predict(model, data.x_train), predict(model, data.x_test)


def same_state(model: nn.Module, original: nn.Module, apart_from: tuple[str, ...] = ()) -> bool:
    """True when every parameter and buffer of `model` equals θ0's, those of the layers `apart_from` aside."""
    mine, theirs = model.state_dict(), original.state_dict()
    if mine.keys() != theirs.keys():
        return False
    return all(torch.equal(mine[k], theirs[k]) for k in mine if k.rsplit(".", 1)[0] not in apart_from)


def compute_outputs(original: nn.Module, data: Dataset, generate: str) -> OriginalOutputs:
    """θ0's outputs: with a layer set, the frozen part runs once and the logits come from its features."""
    theta0 = flatten(original).float()
    if generate == "all":
        return OriginalOutputs(theta0, predict(original, data.x_train), predict(original, data.x_test))
    frozen = frozen_features(original, data.x_train, generate), frozen_features(original, data.x_test, generate)
    return OriginalOutputs(theta0, *(predict(original, f, cut=generate) for f in frozen),
                           generated_part(original, generate), *frozen)


def original_outputs(path: str | Path, original: nn.Module, data: Dataset, data_sha256: str,
                     generate: str) -> OriginalOutputs:
    """The outputs kept at `path` when they are θ0's on this data set for this layer set; else computed and
    written (atomically, with sha256) first."""
    path = Path(path)
    theta0 = flatten(original).float()
    if path.exists():
        try:
            t, meta = load_tensors(path), tensor_metadata(path)
            if (meta.get("data_sha256") == data_sha256 and meta.get("generate") == generate
                    and torch.equal(t["theta0"], theta0)):
                part = None if generate == "all" else generated_part(original, generate)
                return OriginalOutputs(theta0, t["train_logits"], t["test_logits"], part, t.get("frozen_train"),
                                       t.get("frozen_test"))
        except (IntegrityError, KeyError):
            pass  # damaged or foreign: computed again below
    out = compute_outputs(original, data, generate)
    tensors = {"theta0": out.theta0, "train_logits": out.train_logits, "test_logits": out.test_logits}
    if out.frozen_train is not None:
        tensors |= {"frozen_train": out.frozen_train.contiguous(), "frozen_test": out.frozen_test.contiguous()}
    save_tensors(path, tensors, metadata={"data_sha256": data_sha256, "generate": generate})
    return out
