"""Target models: sizes from papers.md, and the flat-vector view the hypernetwork relies on."""

import pytest
import torch

from hyperforget.base.errors import ConfigError, IntegrityError
from hyperforget.models.nets import (
    GENERATE,
    HEAD_LAYERS,
    ModelSpec,
    build_model,
    flatten,
    generated_layers,
    generated_part,
    head_parameters,
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


def test_lenet_is_lenet5_at_mnist_size_and_lenet_like_on_digits():
    assert num_params(param_layout(build_model("lenet", (1, 28, 28), 10, 0))) == 61706
    small = build_model("lenet", (1, 8, 8), 10, 0, seed=0)
    assert small(torch.randn(3, 1, 8, 8)).shape == (3, 10)


@pytest.mark.parametrize("arch", ["mlp", "cnn", "lenet"])
def test_every_cut_recomputes_the_model_and_heads_agree(arch):
    """forward(frozen_features(x, cut), cut) == forward(x), and so for the features; the head is `head`/HEAD_LAYERS/
    head_parameters."""
    model = build_model(arch, (1, 8, 8), 10, 8, seed=0).eval()
    x = torch.randn(6, 1, 8, 8)
    for cut in GENERATE:
        assert torch.allclose(model(model.frozen_features(x, cut), cut), model(x), atol=1e-6)
        assert torch.allclose(model.features(model.frozen_features(x, cut), cut), model.features(x), atol=1e-6)
        part = generated_part(model, cut)
        full = flatten(model)
        assert torch.equal(part.assemble(full, part.extract(full)), full)
        assert [n for n, _ in part.layout] == [n for n, _ in param_layout(model) if n.split(".")[0] in
                                              generated_layers(model, cut)]
    assert generated_layers(model, "head") == (HEAD_LAYERS[arch],)
    assert [n for n, _ in generated_part(model, "head").layout] == head_parameters(model)
    assert generated_part(model, "all").is_all and generated_layers(model, "block_head")[-1] == HEAD_LAYERS[arch]
    dense = {"mlp": ("fc1", "fc2"), "cnn": ("fc",), "lenet": ("fc1", "fc2", "fc3")}
    assert generated_layers(model, "dense") == dense[arch]
    with pytest.raises(ConfigError, match="unknown layer set"):
        generated_part(model, "body")


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
