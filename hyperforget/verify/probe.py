"""Linear probe (Gao et al. 2026): does a logistic regression on the penultimate features still read the
forgotten classes? Head-only "unlearning" leaves the features, so the probe recovers the class."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from hyperforget.base.errors import DataError
from hyperforget.data.datasets import Dataset


def _balanced_draw(y: torch.Tensor, per_class: int | None, gen: torch.Generator) -> torch.Tensor:
    classes = y.unique().tolist()
    n = min(int((y == c).sum()) for c in classes)
    n = n if per_class is None else min(n, per_class)
    picks = []
    for c in classes:
        idx = (y == c).nonzero().flatten()
        picks.append(idx[torch.randperm(len(idx), generator=gen)[:n]])
    return torch.cat(picks).sort().values


def probe_sets(data: Dataset, seed: int, per_class: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                  torch.Tensor]:
    """Class-balanced probe sets: train = `per_class` examples per class from the validation split (capped by
    its rarest class), test = the test split balanced to its rarest class. Forgotten classes included."""
    gen = torch.Generator().manual_seed(seed)
    tr = _balanced_draw(data.y_val, per_class, gen)
    te = _balanced_draw(data.y_test, None, gen)
    if len(data.y_val[tr].unique()) < data.num_classes:
        raise DataError("the validation split lacks some classes; the probe needs every class in it")
    return data.x_val[tr], data.y_val[tr], data.x_test[te], data.y_test[te]


@torch.no_grad()
def _features(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    model.eval()
    return model.features(x).double().numpy()


def probe_accuracy(model: nn.Module, x_probe_train: torch.Tensor, y_probe_train: torch.Tensor,
                   x_probe_test: torch.Tensor, y_probe_test: torch.Tensor, classes: Sequence[int],
                   c: float = 1.0) -> float:
    """Accuracy on the `classes` of the probe test set of a standardised logistic regression fitted on
    `model.features` of the probe train set."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    probe.fit(_features(model, x_probe_train), y_probe_train.numpy())
    keep = torch.isin(y_probe_test, torch.tensor(list(classes)))
    if not keep.any():
        raise DataError(f"the probe test set has no examples of classes {list(classes)}")
    pred = probe.predict(_features(model, x_probe_test[keep]))
    return float((pred == y_probe_test[keep].numpy()).mean())
