"""SISA (arXiv 1912.03817): an exact answer to record deletions that retrains only the shards holding them."""

from __future__ import annotations

import pytest
import torch

from hyperforget.base.errors import ConfigError
from hyperforget.config.params import TrainConfig
from hyperforget.models.metrics import accuracy
from hyperforget.models.nets import predict
from hyperforget.unlearn import sisa

RECIPE = TrainConfig(epochs=4, batch_size=32, lr=1e-2)
LAYOUT = sisa.Layout(shards=3, slices=3, seed=0)


@pytest.fixture(scope="module")
def trained(digits, digits_spec) -> sisa.Sisa:
    return sisa.train(digits_spec, digits.x_train, digits.y_train, RECIPE, LAYOUT)


def test_the_shards_and_slices_cut_the_training_set_into_disjoint_parts_that_cover_it(digits):
    rows = sisa.cut(len(digits.y_train), LAYOUT)
    every = torch.cat([r for shard in rows for r in shard])
    assert sorted(every.tolist()) == list(range(len(digits.y_train)))
    assert max(len(r) for s in rows for r in s) - min(len(r) for s in rows for r in s) <= 1
    with pytest.raises(ConfigError, match="cannot fill"):
        sisa.cut(5, sisa.Layout(shards=3, slices=2))


def test_a_stage_trains_on_its_slices_for_about_the_recipes_share_of_epochs():
    assert sisa.stage_recipe(TrainConfig(epochs=12), 4).epochs == 5  # 5 × (1+2+3+4)/4 = 12.5 passes
    assert sisa.stage_recipe(TrainConfig(epochs=1), 8).epochs == 1


def test_the_ensemble_classifies_like_a_model(trained, digits):
    assert accuracy(predict(trained.model(), digits.x_test), digits.y_test) >= 0.85


def test_deleting_records_retrains_only_their_shards_and_equals_training_without_them_from_scratch(
        trained, digits, digits_spec):
    shard, late_slice = 1, 2
    records = trained.rows[shard][late_slice][:3]
    after, cost = sisa.forget(trained, digits.x_train, digits.y_train, records)
    assert cost["shards_retrained"] == 1 and cost["restart_slices"] == {shard: late_slice}
    assert cost["stages_retrained"] == 1 and cost["stages"] == 9
    without = [r[~torch.isin(r, records)] for r in trained.rows[shard]]
    assert sum(map(len, without)) == sum(map(len, trained.rows[shard])) - 3
    scratch, _ = sisa.train_constituent(digits_spec, digits.x_train, digits.y_train, without, trained.recipe,
                                        LAYOUT, shard)
    for name, value in scratch.state_dict().items():  # exact: bit for bit what never saw the records
        assert torch.equal(after.checkpoints[shard][-1][name], value), name
    for other in (0, 2):  # the other shards' weights are reused, not retrained
        assert all(a is b for a, b in zip(after.checkpoints[other], trained.checkpoints[other], strict=True))
    assert not any(torch.isin(r, records).any() for s in after.rows for r in s)
    assert torch.isin(records, torch.cat(trained.rows[shard])).all()  # the state given is left as it was


def test_a_record_in_a_first_slice_retrains_its_shard_from_its_initialisation(trained, digits, digits_spec):
    records = torch.tensor([trained.rows[0][0][0].item(), trained.rows[2][1][0].item()])
    after, cost = sisa.forget(trained, digits.x_train, digits.y_train, records)
    assert cost["restart_slices"] == {0: 0, 2: 1} and cost["stages_retrained"] == 3 + 2
    without = [r[~torch.isin(r, records)] for r in trained.rows[0]]
    scratch, _ = sisa.train_constituent(digits_spec, digits.x_train, digits.y_train, without, trained.recipe,
                                        LAYOUT, 0)
    assert all(torch.equal(after.checkpoints[0][-1][k], v) for k, v in scratch.state_dict().items())


def test_records_outside_the_training_split_are_refused(trained, digits):
    with pytest.raises(ConfigError, match="training-split indices"):
        sisa.forget(trained, digits.x_train, digits.y_train, torch.tensor([len(digits.y_train)]))
