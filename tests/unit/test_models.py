"""Target models: sizes from papers.md, and the flat-vector view the hypernetwork relies on."""

import pytest
import torch

from hyperforget.errors import ConfigError, IntegrityError
from hyperforget.models import (
    ModelSpec,
    build_model,
    flatten,
    load_flat,
    load_model,
    num_params,
    param_layout,
    save_model,
    unflatten,
)


def test_mlp_sizes_match_gpt():
    assert num_params(param_layout(build_model("mlp", (1, 28, 28), 10, 10))) == 7960
    assert num_params(param_layout(build_model("mlp", (1, 8, 8), 10, 10))) == 760


def test_cnn_has_about_5k_parameters():
    assert 4500 <= num_params(param_layout(build_model("cnn", (1, 28, 28), 10, 8))) <= 5500


def test_unknown_architecture_lists_the_known_ones():
    with pytest.raises(ConfigError, match="mlp, cnn"):
        build_model("resnet", (1, 8, 8), 10, 10)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_flatten_unflatten_round_trip(arch):
    model = build_model(arch, (1, 8, 8), 10, 8, seed=0)
    layout = param_layout(model)
    vec = flatten(model)
    back = unflatten(vec, layout)
    for name, p in model.named_parameters():
        assert torch.equal(back[name], p)
    other = load_flat(build_model(arch, (1, 8, 8), 10, 8, seed=1), vec)
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(other(x), model(x))


def test_flatten_keeps_batch_axes():
    model = build_model("mlp", (1, 8, 8), 10, 10, seed=0)
    layout = param_layout(model)
    batch = torch.stack([flatten(model), flatten(model) * 2])
    tensors = unflatten(batch, layout)
    assert tensors["fc1.weight"].shape == (2, 10, 64)
    assert torch.equal(flatten(tensors, layout), batch)


def test_wrong_length_vector_is_rejected():
    layout = param_layout(build_model("mlp", (1, 8, 8), 10, 10))
    with pytest.raises(IntegrityError, match="needs 760"):
        unflatten(torch.zeros(759), layout)


def test_saved_model_rebuilds_itself_and_rejects_tampering(tmp_path):
    spec = ModelSpec("cnn", (1, 8, 8), 10, 8)
    model = spec.build(seed=3)
    save_model(tmp_path / "m.safetensors", model, spec)
    back, back_spec = load_model(tmp_path / "m.safetensors")
    assert back_spec == spec
    assert torch.equal(flatten(back), flatten(model))
    (tmp_path / "m.safetensors.sha256").write_text("0" * 64 + "  m.safetensors\n")
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        load_model(tmp_path / "m.safetensors")
