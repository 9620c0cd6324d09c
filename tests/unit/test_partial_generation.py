"""Partial generation (hypernet.generate: block_head / head) end to end on digits with a LeNet-like net:
the zoo holds only the generated layers on cached, checksummed features; DiHyFo changes those layers and
leaves every other parameter bit-identical to θ0's; the assembled model exports to ONNX with parity; a
request for a layer set the hypernetwork was not trained for is a ConfigError that names the fix."""

from __future__ import annotations

import pytest
import torch

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import ConfigError, IntegrityError
from hyperforget.base.io import read_json, sidecar
from hyperforget.config.options import HypernetConfig
from hyperforget.config.params import TrainConfig, ZooConfig
from hyperforget.hypernet.diffusion import train_hypernet
from hyperforget.models.features import FEATURES
from hyperforget.models.nets import ModelSpec, flatten, frozen_features, generated_part, load_flat
from hyperforget.models.train import train_model
from hyperforget.publish.onnx import export_onnx
from hyperforget.unlearn import run_method
from hyperforget.unlearn.method import UnlearnInputs
from hyperforget.zoo.build import build_zoo
from hyperforget.zoo.shards import load_zoo
from tests.recipes import tiny_hypernet

TINY_ZOO = ZooConfig(trajectories=2, steps=6, save_every=3, retrain_seeds=1, shard_rows=64)
TINY_HYPERNET = tiny_hypernet(chunk_size=256)


@pytest.fixture(scope="module")
def lenet(digits):
    spec = ModelSpec("lenet", digits.input_shape, digits.num_classes, 0)
    model = spec.build(seed=0)
    train_model(model, digits.x_train, digits.y_train, TrainConfig(epochs=2, batch_size=32, lr=3e-3), seed=0)
    return model.eval(), spec


@pytest.fixture(scope="module")
def block_head(tmp_path_factory, lenet, digits):
    """A project whose zoo and both hypernetworks generate LeNet's fc2 + fc3 (the last block + the head)."""
    model, spec = lenet
    art = Artifacts(tmp_path_factory.mktemp("partial"))
    summary = build_zoo(model, spec, digits, TINY_ZOO, TrainConfig(epochs=1, batch_size=64), art.zoo, progress=False,
                        generate="block_head")
    zoo, rows = load_zoo(art.zoo)
    for variant in ("dihyfo1", "dihyfo2"):
        train_hypernet(zoo, HypernetConfig(variant=variant, generate="block_head", **TINY_HYPERNET),
                       art.hypernet(variant), progress=False)
    return art, summary, zoo, rows


def test_zoo_holds_only_the_generated_layers_on_checksummed_features(block_head, lenet, digits):
    art, summary, zoo, rows = block_head
    model, spec = lenet
    part = generated_part(model, "block_head")
    manifest = read_json(art.zoo / "zoo.json")
    assert manifest["generate"] == "block_head" and zoo.layout == part.layout
    assert [n for n, _ in zoo.layout] == ["fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]
    assert zoo.weights.shape[1] == len(part.index) < part.size
    assert torch.equal(zoo.start[0], part.extract(flatten(model))) and torch.equal(zoo.frozen, flatten(model))
    # the generated-layer endpoints are named for what they are: never "retrain"
    assert summary["counts"]["head_retrain"] == 10 and summary["counts"]["retrain"] == 0
    assert {r["kind"] for r in rows} == {"original", "trajectory", "head_retrain"} and summary["features_s"] >= 0
    # recorded losses are those of the assembled full model (θ0's frozen layers + the row's generated ones)
    row = next(i for i, r in enumerate(rows) if r["kind"] == "trajectory")
    assembled = load_flat(spec.build(), zoo.assemble(zoo.weights[row])).eval()
    with torch.no_grad():
        losses = torch.nn.functional.cross_entropy(assembled(digits.x_val), digits.y_val, reduction="none")
    assert rows[row]["val_loss"][0] == pytest.approx(losses[digits.y_val == 0].mean().item(), rel=1e-4)
    assert sidecar(art.zoo / FEATURES).exists()


def test_generated_layers_change_frozen_layers_stay_theta0s_and_export_matches(block_head, lenet, digits,
                                                                                 split_class3, tmp_path):
    art, _, _, _ = block_head
    model, spec = lenet
    before = flatten(model).clone()
    part = generated_part(model, "block_head")
    frozen = torch.ones(part.size, dtype=torch.bool)
    frozen[part.index] = False
    for variant, scale in (("dihyfo1", False), ("dihyfo2", True)):
        result = run_method(variant, UnlearnInputs(model, spec, digits, split_class3, 0, art),
                            {"k": 4, "match_scale": scale, "tune_steps": 20 if scale else 0})
        assert list(result.info["scale"].get("divided_by", {})) == (["fc2"] if scale else [])  # the block alone
        assert result.info["tune"].get("layers", []) == (["fc2", "fc3"] if scale else [])  # the generated ones
        after = flatten(result.model)
        assert torch.equal(after[frozen], before[frozen])  # conv1, conv2, fc1: bit-identical
        assert not torch.equal(after[~frozen], before[~frozen]) and result.info["generate"] == "block_head"
        # the candidates were scored like the assembled model would score
        h = frozen_features(model, digits.x_val, "block_head")
        assert torch.allclose(result.model(h, "block_head"), result.model(digits.x_val), atol=1e-5)
    assert torch.equal(flatten(model), before)
    out = export_onnx(result.model, spec, tmp_path / "partial.onnx", digits.x_test[:4], digits.x_test)
    assert out["max_abs_diff"] < 1e-4 and out["argmax_agreement"] == 1.0


def test_a_layer_set_the_hypernetwork_was_not_trained_for_is_a_clear_error(block_head, lenet, digits,
                                                                             split_class3, tmp_path):
    art, _, zoo, _ = block_head
    model, spec = lenet
    inputs = UnlearnInputs(model, spec, digits, split_class3, 0, art)
    with pytest.raises(ConfigError, match=r"generate the 'head' layers.*trained to generate 'block_head'.*"
                                          r"hypernet\.generate: head"):
        run_method("dihyfo2", inputs, {"k": 4, "generate": "head"})
    assert run_method("dihyfo2", inputs, {"k": 4, "generate": "block_head"}).info["generate"] == "block_head"
    with pytest.raises(ConfigError, match="zoo holds the 'block_head' layers"):
        train_hypernet(zoo, HypernetConfig(generate="head", **TINY_HYPERNET), tmp_path / "h", progress=False)


def test_corrupt_feature_cache_is_detected(block_head, tmp_path):
    import shutil

    art, _, _, _ = block_head
    shutil.copytree(art.zoo, tmp_path / "zoo")
    path = tmp_path / "zoo" / FEATURES
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(IntegrityError):
        load_zoo(tmp_path / "zoo")
