"""Retrain-shaped head rows (hyperforget/unlearn/rows.py): the forgotten class's row is re-learnt from a fresh
one on the retained data alone, so the class is no longer read from the features and takes a retrain's time
to relearn, while nothing else in the model moves."""

from __future__ import annotations

import copy
import statistics

import torch
import torch.nn.functional as F

from hyperforget.models.metrics import accuracy
from hyperforget.models.nets import frozen_features, predict
from hyperforget.unlearn.level import match_level
from hyperforget.unlearn.rows import FRESH_SEED_OFFSET, refit_rows
from hyperforget.verify.relearn import relearn_steps

C = 3


def _refit(model, spec, digits, split, steps: int = 300, seed: int = 0, whole_head: bool = False) -> dict:
    return refit_rows(model, lambda: spec.build(seed=seed + FRESH_SEED_OFFSET), digits.x_train[split.retain_idx],
                      digits.y_train[split.retain_idx], [C], steps, 0.01, 128, seed, whole_head)


def test_the_refit_on_the_frozen_parts_cached_features_equals_the_refit_on_images(original_mlp, digits_spec, digits,
                                                                                  split_class3):
    """DiHyFo refits from the zoo's cache (the frozen part's output, `cut`), not from images: the same head."""
    on_images, on_cache = copy.deepcopy(original_mlp), copy.deepcopy(original_mlp)
    _refit(on_images, digits_spec, digits, split_class3, whole_head=True)
    cached = frozen_features(original_mlp, digits.x_train[split_class3.retain_idx], "head")
    refit_rows(on_cache, lambda: digits_spec.build(seed=FRESH_SEED_OFFSET), cached,
               digits.y_train[split_class3.retain_idx], [C], 300, 0.01, 128, 0, whole_head=True, cut="head")
    assert torch.allclose(on_cache.fc2.weight, on_images.fc2.weight, atol=1e-5)
    assert torch.equal(on_cache.fc1.weight, original_mlp.fc1.weight)


def _class_acc(model, digits, c: int = C) -> float:
    m = digits.y_test == c
    return accuracy(predict(model, digits.x_test[m]), digits.y_test[m])


def _relearn(model, digits, split) -> int:
    m = digits.y_test == C
    return relearn_steps(model, digits.x_train[split.forget_idx], digits.y_train[split.forget_idx],
                         digits.x_test[m], digits.y_test[m], m=10, lr=3e-3, max_steps=300, seed=0)


def test_only_the_forgotten_classs_head_row_moves(original_mlp, digits_spec, digits, split_class3):
    model = copy.deepcopy(original_mlp)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    info = _refit(model, digits_spec, digits, split_class3)
    after = model.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == ["fc2.bias", "fc2.weight"] and info["applied"] and info["rows"] == [C]
    for k in changed:
        moved = (after[k] != before[k]).reshape(len(after[k]), -1).any(1)
        assert moved.nonzero().flatten().tolist() == [C]


def test_the_whole_head_refit_fits_every_row_to_features_that_drifted(original_mlp, digits_spec, digits,
                                                                     split_class3):
    """generate: dense hands the head features its generated layers compute imprecisely: the retained rows are
    then fitted to them too, while the trunk stays as it is and the forgotten row still starts fresh."""
    model = copy.deepcopy(original_mlp)
    with torch.no_grad():
        model.fc1.weight.add_(0.5 * torch.randn(model.fc1.weight.shape, generator=torch.Generator().manual_seed(0)))
    drifted = copy.deepcopy(model)
    kept = digits.y_test != C

    def retained(m) -> float:
        return accuracy(predict(m, digits.x_test[kept]), digits.y_test[kept])

    info = _refit(model, digits_spec, digits, split_class3, whole_head=True)
    assert info["whole_head"] and torch.equal(model.fc1.weight, drifted.fc1.weight)
    assert not torch.equal(model.fc2.weight[:C], drifted.fc2.weight[:C])  # retained rows moved
    assert _class_acc(model, digits) <= 0.05 and retained(model) > retained(drifted) + 0.02


def test_the_refit_row_no_longer_recognises_its_class_and_costs_the_others_nothing(original_mlp, digits_spec,
                                                                                   digits, split_class3):
    model = copy.deepcopy(original_mlp)
    _refit(model, digits_spec, digits, split_class3)
    assert _class_acc(original_mlp, digits) > 0.9 and _class_acc(model, digits) <= 0.05
    kept = digits.y_test != C
    assert accuracy(predict(model, digits.x_test[kept]), digits.y_test[kept]) >= \
        accuracy(predict(original_mlp, digits.x_test[kept]), digits.y_test[kept]) - 0.01


def test_at_a_retrains_level_the_refit_row_relearns_slower_than_theta0s_row_pushed_down(
        original_mlp, digits_spec, digits, split_class3, retrains_class3):
    """The signature the repair removes: θ0's row, only pushed down to where a retrain leaves the class, comes
    back in a few steps; a row that never read the class needs about a retrain's time."""
    v = digits.y_val == C
    target = statistics.median(float(F.cross_entropy(predict(r, digits.x_val[v]), digits.y_val[v]))
                               for r in retrains_class3)
    pushed, refit = copy.deepcopy(original_mlp), copy.deepcopy(original_mlp)
    _refit(refit, digits_spec, digits, split_class3)
    for model in (pushed, refit):
        match_level(model, digits.x_val, digits.y_val, {C: target}, max_forget_acc=0.05)
    retrain = statistics.mean(_relearn(r, digits, split_class3) for r in retrains_class3)
    assert _relearn(pushed, digits, split_class3) < _relearn(refit, digits, split_class3)
    assert _relearn(refit, digits, split_class3) >= 0.37 * retrain  # gates.min_relearn_ratio


def test_the_refit_is_seeded_and_zero_steps_leave_the_model_alone(original_mlp, digits_spec, digits, split_class3):
    a, b, c = (copy.deepcopy(original_mlp) for _ in range(3))
    _refit(a, digits_spec, digits, split_class3)
    _refit(b, digits_spec, digits, split_class3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert _refit(c, digits_spec, digits, split_class3, steps=0) == {"applied": False}
    assert all(torch.equal(x, y) for x, y in zip(c.state_dict().values(), original_mlp.state_dict().values(),
                                                 strict=True))
