"""EU-k (arXiv 2201.06640), the exact-on-the-tail baseline: the last k layers are retrained on D_r, the rest is θ0."""

from __future__ import annotations

import pytest
import torch

from hyperforget.base.errors import ConfigError
from hyperforget.models.metrics import accuracy
from hyperforget.models.nets import ModelSpec, predict
from hyperforget.unlearn import run_method
from hyperforget.unlearn.method import UnlearnInputs


@pytest.mark.parametrize(("arch", "shape"), [("mlp", (1, 8, 8)), ("cnn", (1, 8, 8)), ("lenet", (1, 28, 28))])
def test_the_stages_of_every_architecture_are_its_forward_pass_one_layer_each(arch, shape):
    model = ModelSpec(arch, shape, 10, 4).build(seed=0)
    x = torch.randn(3, *shape)
    h = x
    for _, stage in model.stages():
        h = stage(h)
    assert torch.equal(h, model(x))
    assert [name for name, _ in model.stages()] == list(dict.fromkeys(n.rsplit(".", 1)[0]
                                                                      for n, _ in model.named_parameters()))


def test_eu_1_retrains_only_the_head_and_forgets_the_class(digits, digits_spec, original_mlp, split_class3):
    inputs = UnlearnInputs(original_mlp, digits_spec, digits, split_class3, seed=0)
    result = run_method("eu_k", inputs, {"k": 1, "epochs": 20, "lr": 1e-2, "batch_size": 32})
    before, after = dict(original_mlp.named_parameters()), dict(result.model.named_parameters())
    assert torch.equal(after["fc1.weight"], before["fc1.weight"]) and torch.equal(after["fc1.bias"], before["fc1.bias"])
    assert not torch.equal(after["fc2.weight"], before["fc2.weight"])
    assert result.info == {"retrained_layers": ["fc2"], "frozen_layers": ["fc1"]}
    forgotten = digits.y_test == 3
    logits = predict(result.model, digits.x_test)
    assert accuracy(logits[forgotten], digits.y_test[forgotten]) == 0.0  # never trained to emit class 3
    assert accuracy(logits[~forgotten], digits.y_test[~forgotten]) >= 0.85
    assert all(p.requires_grad for p in result.model.parameters())  # handed back trainable, like θ0


def test_eu_k_is_seeded_and_leaves_the_original_untouched(digits, digits_spec, original_mlp, split_class3):
    snapshot = {n: p.clone() for n, p in original_mlp.named_parameters()}
    inputs = UnlearnInputs(original_mlp, digits_spec, digits, split_class3, seed=4)
    a, b = (run_method("eu_k", inputs, {"k": 2, "epochs": 1}) for _ in range(2))
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True))
    assert all(torch.equal(p, snapshot[n]) for n, p in original_mlp.named_parameters())


def test_more_layers_than_the_model_has_is_a_config_error_naming_them(digits, digits_spec, original_mlp,
                                                                      split_class3):
    inputs = UnlearnInputs(original_mlp, digits_spec, digits, split_class3)
    with pytest.raises(ConfigError, match=r"eu_k.k = 3, but MLP has 2 layers \(fc1, fc2\); choose 1..2"):
        run_method("eu_k", inputs, {"k": 3})
