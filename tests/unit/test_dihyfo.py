"""DiHyFo: seeded sampling, refusals with the fix, honesty record, held-out sets in one sampler call. (The
definition of done on digits: tests/model/test_quality_bars.py.)"""

from __future__ import annotations

import copy
import shutil

import pytest
import torch

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import ConfigError, IntegrityError
from hyperforget.config.options import HypernetConfig
from hyperforget.config.params import ForgetConfig, TrainConfig, ZooConfig
from hyperforget.data.datasets import forget_split
from hyperforget.hypernet import diffusion as dihyfo_mod
from hyperforget.hypernet.diffusion import load_hypernet, train_hypernet
from hyperforget.hypernet.honesty import baseline_weights, honesty_report, nearest, zoo_spacing
from hyperforget.models.nets import flatten
from hyperforget.unlearn import run_method
from hyperforget.unlearn.method import UnlearnInputs
from hyperforget.zoo.build import build_zoo
from hyperforget.zoo.shards import load_zoo, read_rows
from tests.recipes import tiny_hypernet

TINY_HYPERNET = tiny_hypernet()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, original_mlp, digits_spec, digits):
    """A project with a tiny zoo and one tiny hypernet per variant: its Artifacts, zoo tensors and index rows."""
    art = Artifacts(tmp_path_factory.mktemp("dihyfo"))
    cfg = ZooConfig(pairs=[], trajectories=2, steps=6, save_every=3, retrain_seeds=1, shard_rows=64)
    build_zoo(original_mlp, digits_spec, digits, cfg, TrainConfig(epochs=1, batch_size=64), art.zoo, False)
    zoo, rows = load_zoo(art.zoo)
    for variant in ("dihyfo1", "dihyfo2"):
        train_hypernet(zoo, HypernetConfig(variant=variant, **TINY_HYPERNET), art.hypernet(variant), progress=False)
    return art, zoo, rows


def inputs_for(art, original, spec, data, split, seed=0):
    return UnlearnInputs(original, spec, data, split, seed, artifacts=art)


def test_sampling_is_deterministic_under_a_seed(tiny, original_mlp, digits_spec, digits, split_class3):
    art, _, _ = tiny
    inputs = inputs_for(art, original_mlp, digits_spec, digits, split_class3)
    before = flatten(original_mlp).clone()
    for variant in ("dihyfo1", "dihyfo2"):
        a, b = (run_method(variant, inputs, {"k": 4}) for _ in range(2))
        assert torch.equal(flatten(a.model), flatten(b.model)) and a.info["candidates"] == b.info["candidates"]
        passed = a.info["candidates"]["passed"]
        assert len(passed) == 4 and a.info["pass_rate"] == pytest.approx(sum(passed) / 4)
        assert a.wall_time_s == pytest.approx(a.info["prompt_s"] + a.info["sample_s"] + a.info["score_s"]
                                              + a.info["repair_s"])  # the repairs are part of the answer's cost
        other = run_method(variant, inputs_for(art, original_mlp, digits_spec, digits, split_class3, seed=1), {"k": 4})
        assert other.info["candidates"] != a.info["candidates"]
    assert torch.equal(flatten(original_mlp), before)


def test_refusals_name_the_fix(tiny, original_mlp, digits_spec, digits, split_class3):
    art, _, _ = tiny
    random = forget_split(digits, ForgetConfig(fraction=0.1))
    with pytest.raises(ConfigError, match="class requests only"):
        run_method("dihyfo2", inputs_for(art, original_mlp, digits_spec, digits, random))
    with pytest.raises(ConfigError, match="needs the project's artifacts"):
        run_method("dihyfo2", UnlearnInputs(original_mlp, digits_spec, digits, split_class3))
    wrong = Artifacts(art.root / "swapped")
    wrong.hypernet("dihyfo1").parent.mkdir(parents=True)
    wrong.hypernet("dihyfo1").symlink_to(art.hypernet("dihyfo2"))
    wrong.zoo.symlink_to(art.zoo)
    with pytest.raises(ConfigError, match="holds a dihyfo2 hypernetwork"):
        run_method("dihyfo1", inputs_for(wrong, original_mlp, digits_spec, digits, split_class3))
    stranger = copy.deepcopy(original_mlp)
    with torch.no_grad():
        stranger.fc2.bias.add_(0.1)
    with pytest.raises(ConfigError, match="different original model"):
        run_method("dihyfo2", inputs_for(art, stranger, digits_spec, digits, split_class3))


def test_honesty_record_and_baselines_are_real_zoo_checkpoints(tiny, digits_spec, digits):
    art, zoo, rows = tiny
    hypernet = load_hypernet(art.hypernet("dihyfo2"))
    target = zoo.class_loss[5]
    sampled = zoo.weights[5] + 0.01
    report = honesty_report(hypernet, zoo, rows, sampled, [3], target, digits_spec, digits, n=4, k=1)
    assert set(report) == {"alignment", "nearest_zoo", "zoo_nn_spacing_median", "distance_ratio",
                           "distance_to_theta0", "retrieval", "retrieval_noise"}
    assert set(report["alignment"]) >= {"r2", "r2_per_class", "retained_mae", "prompted", "achieved"}
    assert report["alignment"]["r2_per_class"].keys() == {"3"} and len(report["alignment"]["prompted"]) == 4
    assert report["nearest_zoo"]["row"] == 5 == report["retrieval"]["row"]  # target and weights are row 5's
    assert report["nearest_zoo"]["distance"] == pytest.approx(0.01 * zoo.weights.shape[1] ** 0.5, rel=1e-3)
    weights = baseline_weights(zoo, report)
    assert torch.equal(weights["retrieval"], zoo.weights[report["retrieval"]["row"]])
    noise = (weights["retrieval_noise"] - weights["retrieval"]).norm().item()
    assert noise == pytest.approx(report["nearest_zoo"]["distance"], rel=1e-4)


def test_a_held_out_set_is_answered_with_one_batched_sampler_call(tiny, monkeypatch, original_mlp, digits_spec,
                                                                  digits):
    art, zoo, _ = tiny
    held = list(ZooConfig().held_out(10)[1])  # a set of three classes the zoo never held
    assert not (zoo.forget_mask == torch.eye(10)[held].sum(0)).all(1).any()
    calls = []

    def counting(*args, **kwargs):
        calls.append(kwargs["seeds"])
        return dihyfo_mod.sample(*args, **kwargs)

    monkeypatch.setattr("hyperforget.unlearn.dihyfo.sample", counting)
    split = forget_split(digits, ForgetConfig(classes=held))
    result = run_method("dihyfo2", inputs_for(art, original_mlp, digits_spec, digits, split),
                        {"k": 16, "prompt_levels": 4, "edit_scales": (1.0, 0.5)})
    assert len(calls) == 1 and len(calls[0]) == 8 == len(set(calls[0]))  # all prompt levels, all samples
    cands = result.info["candidates"]
    assert cands["prompt"] == [i // 4 for i in range(16)] and len(result.info["prompts"]) == 4
    assert cands["scale"] == [1.0, 0.5] * 8 and len(cands["passed"]) == 16
    targets = torch.tensor([p["target"] for p in result.info["prompts"]])  # [levels, C], composed per class
    kept = [c for c in range(10) if c not in held]
    assert (targets[:, held].diff(dim=0) >= 0).all() and (targets[:, kept].diff(dim=0) <= 0).all()


def test_set_erasure_reshapes_a_sets_answer_and_leaves_a_single_class_answer_bit_identical(
        tiny, original_mlp, digits_spec, digits, split_class3):
    """`erase_set` folds the eraser into the last generated hidden layer (the MLP's fc1) of a set's answer, inside
    the timed repairs; a single class has nothing to erase, so its answer is exactly the one without it."""
    art, _, _ = tiny
    held = list(ZooConfig().held_out(10)[1])
    split = forget_split(digits, ForgetConfig(classes=held))
    plain, erased = (run_method("dihyfo1", inputs_for(art, original_mlp, digits_spec, digits, split),
                                {"k": 4, "erase_set": s}) for s in (0.0, 1.0))
    assert plain.info["erase"] == {"applied": False}
    assert erased.info["erase"]["applied"] and erased.info["erase"]["layer"] == "fc1"
    assert erased.info["erase"]["directions"] == len(held) - 1
    assert not torch.equal(erased.model.fc1.weight, plain.model.fc1.weight)
    assert erased.info["chosen"] == plain.info["chosen"]  # the same sample: the erasure is a repair after it
    one = [run_method("dihyfo1", inputs_for(art, original_mlp, digits_spec, digits, split_class3),
                      {"k": 4, "erase_set": s}) for s in (0.0, 1.0)]
    assert one[1].info["erase"] == {"applied": False}
    assert torch.equal(flatten(one[0].model), flatten(one[1].model))


def test_retrieval_answers_with_the_zoo_rows_nearest_its_prompts_and_never_loads_a_hypernetwork(
        tiny, monkeypatch, original_mlp, digits_spec, digits, split_class3):
    """`retrieval` is DiHyFo-1 with the sampler replaced by a lookup: with the repairs off its answer is exactly one
    of the K zoo rows nearest its prompts, read from the shards (checksummed), and no hypernetwork is touched."""
    art, zoo, _ = tiny
    monkeypatch.setattr("hyperforget.unlearn.dihyfo.load_hypernet",
                        lambda *a, **k: pytest.fail("retrieval loaded a hypernetwork"))
    off = {"k": 4, "edit_scales": [1.0], "refit_steps": 0, "match_level": False}
    result = run_method("retrieval", inputs_for(art, original_mlp, digits_spec, digits, split_class3), off)
    looked_up = result.info["zoo_rows"]
    assert result.method == "retrieval" and result.info["source"] == "zoo" and result.steps == 0
    assert len(looked_up) == 4 and result.info["chosen"] in range(4)
    # θ0 + 1.0·(row − θ0): the row, up to float rounding
    assert torch.allclose(flatten(result.model), zoo.weights[looked_up[result.info["chosen"]]], atol=1e-6)
    # the rows are the nearest by recorded per-class val loss to the most ambitious prompt level, among others
    target = torch.tensor(result.info["prompts"][-1]["target"])
    nearest = ((zoo.class_loss.log1p() - target.log1p()) ** 2).sum(1).argmin().item()
    assert looked_up[-1] == nearest
    with pytest.raises(ConfigError, match="retrieval was asked for the 'head' layers but the zoo"):
        run_method("retrieval", inputs_for(art, original_mlp, digits_spec, digits, split_class3),
                   off | {"generate": "head"})


def test_a_corrupt_shard_under_a_retrieved_row_is_refused_with_the_fix(tiny, tmp_path):
    art, zoo, rows = tiny
    copy_dir = tmp_path / "zoo"
    shutil.copytree(art.zoo, copy_dir)
    assert torch.equal(read_rows(copy_dir, rows, [3, 1]), zoo.weights[[3, 1]])
    shard = copy_dir / rows[3]["shard"]
    shard.write_bytes(shard.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(IntegrityError, match="re-run the zoo stage"):
        read_rows(copy_dir, rows, [3])


def test_the_zoo_spacing_is_every_rows_nearest_neighbour_in_a_small_zoo_and_a_seeded_sample_in_a_large_one():
    """Every row against every row costs N²·P: a large zoo's median spacing comes from a seeded sample of rows,
    each against the whole zoo (a chunk of it at a time), never itself."""
    zoo = torch.randn(300, 50, generator=torch.Generator().manual_seed(0))
    full = torch.cdist(zoo.double(), zoo.double()).fill_diagonal_(float("inf"))
    exact = full.min(1).values.float().median().item()
    assert zoo_spacing(zoo) == pytest.approx(exact)  # 300 rows: all of them
    sampled = zoo_spacing(zoo, queries=100)
    assert sampled == zoo_spacing(zoo, queries=100) != zoo_spacing(zoo, queries=100, seed=1)
    assert sampled == pytest.approx(exact, rel=0.05) and sampled > 0  # 0 if a row were its own neighbour
    dist, idx = nearest(zoo, zoo[:70], exclude=torch.arange(70), chunk=32, zoo_chunk=64)  # chunks meet rows anywhere
    assert torch.equal(idx, full[:70].argmin(1)) and dist == pytest.approx(full[:70].min(1).values.float())
