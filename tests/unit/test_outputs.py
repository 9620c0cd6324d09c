"""θ0's kept outputs (`models.outputs`): every request scores θ0 and its answer on the whole train and test
splits; θ0's logits are read back instead of computed, and an answer that kept θ0's frozen layers runs only
its generated layers on θ0's frozen features, with the logits the whole network computes."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from hyperforget.base.io import load_tensors, sidecar, tensor_metadata
from hyperforget.models.nets import ModelSpec, predict
from hyperforget.models.outputs import original_outputs

DIGEST = "d" * 64


@pytest.fixture(scope="module")
def lenet(digits):
    return ModelSpec("lenet", digits.input_shape, digits.num_classes, 0).build(seed=0).eval()


def _changed(model, *names):
    out = copy.deepcopy(model)
    with torch.no_grad():
        for name in names:
            out.get_parameter(name).add_(0.1)
    return out


def _blind(data):
    """The same data set with NaN images: whatever is computed from them is NaN."""
    return replace(data, x_train=torch.full_like(data.x_train, float("nan")),
                   x_test=torch.full_like(data.x_test, float("nan")))


def test_theta0_and_an_answer_that_kept_its_frozen_layers_are_scored_without_a_pass_over_the_images(
        tmp_path, digits, lenet):
    kept = original_outputs(tmp_path / "outputs.safetensors", lenet, digits, DIGEST, "dense")
    answer = _changed(lenet, "fc1.weight", "fc3.bias")  # DiHyFo's layers for `dense`: fc1–fc3
    for model in (lenet, answer):
        train, test = kept.logits(model, lenet, _blind(digits))  # NaN images: any pass over them would show
        torch.testing.assert_close(train, predict(model, digits.x_train))
        torch.testing.assert_close(test, predict(model, digits.x_test))


def test_an_answer_that_changed_a_frozen_layer_is_scored_on_the_images(tmp_path, digits, lenet):
    kept = original_outputs(tmp_path / "outputs.safetensors", lenet, digits, DIGEST, "dense")
    answer = _changed(lenet, "conv2.weight", "fc3.bias")
    train, test = kept.logits(answer, lenet, digits)
    torch.testing.assert_close(train, predict(answer, digits.x_train))
    torch.testing.assert_close(test, predict(answer, digits.x_test))
    assert torch.isnan(kept.logits(answer, lenet, _blind(digits))[0]).all()


def test_without_a_frozen_part_only_theta0_itself_is_read_back(tmp_path, digits, lenet):
    kept = original_outputs(tmp_path / "outputs.safetensors", lenet, digits, DIGEST, "all")
    assert kept.frozen_train is None
    assert torch.equal(kept.logits(lenet, lenet, _blind(digits))[0], predict(lenet, digits.x_train))
    answer = _changed(lenet, "fc3.bias")
    torch.testing.assert_close(kept.logits(answer, lenet, digits)[0], predict(answer, digits.x_train))


def test_the_file_is_reused_for_the_same_theta0_data_set_and_layer_set_and_computed_again_otherwise(
        tmp_path, digits, lenet):
    path = tmp_path / "outputs.safetensors"
    original_outputs(path, lenet, digits, DIGEST, "dense")
    written = path.read_bytes()
    blind = _blind(digits)  # a reuse reads the file: NaN images change nothing
    reused = original_outputs(path, lenet, blind, DIGEST, "dense")
    assert torch.equal(reused.train_logits, predict(lenet, digits.x_train))
    assert path.read_bytes() == written

    assert tensor_metadata(path)["generate"] == "dense"
    original_outputs(path, lenet, digits, DIGEST, "head")  # another layer set
    assert tensor_metadata(path)["generate"] == "head"
    original_outputs(path, lenet, digits, "e" * 64, "head")  # another data set
    assert tensor_metadata(path)["data_sha256"] == "e" * 64
    other = _changed(lenet, "conv1.bias")  # another θ0
    assert torch.equal(original_outputs(path, other, digits, "e" * 64, "head").train_logits,
                       predict(other, digits.x_train))
    assert torch.equal(load_tensors(path)["train_logits"], predict(other, digits.x_train))


def test_a_damaged_file_is_computed_again(tmp_path, digits, lenet):
    path = tmp_path / "outputs.safetensors"
    original_outputs(path, lenet, digits, DIGEST, "dense")
    path.write_bytes(path.read_bytes()[:100])  # truncated: its sidecar no longer matches
    kept = original_outputs(path, lenet, digits, DIGEST, "dense")
    assert torch.equal(kept.test_logits, predict(lenet, digits.x_test))
    assert load_tensors(path)["test_logits"].shape == kept.test_logits.shape
    assert sidecar(path).exists()

