"""The stronger baselines (SalUn, SCRUB) and the weak control (head-only fine-tuning) on digits: they
forget class 3 like a retrain would, their masks and frozen parameters hold bit for bit, and they take
random-subset requests."""

from __future__ import annotations

import copy

import pytest
import torch

from hyperforget.config.options import HeadFinetuneOptions, SalUnOptions, ScrubOptions, UnlearnConfig
from hyperforget.config.params import ForgetConfig
from hyperforget.data.datasets import forget_split
from hyperforget.models.metrics import accuracy
from hyperforget.models.nets import flatten, head_parameters, predict
from hyperforget.unlearn import METHODS, run_method
from hyperforget.unlearn.method import UnlearnInputs
from hyperforget.unlearn.salun import saliency_mask, wrong_labels

NEW = {"salun": SalUnOptions, "scrub": ScrubOptions, "head_finetune": HeadFinetuneOptions}


def _accuracies(model, inputs) -> dict[str, float]:
    d, forgotten = inputs.data, torch.isin(inputs.data.y_test, torch.tensor(inputs.split.classes))
    logits = predict(model, d.x_test)
    return {"forget": accuracy(predict(model, inputs.x_forget), inputs.y_forget),
            "retained_test": accuracy(logits[~forgotten], d.y_test[~forgotten])}


@pytest.fixture(scope="module")
def class3(original_mlp, digits_spec, digits, split_class3, retrains_class3):
    before = flatten(original_mlp).clone()
    inputs = UnlearnInputs(original_mlp, digits_spec, digits, split_class3, seed=0)
    results = {name: run_method(name, inputs) for name in NEW}
    refs = [_accuracies(m, inputs) for m in retrains_class3[:3]]
    reference = {k: sum(r[k] for r in refs) / len(refs) for k in refs[0]}
    return {"inputs": inputs, "results": results, "before": before, "reference": reference,
            "acc": {name: _accuracies(r.model, inputs) for name, r in results.items()}}


@pytest.mark.parametrize("name", ["salun", "scrub"])
def test_forgets_class_like_retrain_and_keeps_retained_accuracy(class3, name):
    acc, ref = class3["acc"][name], class3["reference"]
    assert acc["forget"] <= ref["forget"] + 0.05, acc
    assert abs(acc["retained_test"] - ref["retained_test"]) <= 0.05, (acc, ref)


def test_head_finetune_removes_the_class_from_the_outputs(class3):
    assert class3["acc"]["head_finetune"]["forget"] <= 0.05


def test_salun_masked_out_weights_are_bit_identical_to_theta0(class3, original_mlp):
    """With the default SGD momentum and weight decay, which would move a gradient-only mask."""
    inputs = class3["inputs"]
    masks = saliency_mask(copy.deepcopy(original_mlp), inputs.x_forget, inputs.y_forget, SalUnOptions().fraction)
    after, before = dict(class3["results"]["salun"].model.named_parameters()), dict(original_mlp.named_parameters())
    moved = 0
    for name, mask in masks.items():
        assert torch.equal(after[name][~mask], before[name][~mask]), name
        moved += int((after[name][mask] != before[name][mask]).sum())
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == round(0.5 * total)
    assert moved > 0.9 * round(0.5 * total)  # the salient half does train


def test_saliency_mask_keeps_the_largest_forget_gradients(original_mlp, digits, split_class3):
    model = copy.deepcopy(original_mlp)
    x, y = digits.x_train[split_class3.forget_idx], digits.y_train[split_class3.forget_idx]
    masks = saliency_mask(model, x, y, fraction=0.2, batch_size=50)  # batched sum = one full-batch gradient
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    grads = {n: p.grad.abs() for n, p in model.named_parameters()}
    kept = torch.cat([grads[n][m] for n, m in masks.items()])
    dropped = torch.cat([grads[n][~m] for n, m in masks.items()])
    assert kept.min() >= dropped.max() - 1e-6
    assert len(kept) == round(0.2 * (len(kept) + len(dropped)))


def test_head_finetune_leaves_every_non_head_parameter_bit_identical(class3, original_mlp):
    model = class3["results"]["head_finetune"].model
    head = set(head_parameters(model))
    before = dict(original_mlp.named_parameters())
    for name, p in model.named_parameters():
        if name in head:
            assert not torch.equal(p, before[name]), name
        else:
            assert torch.equal(p, before[name]), name
        assert p.requires_grad  # the returned model is an ordinary, trainable model again


def test_wrong_labels_are_uniform_over_the_other_classes():
    y = torch.full((9000,), 3)
    wrong = wrong_labels(y, 10, torch.Generator().manual_seed(0))
    counts = torch.bincount(wrong, minlength=10)
    assert counts[3] == 0 and counts.sum() == 9000
    assert (counts[counts > 0] - 1000).abs().max() < 120


def test_no_baseline_modifies_the_original_and_runs_are_seeded(class3, original_mlp):
    assert torch.equal(flatten(original_mlp), class3["before"])
    for name in ("salun", "scrub"):
        again = run_method(name, class3["inputs"])
        assert torch.equal(flatten(again.model), flatten(class3["results"][name].model)), name
        assert again.wall_time_s > 0 and again.steps > 0


def test_random_subset_requests_work(original_mlp, digits_spec, digits):
    split = forget_split(digits, ForgetConfig(fraction=0.1, seed=0))
    inputs = UnlearnInputs(original_mlp, digits_spec, digits, split, seed=0)
    for name in NEW:
        model = run_method(name, inputs).model
        assert all(torch.isfinite(p).all() for p in model.parameters()), name
        assert accuracy(predict(model, digits.x_test), digits.y_test) > 0.85, name


def test_registered_with_their_options_sections():
    for name, options in NEW.items():
        assert METHODS[name].options is options
        assert isinstance(getattr(UnlearnConfig(), name), options)
    assert set(NEW) <= set(UnlearnConfig.method_names())
