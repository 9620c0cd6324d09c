"""Level matching (hyperforget/unlearn/level.py): the forgotten class's loss lands on the zoo's retrain level,
by a bias shift alone, and never at the price of recognising the class again or of retained accuracy."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hyperforget.models.nets import ModelSpec
from hyperforget.unlearn.level import last_linear, match_level, solve, zoo_levels


def _logits(n: int = 300, classes: int = 4, push: float = -40.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of a model that classifies every class but 0 well and pushes class 0's logit down by `push`."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    z = torch.randn(n, classes, generator=g)
    z[torch.arange(n), y] += 6.0
    z[:, 0] += push
    return z, y


def _loss(z: torch.Tensor, y: torch.Tensor, c: int) -> float:
    return float(F.cross_entropy(z[y == c].double(), y[y == c]))


def test_the_shift_puts_an_over_forgotten_class_at_the_target_loss():
    z, y = _logits(push=-40.0)
    target = 12.0  # where a retrain leaves it: far below θ0's ~0, far above the sample's ~40
    delta = solve(z, y, {0: target}, max_forget_acc=0.05)
    shifted = z.double().clone()
    shifted[:, 0] += delta[0]
    assert delta[0] > 0 and abs(_loss(shifted, y, 0) - target) < 1e-3
    assert (shifted[y == 0].argmax(1) == 0).float().mean() <= 0.05  # still forgotten


def test_an_under_forgotten_class_is_pushed_down_to_the_target():
    z, y = _logits(push=-7.0)
    delta = solve(z, y, {0: 15.0}, max_forget_acc=0.05)
    assert delta[0] < 0


def test_a_target_that_would_make_the_class_recognisable_again_is_pulled_back():
    z, y = _logits(push=-40.0)
    delta = solve(z, y, {0: 0.01}, max_forget_acc=0.05)  # a θ0-like level: the class would come back
    shifted = z.double().clone()
    shifted[:, 0] += delta[0]
    assert (shifted[y == 0].argmax(1) == 0).float().mean() <= 0.05
    assert _loss(shifted, y, 0) > 0.01


def test_match_level_moves_only_the_head_bias_of_the_forgotten_class():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        last_linear(model).bias[1] -= 30.0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(90, 5), torch.arange(90) % 3
    info = match_level(model, x, y, {1: 10.0}, max_forget_acc=1.0)
    after = model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == ["2.bias"] and info["applied"]
    assert torch.equal((after["2.bias"] - before["2.bias"]).nonzero().flatten(), torch.tensor([1]))


def test_matching_on_the_cached_features_of_the_frozen_part_shifts_the_bias_as_on_the_images():
    """DiHyFo generating fc1–fc3 matches the level on the zoo's cached conv features: the same validation logits
    (the frozen part is θ0's either way), so the same shift, without running the convolutions again."""
    spec = ModelSpec("lenet", (1, 28, 28), 10, 10)
    on_images = spec.build(seed=0)
    with torch.no_grad():
        last_linear(on_images).bias[3] -= 30.0
    on_features = copy.deepcopy(on_images)
    x, y = torch.randn(300, 1, 28, 28), torch.arange(300) % 10
    a = match_level(on_images, x, y, {3: 6.0}, max_forget_acc=1.0)
    b = match_level(on_features, on_features.frozen_features(x, "dense"), y, {3: 6.0}, max_forget_acc=1.0,
                    cut="dense")
    assert a["applied"] and b["applied"] and abs(a["delta"][3]) > 1.0
    assert a["delta"][3] == pytest.approx(b["delta"][3], abs=1e-4)
    assert torch.allclose(last_linear(on_images).bias, last_linear(on_features).bias, atol=1e-4)
    assert b["val_loss_after"][3] == pytest.approx(6.0, abs=1e-3)  # the loss the shift was solved for


def test_levels_come_from_the_zoos_retrained_endpoints_of_each_class():
    rows = [{"kind": "retrain", "request": [2], "val_loss": [0, 0, 9.0]},
            {"kind": "head_retrain", "request": [2], "val_loss": [0, 0, 11.0]},
            {"kind": "retrain", "request": [2], "val_loss": [0, 0, 30.0]},
            {"kind": "trajectory", "request": [2], "val_loss": [0, 0, 99.0]},  # an ascent, not a retrain
            {"kind": "retrain", "request": [1, 2], "val_loss": [0, 0, 50.0]}]  # another request
    assert zoo_levels(rows, [2]) == {2: 11.0}
    assert zoo_levels(rows, [0]) == {}
    # where the zoo kept true retrains for the level (zoo.level_retrains), theirs: the endpoints sit shallower
    assert zoo_levels(rows, [2, 0], retrains={2: [20.0, 24.0]}) == {2: 22.0}


def test_with_row_share_one_the_forgotten_row_carries_the_level_and_the_bias_stays():
    """`level_row_share` 1: the level is met by scaling the forgotten row (a retrain's bias for a class it never saw
    stays near its initial value), so the bias is kept, only column c moves, and the val loss lands on the target."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(600, 5)
    y = model(x).argmax(1)
    with torch.no_grad():  # push class 1 down through its row, far below the target (over-forgotten)
        last_linear(model).weight[1] = -20.0 * last_linear(model).weight[1].abs() - 1.0
    before = model(x).detach()
    assert _loss(before, y, 1) > 4.0
    bias_before = last_linear(model).bias.detach().clone()
    info = match_level(model, x, y, {1: 4.0}, max_forget_acc=1.0, row_share=1.0)
    after = model(x).detach()
    assert info["row_scale"][1] < 1.0 and abs(info["delta"][1]) < 1e-6
    assert torch.equal(last_linear(model).bias.detach(), bias_before)
    assert abs(_loss(after, y, 1) - 4.0) < 1e-3
    assert torch.allclose(after[:, [0, 2]], before[:, [0, 2]])


def test_a_half_row_share_splits_the_level_between_row_and_bias():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(600, 5)
    y = model(x).argmax(1)
    with torch.no_grad():
        last_linear(model).weight[1] = -20.0 * last_linear(model).weight[1].abs() - 1.0
    full, half = copy.deepcopy(model), copy.deepcopy(model)
    s_full = match_level(full, x, y, {1: 4.0}, max_forget_acc=1.0, row_share=1.0)["row_scale"][1]
    info = match_level(half, x, y, {1: 4.0}, max_forget_acc=1.0, row_share=0.5)
    assert info["row_scale"][1] == pytest.approx(s_full ** 0.5)
    assert info["delta"][1] > 0  # the bias lifts what the half-scaled row leaves (as far as retained accuracy allows)
    assert 4.0 <= info["val_loss_after"][1] < info["val_loss_before"][1]
    assert info["val_loss_after"][1] == pytest.approx(_loss(half(x).detach(), y, 1))
