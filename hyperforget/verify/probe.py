"""Linear probe (Gao et al. 2026): does a logistic regression on the penultimate features still read the
forgotten classes? Head-only "unlearning" leaves the features, so the probe recovers the class.

Two statistics. `probe_accuracy`: one probe fitted on a small balanced draw of the validation split, its
accuracy on the test split's forgotten classes (coarse: 1/178 steps on MNIST's 10k split, and a retrain's
features separate an easy class about as well as θ0's). `probe_confidence`: probes cross-fitted over a
balanced draw of validation ∪ test (every example scored once, by a probe that never saw it), the log-odds of
their mean probability of the true class on the forgotten classes' examples. Continuous and fitted on ~4×
more data, it separates θ0's features from a retrain's several times more surely: LeNet-5 on MNIST's 10k
split, 4 pool retrains per class, retrain-vs-others gap ±0.17 against θ0's +0.56…+1.39
(docs/results/gate-calibration.md)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from hyperforget.base.errors import DataError
from hyperforget.base.runtime import one_blas_thread
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


def _probe(c: float):
    """The probe: a standardised multinomial logistic regression (L2, inverse strength `c`)."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))


@torch.no_grad()
def _features(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    model.eval()
    return model.features(x).double().numpy()


def probe_accuracy(model: nn.Module, x_probe_train: torch.Tensor, y_probe_train: torch.Tensor,
                   x_probe_test: torch.Tensor, y_probe_test: torch.Tensor, classes: Sequence[int],
                   c: float = 1.0) -> float:
    """Accuracy on the `classes` of the probe test set of a standardised logistic regression fitted on
    `model.features` of the probe train set."""
    keep = torch.isin(y_probe_test, torch.tensor(list(classes)))
    if not keep.any():
        raise DataError(f"the probe test set has no examples of classes {list(classes)}")
    train, test = _features(model, x_probe_train), _features(model, x_probe_test[keep])
    with one_blas_thread():
        pred = _probe(c).fit(train, y_probe_train.numpy()).predict(test)
    return float((pred == y_probe_test[keep].numpy()).mean())


PROBE_FOLDS = 5  # cross-fitting: each probe sees 4/5 of the pool, scores the other 1/5


def confidence_sets(data: Dataset, seed: int, per_class: int) -> tuple[torch.Tensor, torch.Tensor, list]:
    """The cross-fitted probe's data: a class-balanced draw of validation ∪ test (`per_class` per class,
    capped by the rarest), and its `PROBE_FOLDS` stratified folds (seeded) as [(fit rows, score rows)]."""
    x, y = torch.cat([data.x_val, data.x_test]), torch.cat([data.y_val, data.y_test])
    pick = _balanced_draw(y, per_class, torch.Generator().manual_seed(seed))
    x, y = x[pick], y[pick]
    if len(y.unique()) < data.num_classes or int(torch.bincount(y).min()) < PROBE_FOLDS:
        raise DataError(f"the cross-fitted probe needs at least {PROBE_FOLDS} validation or test examples of "
                        "every class; this split has fewer")
    folds = list(StratifiedKFold(PROBE_FOLDS, shuffle=True, random_state=seed).split(np.zeros(len(y)), y.numpy()))
    return x, y, folds


def probe_confidence(model: nn.Module, x: torch.Tensor, y: torch.Tensor, folds: list, classes: Sequence[int],
                     c: float = 1.0) -> float:
    """Log-odds of the mean probability that cross-fitted probes (standardised logistic regressions on
    `model.features`, one per fold) give the true class of the `classes`' examples of (x, y)."""
    feats = _features(model, x)
    labels = y.numpy()
    keep = np.isin(labels, list(classes))
    if not keep.any():
        raise DataError(f"the probe set has no examples of classes {list(classes)}")
    p_true = np.zeros(len(labels))
    with one_blas_thread():
        for fit, score in folds:
            probe = _probe(c).fit(feats[fit], labels[fit])
            col = np.searchsorted(probe.classes_, labels[score])
            p_true[score] = probe.predict_proba(feats[score])[np.arange(len(score)), col]
    mean = float(np.clip(p_true[keep].mean(), 1e-6, 1 - 1e-6))
    return float(np.log(mean / (1 - mean)))
