"""Metrics pinned by hand-computed cases, and the MIA's behaviour at its two extremes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hyperforget.config.params import ForgetConfig
from hyperforget.data.datasets import forget_split
from hyperforget.models.metrics import (
    Evaluator,
    MembershipAttack,
    accuracy,
    attack_accuracy,
    forgetting_rate,
    gaps,
    per_class_accuracy,
    summarise,
)


def onehot_logits(pred: list[int], num_classes: int = 3) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(pred), num_classes).float()


def test_accuracy_and_per_class_by_hand():
    logits, y = onehot_logits([0, 1, 1, 2, 0]), torch.tensor([0, 1, 2, 2, 1])
    assert accuracy(logits, y) == pytest.approx(3 / 5)
    per_class = per_class_accuracy(logits, y, num_classes=4)
    assert per_class[:3] == pytest.approx([1.0, 0.5, 0.5]) and math.isnan(per_class[3])
    assert math.isnan(accuracy(logits[:0], y[:0]))


def b(*bits: int) -> np.ndarray:
    return np.array(bits, dtype=bool)


@pytest.mark.parametrize(("before", "after", "rate", "per_sample"), [
    (b(1, 1, 1, 0), b(0, 0, 1, 0), 2 / 3, 2 / 3),  # A_b=3, B_b=1, B_a=3: (3−1)/3
    (b(1, 1, 0, 0), b(0, 1, 1, 0), 0.0, 1 / 2),    # one member left, one non-member joined: net 0
    (b(1, 1, 0, 0), b(1, 1, 1, 1), 0.0, 0.0),      # (0−2)/2 = −1, clipped to 0
    (b(1, 1, 0, 0), b(0, 0, 0, 0), 1.0, 1.0),
])
def test_forgetting_rate_by_hand(before, after, rate, per_sample):
    out = forgetting_rate(before, after)
    assert out["forgetting_rate"] == pytest.approx(rate)
    assert out["forgetting_rate_per_sample"] == pytest.approx(per_sample)


def test_forgetting_rate_is_undefined_without_members_before():
    out = forgetting_rate(b(0, 0), b(0, 0))
    assert math.isnan(out["forgetting_rate"]) and math.isnan(out["forgetting_rate_per_sample"])


def test_gaps_and_summary_by_hand():
    reference = summarise([{"forget_acc": 0.0, "retain_acc": 1.0, "mia": 0.1},
                           {"forget_acc": 0.2, "retain_acc": 0.8, "mia": 0.3}])
    assert reference["forget_acc"] == pytest.approx({"mean": 0.1, "std": 0.1})
    out = gaps({"forget_acc": 0.4, "retain_acc": 0.7, "mia": float("nan")}, reference)
    assert out == pytest.approx({"gap_forget_acc": 0.3, "gap_retain_acc": 0.2, "avg_gap": 0.25})


def test_attack_cannot_tell_two_samples_of_one_distribution():
    rng = np.random.default_rng(0)
    a, b_ = rng.exponential(1.0, (2000, 2)), rng.exponential(1.0, (2000, 2))
    assert attack_accuracy(a, b_, splits=10, seed=0) == pytest.approx(0.5, abs=0.04)


def test_attack_separates_a_memorised_set():
    rng = np.random.default_rng(0)
    members = np.column_stack([rng.exponential(0.01, 1000), rng.exponential(0.05, 1000)])  # near-zero loss
    unseen = np.column_stack([rng.exponential(1.0, 1000), rng.exponential(1.0, 1000)])
    assert attack_accuracy(members, unseen, splits=10, seed=0) > 0.8
    attack = MembershipAttack.fit(members, unseen, seed=0)
    assert attack.is_member(members).mean() > 0.8 and attack.is_member(unseen).mean() < 0.3


def test_evaluator_on_a_random_fraction_split(original_mlp, digits):
    split = forget_split(digits, ForgetConfig(fraction=0.1, seed=0))
    report = Evaluator.for_original(original_mlp, digits, split).report(original_mlp)
    assert report["forget_acc"] > 0.95 and report["retain_acc"] > 0.95  # the original memorised its training set
    assert report["test_retained_acc"] == report["test_acc"] and math.isnan(report["test_forgotten_acc"])
    assert report["forgetting_rate"] == 0.0  # same model before and after: nothing forgotten
    assert 0.4 <= report["mia_attack_acc"] <= 0.7
    assert len(report["per_class_test_acc"]) == digits.num_classes
    assert report["worst_retained_acc"] == min(report["per_class_test_acc"])
