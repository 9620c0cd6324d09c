"""Set erasure (hyperforget/unlearn/erase.py): the last generated hidden layer stops telling the forgotten classes
apart, linearly, on D_f; a single class, strength 0 and every other layer are left exactly as they were."""

from __future__ import annotations

import copy

import pytest
import torch
from sklearn.linear_model import LogisticRegression

from hyperforget.models.nets import ModelSpec
from hyperforget.unlearn.erase import erase_set, leace


def _separability(z: torch.Tensor, y: torch.Tensor) -> float:
    """Training accuracy of a logistic regression reading y from z: what a linear probe can get out of it."""
    return LogisticRegression(max_iter=3000).fit(z.numpy(), y.numpy()).score(z.numpy(), y.numpy())


def _three_classes(n: int = 3000, d: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.tensor([2, 5, 7])[torch.randint(0, 3, (n,), generator=gen)]
    means = 3 * torch.randn(3, d, generator=gen, dtype=torch.float64)
    z = torch.randn(n, d, generator=gen, dtype=torch.float64) + means[(y == 5).long() + 2 * (y == 7).long()]
    z[:, 3] = 0.0  # a dead unit: the whitening must skip it, not divide by zero
    return z, y


def test_leace_leaves_no_linear_reading_of_the_classes_and_touches_k_minus_1_directions():
    z, y = _three_classes()
    m, mu, rank = leace(z, y)
    erased = z - (z - mu) @ m.T
    assert _separability(z, y) > 0.99
    assert _separability(erased, y) < 0.40  # three balanced classes: chance is 1/3
    assert int(torch.linalg.matrix_rank(m)) == rank == 2
    assert torch.allclose(erased.mean(0), mu)  # the class-free mean stays where it was


def _lenet_and_forget_features(classes: list[int], seed: int = 0):
    spec = ModelSpec("lenet", (1, 28, 28), 10, 10)
    model = spec.build(seed=seed).eval()
    gen = torch.Generator().manual_seed(seed)
    y = torch.tensor(classes)[torch.randint(0, len(classes), (1200,), generator=gen)]
    x = model.frozen_features(torch.randn(1200, 1, 28, 28, generator=gen) + y[:, None, None, None] / 3, "dense")
    return model, x, y


def test_a_set_is_erased_in_fc2_alone_and_its_pre_activations_no_longer_tell_the_classes_apart():
    """LeNet with fc1–fc3 generated: the eraser is folded into fc2 (the layer feeding the probe's features); the
    convolutions, fc1 and the head keep every value; fc2's pre-activations on D_f lose the set's classes."""
    model, x, y = _lenet_and_forget_features([2, 5, 7])
    before = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        z0 = model.fc2(torch.relu(model.fc1(x))).double()
    info = erase_set(model, x, y, [2, 5, 7], strength=1.0, cut="dense")
    assert info["applied"] and info["layer"] == "fc2" and info["directions"] == 2
    with torch.no_grad():
        z1 = model.fc2(torch.relu(model.fc1(x))).double()
    assert _separability(z0, y) > 0.9
    assert _separability(z1, y) < 0.45
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items() if not k.startswith("fc2"))


def test_half_strength_moves_the_layer_half_way():
    model, x, y = _lenet_and_forget_features([1, 6])
    full, half = copy.deepcopy(model), copy.deepcopy(model)
    erase_set(full, x, y, [1, 6], strength=1.0, cut="dense")
    erase_set(half, x, y, [1, 6], strength=0.5, cut="dense")
    assert torch.allclose(half.fc2.weight, (model.fc2.weight + full.fc2.weight) / 2, atol=1e-5)
    assert torch.allclose(half.fc2.bias, (model.fc2.bias + full.fc2.bias) / 2, atol=1e-5)


@pytest.mark.parametrize(("classes", "strength"), [([3], 1.0), ([2, 5, 7], 0.0)])
def test_a_single_class_or_strength_zero_leaves_the_model_bit_identical(classes, strength):
    """A single class has no 'which forgotten class' to erase: DiHyFo's single-class answers are unchanged."""
    model, x, y = _lenet_and_forget_features(classes)
    before = copy.deepcopy(model.state_dict())
    assert erase_set(model, x, y, classes, strength=strength, cut="dense") == {"applied": False}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
