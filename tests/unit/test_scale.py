"""Scale matching (hyperforget/unlearn/scale.py): DiHyFo's generated hidden layers are brought back to θ0's
activation scale, layer by layer, and nothing else in the model moves."""

from __future__ import annotations

import copy

import pytest
import torch

from hyperforget.models.nets import ModelSpec
from hyperforget.unlearn.scale import match_scale


def _l1(a: torch.Tensor) -> float:
    return float(a.abs().sum(1).mean())


def test_each_generated_hidden_layer_lands_on_theta0s_activation_scale():
    """An answer whose generated fc1 is 3× θ0's and fc2 2× (weights and bias, as the zoo's ascent grows them): fc1 is
    divided by 3, then fc2, now fed θ0-scale inputs, by 2; each layer's mean output L1 equals θ0's on the same
    rows. The frozen convolutions and the head (refit afterwards) are untouched."""
    spec = ModelSpec("lenet", (1, 28, 28), 10, 10)
    theta0 = spec.build(seed=0).eval()
    answer = copy.deepcopy(theta0)
    with torch.no_grad():
        for layer, k in ((answer.fc1, 3.0), (answer.fc2, 2.0)):
            layer.weight *= k
            layer.bias *= k
        answer.fc3.weight += 0.1
    head = answer.fc3.weight.clone()
    x = theta0.frozen_features(torch.randn(512, 1, 28, 28), "dense")  # the zoo's cache: θ0's conv features
    info = match_scale(answer, theta0, x, cut="dense")
    assert info["divided_by"] == {"fc1": pytest.approx(3.0, rel=1e-5), "fc2": pytest.approx(2.0, rel=1e-5)}
    with torch.no_grad():
        a1, a1_0 = torch.relu(answer.fc1(x)), torch.relu(theta0.fc1(x))
        assert _l1(a1) == pytest.approx(_l1(a1_0), rel=1e-5)
        assert _l1(torch.relu(answer.fc2(a1))) == pytest.approx(_l1(torch.relu(theta0.fc2(a1_0))), rel=1e-5)
    assert torch.equal(answer.fc3.weight, head)
    assert all(torch.equal(answer.state_dict()[k], v) for k, v in theta0.state_dict().items() if k.startswith("conv"))


def test_with_the_head_alone_generated_there_is_nothing_to_rescale(original_mlp, digits):
    answer = copy.deepcopy(original_mlp)
    before = copy.deepcopy(answer.state_dict())
    info = match_scale(answer, original_mlp, answer.frozen_features(digits.x_train[:256], "head"), cut="head")
    assert info["divided_by"] == {}
    assert all(torch.equal(answer.state_dict()[k], v) for k, v in before.items())
