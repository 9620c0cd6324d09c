"""The weight zoo: resumable sharded build in independent units, checksums, rows that match their weights,
aligned retrains."""

from __future__ import annotations

import dataclasses
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torch.nn.functional as F

from hyperforget.base.errors import ConfigError, DataError, IntegrityError
from hyperforget.base.io import load_tensors, read_json, write_json
from hyperforget.config.params import Params, TrainConfig, ZooConfig
from hyperforget.models.nets import build_model, flatten, generated_part, load_flat, param_layout, unflatten
from hyperforget.models.train import train_many
from hyperforget.zoo import build as zoo_build
from hyperforget.zoo import levels, shards
from hyperforget.zoo.build import build_unit, build_zoo, plan_zoo
from hyperforget.zoo.requests import zoo_requests
from hyperforget.zoo.shards import all_finite, finish_zoo, load_zoo
from hyperforget.zoo.trajectories import align_hidden

TINY = ZooConfig(pairs=[], holdout_sets=0, trajectories=2, steps=4, save_every=2, retrain_seeds=1, shard_rows=3)
TINY_RETRAIN = TrainConfig(epochs=1, batch_size=64)


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory, original_mlp, digits_spec, digits):
    out = tmp_path_factory.mktemp("zoo")
    summary = build_zoo(original_mlp, digits_spec, digits, TINY, TINY_RETRAIN, out, progress=False)
    return out, summary


def shard_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*"))}


def test_zoo_holds_every_request_and_counts(tiny_zoo):
    out, summary = tiny_zoo
    # original + 10 classes × (1 retrain + 2 trajectories × 2 saved steps); 5 rows per class → 2 shards of ≤ 3
    assert summary["counts"] == {"original": 1, "trajectory": 40, "retrain": 10}
    assert summary["shards"] == 1 + 10 * 2 and read_json(out / "zoo.json")["complete"]
    assert zoo_requests(ZooConfig(pairs=[[8, 3], [1, 2]], holdout_sets=0), 10)[-2:] == [(3, 8), (1, 2)]


def test_a_zoo_of_retrain_shaped_targets_holds_no_trajectory(tmp_path, original_mlp, digits_spec, digits):
    """zoo.trajectories: 0 keeps θ0 and the retrained endpoints alone; a zoo of θ0 alone is refused."""
    cfg = TINY.model_copy(update={"trajectories": 0, "retrain_seeds": 2})
    summary = build_zoo(original_mlp, digits_spec, digits, cfg, TINY_RETRAIN, tmp_path, progress=False)
    assert summary["counts"] == {"original": 1, "retrain": 20, "trajectory": 0}
    with pytest.raises(ValueError, match="both 0"):
        ZooConfig(trajectories=0, retrain_seeds=0)


def test_resumed_build_equals_uninterrupted(tiny_zoo, tmp_path, monkeypatch, original_mlp, digits_spec, digits):
    full, _ = tiny_zoo
    real_write, calls = shards.write_shard, []

    def crash_after_four(*args, **kwargs):
        if len(calls) == 4:  # original, class 0 (2 shards), first shard of class 1: mid-unit
            raise KeyboardInterrupt
        calls.append(1)
        real_write(*args, **kwargs)

    monkeypatch.setattr(zoo_build, "write_shard", crash_after_four)
    with pytest.raises(KeyboardInterrupt):
        build_zoo(original_mlp, digits_spec, digits, TINY, TINY_RETRAIN, tmp_path, progress=False)
    monkeypatch.undo()
    assert not read_json(tmp_path / "zoo.json")["complete"]
    with pytest.raises(IntegrityError, match="incomplete"):
        load_zoo(tmp_path)
    resumed = build_zoo(original_mlp, digits_spec, digits, TINY, TINY_RETRAIN, tmp_path, progress=False)
    assert resumed["resumed_units"] == 2  # θ0 and class 0; class 1's lone shard had no record, so it is redone
    assert read_json(tmp_path / "index.json") == read_json(full / "index.json")
    assert shard_bytes(tmp_path) == shard_bytes(full)


def test_corrupted_shard_is_detected_and_rebuilt(tiny_zoo, tmp_path, original_mlp, digits_spec, digits):
    full, _ = tiny_zoo
    shutil.copytree(full, tmp_path, dirs_exist_ok=True)
    shard = tmp_path / "shard-001-001.safetensors"  # class 0's second shard
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"shard-001-001.*re-run the zoo stage"):
        load_zoo(tmp_path)
    repaired = build_zoo(original_mlp, digits_spec, digits, TINY, TINY_RETRAIN, tmp_path, progress=False)
    assert repaired["resumed_units"] == 10 and shard_bytes(tmp_path) == shard_bytes(full)
    with pytest.raises(ConfigError, match="different config"):
        build_zoo(original_mlp, digits_spec, digits, TINY.model_copy(update={"steps": 6}), TINY_RETRAIN, tmp_path)


def test_units_built_in_parallel_equal_the_sequential_build(tiny_zoo, tmp_path, original_mlp, digits_spec, digits):
    full, _ = tiny_zoo
    todo = plan_zoo(original_mlp, digits_spec, digits, TINY, TINY_RETRAIN, tmp_path)
    assert todo == list(range(11))
    with pytest.raises(IntegrityError, match=r"units \[0, 1, .*re-run the zoo stage"):
        finish_zoo(tmp_path)
    with ThreadPoolExecutor(2) as pool:  # as the build flow's thread task runner does, last unit first
        list(pool.map(lambda u: build_unit(original_mlp, digits_spec, digits, TINY, TINY_RETRAIN, tmp_path, u),
                      reversed(todo)))
    finish_zoo(tmp_path)
    assert read_json(tmp_path / "index.json") == read_json(full / "index.json")
    assert shard_bytes(tmp_path) == shard_bytes(full)
    assert plan_zoo(original_mlp, digits_spec, digits, TINY, TINY_RETRAIN, tmp_path) == []

    pooled = tmp_path / "pooled"  # `hyperforget zoo --workers 2`
    build_zoo(original_mlp, digits_spec, digits, TINY, TINY_RETRAIN, pooled, progress=False, workers=2)
    assert shard_bytes(pooled) == shard_bytes(full)
    # no timings in the folder: a rebuilt zoo is the same bytes, so DVC does not re-run what depends on it
    assert (pooled / "zoo.json").read_bytes() == (full / "zoo.json").read_bytes()


def test_index_rows_point_at_their_weights(tiny_zoo, original_mlp, digits_spec, digits):
    out, _ = tiny_zoo
    zoo, rows = load_zoo(out)
    assert len(rows) == zoo.num_rows and torch.equal(zoo.start[0], flatten(original_mlp))
    assert rows[0]["kind"] == "original" and zoo.forget_mask[0].sum() == 0
    for i in (0, 7, len(rows) - 1):
        model = load_flat(digits_spec.build(), zoo.weights[i]).eval()
        with torch.no_grad():
            logits = model(digits.x_val)
        for c in range(10):
            sel = digits.y_val == c
            loss = F.cross_entropy(logits[sel], digits.y_val[sel]).item()
            assert loss == pytest.approx(rows[i]["val_loss"][c], rel=1e-4)
        assert zoo.forget_mask[i].nonzero().flatten().tolist() == rows[i]["request"]
    shards = read_json(out / "index.json")["shards"]
    assert {r["shard_sha256"] for r in rows} == {s["sha256"] for s in shards}


def test_the_loaded_zoo_is_its_shards_in_index_order_and_an_index_that_miscounts_them_is_refused(tiny_zoo,
                                                                                                   tmp_path):
    full, _ = tiny_zoo
    zoo, _ = load_zoo(full)
    shards_in_order = [load_tensors(full / s["file"])["weights"] for s in read_json(full / "index.json")["shards"]]
    assert len(shards_in_order) > 1 and torch.equal(zoo.weights, torch.cat(shards_in_order))
    shutil.copytree(full, tmp_path, dirs_exist_ok=True)
    index = read_json(tmp_path / "index.json")
    for rows in (index["rows"][:-1], index["rows"] + index["rows"][-1:]):
        write_json(tmp_path / "index.json", {**index, "rows": rows})
        with pytest.raises(IntegrityError, match=rf"lists {len(rows)} rows but the shards hold {zoo.num_rows}"):
            load_zoo(tmp_path)


def test_a_zoo_holding_nan_or_inf_anywhere_is_refused(tiny_zoo):
    zoo, _ = load_zoo(tiny_zoo[0])
    assert all_finite(zoo.weights, chunk=7)
    for where in ((0, 0), (-1, -1), (3, 5)):  # the first value, the last (a partial chunk of 7), one inside
        for bad in (float("nan"), float("inf")):
            weights = zoo.weights.clone()
            weights[where] = bad
            assert not all_finite(weights, chunk=7)
            with pytest.raises(DataError, match="zoo weights contains NaN or inf"):
                dataclasses.replace(zoo, weights=weights)


def test_aligned_retrains_keep_their_function(original_mlp, digits_spec, digits):
    other = digits_spec.build(seed=123)
    layout = param_layout(other)
    aligned = align_hidden(flatten(other)[None], flatten(original_mlp), layout)[0]
    with torch.no_grad():
        assert torch.allclose(load_flat(digits_spec.build(), aligned)(digits.x_val), other(digits.x_val), atol=1e-5)
    theta0 = flatten(original_mlp)
    assert (aligned - theta0).norm() <= (flatten(other) - theta0).norm()


def test_alignment_matches_every_hidden_layer_of_lenets_dense_part():
    """fc1–fc3 (hypernet.generate: dense): both hidden layers are permuted towards θ0's, and the network still
    computes the same function."""
    reference, other = (build_model("lenet", (1, 28, 28), 10, 8, seed=s) for s in (0, 1))
    part = generated_part(reference, "dense")
    mine, theirs = part.extract(flatten(other)), part.extract(flatten(reference))
    aligned = align_hidden(mine[None], theirs, part.layout)[0]
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        moved = load_flat(build_model("lenet", (1, 28, 28), 10, 8), part.assemble(flatten(other), aligned))
        assert torch.allclose(moved(x), other(x), atol=1e-5)
    assert (aligned - theirs).norm() < (mine - theirs).norm()
    fc1 = unflatten(aligned, part.layout)["fc1.weight"]
    assert not torch.equal(fc1, unflatten(mine, part.layout)["fc1.weight"])  # the first hidden layer moved too


def test_held_out_sets_never_enter_the_zoo_index(tmp_path, original_mlp, digits_spec, digits):
    cfg = TINY.model_copy(update={"class_sets": 3, "holdout_sets": 20, "holdout_seed": 5})
    held = cfg.held_out(10)
    assert len(held) == 20 == len(set(held)) and {len(h) for h in held} == {2, 3}
    assert held == ZooConfig(holdout_sets=20, holdout_seed=5).held_out(10)  # a fixed list: seed and count only
    requests = zoo_requests(cfg, 10)
    assert requests[:10] == [(c,) for c in range(10)] and len(requests) == 13 and not set(requests) & set(held)
    assert not set(cfg.tuning_sets(10, 8)) & (set(held) | set(requests))
    build_zoo(original_mlp, digits_spec, digits, cfg, TINY_RETRAIN, tmp_path, progress=False)
    index_requests = {tuple(r["request"]) for r in read_json(tmp_path / "index.json")["rows"]}
    assert index_requests == {(), *requests} and not index_requests & set(held)

    with pytest.raises(ValueError, match=r"zoo\.pairs \[.*\] is a held-out set"):
        Params(zoo={"pairs": [list(ZooConfig().held_out(10)[0])]})
    manifest = read_json(tmp_path / "zoo.json")  # a tampered manifest cannot smuggle a held-out set in
    manifest["requests"][-1] = list(held[0])
    write_json(tmp_path / "zoo.json", manifest)
    (tmp_path / "units" / f"unit-{len(requests):03d}.json").unlink()
    with pytest.raises(ConfigError, match="held-out class sets"):
        build_unit(original_mlp, digits_spec, digits, cfg, TINY_RETRAIN, tmp_path, len(requests))


def test_level_retrains_added_to_a_built_zoo_train_only_themselves(tiny_zoo, tmp_path, original_mlp, digits_spec,
                                                                  digits):
    """zoo.level_retrains given to a built zoo: no row is rebuilt (the manifest does not change, every shard keeps
    its bytes), each single class gets true retrains without it, kept as the val loss they leave on it
    (levels.json: what DiHyFo's level matching reads), a unit whose levels are lost is refused until rebuilt, and
    back at 0 the file goes."""
    full, _ = tiny_zoo
    shutil.copytree(full, tmp_path, dirs_exist_ok=True)
    cfg = TINY.model_copy(update={"level_retrains": 1})
    summary = build_zoo(original_mlp, digits_spec, digits, cfg, TINY_RETRAIN, tmp_path, progress=False)
    assert shard_bytes(tmp_path) == shard_bytes(full)
    assert read_json(tmp_path / "index.json") == read_json(full / "index.json")
    assert summary["levels"] == {"level_retrains": 1, "classes": 10}
    kept = levels.read(tmp_path)
    keep = digits.y_train != 4
    retrain = train_many(digits_spec, [levels.LEVEL_SEED], digits.x_train[keep], digits.y_train[keep],
                         TINY_RETRAIN)[0].eval()
    with torch.no_grad():
        on_4 = F.cross_entropy(retrain(digits.x_val[digits.y_val == 4]), digits.y_val[digits.y_val == 4]).item()
    assert kept[4] == [pytest.approx(on_4, rel=1e-4)]
    assert on_4 > 2.0  # a model that never saw the class: far above θ0's loss on it

    (tmp_path / "units" / "levels-005.json").unlink()  # unit 5 = class 4
    with pytest.raises(IntegrityError, match=r"units \[5\].*level retrains"):
        zoo_build.finish(tmp_path, cfg)
    assert plan_zoo(original_mlp, digits_spec, digits, cfg, TINY_RETRAIN, tmp_path) == [5]
    build_zoo(original_mlp, digits_spec, digits, cfg, TINY_RETRAIN, tmp_path, progress=False)
    assert levels.read(tmp_path) == kept
    build_zoo(original_mlp, digits_spec, digits, TINY, TINY_RETRAIN, tmp_path, progress=False)
    assert levels.read(tmp_path) == {} and not (tmp_path / levels.LEVELS).exists()


def test_a_rerun_that_finds_the_zoo_and_hypernetwork_built_keeps_what_building_them_cost(make_project):
    """The timing files are what building cost (the zoo-size trend of the held-out study reads them): a second
    `dvc repro`, or a bench reusing the project, must not replace them with the seconds of finding it all built."""
    from hyperforget.base.artifacts import Artifacts
    from hyperforget.config.overlays import load_params
    from hyperforget.pipeline import stages

    path = make_project("stage-timings", zoo={"trajectories": 1, "steps": 4, "save_every": 2, "retrain_seeds": 0,
                                              "class_sets": 0, "holdout_sets": 0},
                        hypernet={"steps": 4, "checkpoint_every": 4, "width": 16, "depth": 1})
    params, art = load_params(path), Artifacts(path.parent)
    stages.zoo(params, art)
    stages.hypernet(params, art, "dihyfo1")
    built = {p.name: read_json(p) for p in art.timings.glob("*.json")}
    assert built["zoo.json"]["resumed_units"] == 0 and "hypernet-dihyfo1.json" in built
    stages.zoo(params, art)
    stages.hypernet(params, art, "dihyfo1")
    assert {p.name: read_json(p) for p in art.timings.glob("*.json")} == built
