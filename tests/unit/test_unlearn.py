"""Unlearning methods on digits: the definition of done (forget class 3 like a retrain would), the
interface contracts (copy, seeds, registry, errors) and the traps papers.md names (head-only
retrain, masks that an optimiser can move)."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from hyperforget.base.errors import ConfigError, Diverged
from hyperforget.config.options import UnlearnConfig
from hyperforget.config.overlays import parse_params
from hyperforget.config.params import ForgetConfig, Params
from hyperforget.data.datasets import forget_split
from hyperforget.models.metrics import Evaluator
from hyperforget.models.nets import flatten
from hyperforget.unlearn import METHODS, get_method, run_method
from hyperforget.unlearn.forsaken import enforce
from hyperforget.unlearn.method import UnlearnInputs
from hyperforget.unlearn.retrain import SEED_OFFSET
from tests.recipes import CHEAP_OPTIONS, ORIGINAL_RECIPE

RECIPE = Params(train=ORIGINAL_RECIPE)  # θ0's (tests/recipes.py)
MUST_FORGET = ["neggrad_plus", "gradtau", "ssd"]  # the definition of done, beside retrain
BASELINES = ["retrain", "finetune", "neggrad", "neggrad_plus", "gradtau", "gradtau_paper", "forsaken", "ssd"]


@pytest.fixture(scope="module")
def class3(original_mlp, digits_spec, digits, split_class3):
    """Every baseline method (the hypernetwork's methods have their own tests) run once with its defaults."""
    before = flatten(original_mlp).clone()
    inputs = UnlearnInputs(original_mlp, digits_spec, digits, split_class3, seed=0)
    options = {"retrain": RECIPE.method_options("retrain", seeds=3)}
    results = {name: run_method(name, inputs, options.get(name)) for name in BASELINES}
    evaluator = Evaluator.for_original(original_mlp, digits, split_class3)
    reports = {name: evaluator.report(r.model) for name, r in results.items()}
    retrain_reports = [evaluator.report(m) for m in results["retrain"].models]
    return {"before": before, "results": results, "reports": reports, "retrain": retrain_reports,
            "original": evaluator.report(original_mlp), "inputs": inputs}


@pytest.mark.parametrize("name", MUST_FORGET)
def test_class_removal_forgets_and_keeps_retained_accuracy_of_retrain(class3, name):
    ref = sum(r["test_retained_acc"] for r in class3["retrain"]) / len(class3["retrain"])
    report = class3["reports"][name]
    assert report["forget_acc"] <= 0.05
    assert abs(report["test_retained_acc"] - ref) <= 0.05


def test_retrain_reference_forgets_with_several_seeds(class3):
    result = class3["results"]["retrain"]
    assert len(result.models) == 3 and result.model is result.models[0]
    assert all(r["forget_acc"] <= 0.05 for r in class3["retrain"])
    assert all(r["test_retained_acc"] >= 0.9 for r in class3["retrain"])


def _forget_loss(model, inputs) -> float:
    with torch.no_grad():
        return F.cross_entropy(model(inputs.x_forget), inputs.y_forget).item()


def test_every_method_moves_forget_metrics_the_right_way(class3, original_mlp):
    inputs, start = class3["inputs"], class3["original"]["forget_acc"]
    for name, result in class3["results"].items():
        assert _forget_loss(result.model, inputs) > _forget_loss(original_mlp, inputs), name
        acc = class3["reports"][name]["forget_acc"]
        # finetune never sees D_f, and ∇τ as published stops at the seen-class val loss (see gradtau.py):
        # on digits neither removes the class, but neither may make it better remembered.
        if name in ("finetune", "gradtau_paper"):
            assert acc <= start, name
        else:
            assert acc < start, name


def test_no_method_modifies_the_original(class3, original_mlp):
    assert torch.equal(flatten(original_mlp), class3["before"])


def test_retrain_reinitialises_every_parameter(original_mlp, digits_spec, digits, split_class3):
    """With a vanishing lr the retrained weights stay at their fresh init: every tensor must be new."""
    inputs = UnlearnInputs(original_mlp, digits_spec, digits, split_class3, seed=0)
    for seeds in (1, 2):
        result = run_method("retrain", inputs, {"seeds": seeds, "epochs": 1, "lr": 1e-9})
        for i, model in enumerate(result.models):
            fresh = dict(digits_spec.build(seed=SEED_OFFSET + i).named_parameters())
            for name, p in model.named_parameters():
                assert torch.allclose(p, fresh[name], atol=1e-5), (seeds, name)
                assert not torch.allclose(p, dict(original_mlp.named_parameters())[name], atol=1e-3), (seeds, name)


def test_unknown_method_is_a_config_error_listing_known_names(class3):
    for call in (lambda: get_method("forgetful"), lambda: run_method("forgetful", class3["inputs"])):
        with pytest.raises(ConfigError) as err:
            call()
        assert all(name in str(err.value) for name in METHODS)
    with pytest.raises(ConfigError, match="gradtau"):
        parse_params({"unlearn": {"method": "forgetful"}})


def test_options_are_validated_and_frozen(class3):
    with pytest.raises(ConfigError, match="invalid options"):
        run_method("gradtau", class3["inputs"], {"lr": 1e-3, "unknown_knob": 1})
    with pytest.raises(ConfigError, match="takes"):
        run_method("ssd", class3["inputs"], UnlearnConfig().gradtau)
    with pytest.raises(ValueError):
        UnlearnConfig().ssd.alpha = 3


def test_registry_and_config_sections_name_the_same_methods():
    assert set(METHODS) == set(UnlearnConfig.method_names())
    params = parse_params({})
    assert all(isinstance(params.method_options(n), METHODS[n].options) for n in METHODS)


def test_retrain_takes_its_recipe_from_train_and_has_no_section_of_its_own():
    params = parse_params({"train": {"epochs": 7, "batch_size": 16, "lr": 0.02, "weight_decay": 0.001}})
    opts = params.method_options("retrain", seeds=2)
    assert (opts.epochs, opts.batch_size, opts.lr, opts.weight_decay, opts.seeds) == (7, 16, 0.02, 0.001, 2)
    with pytest.raises(ConfigError, match="unknown key"):
        parse_params({"unlearn": {"retrain": {"epochs": 3}}})


def test_runs_are_seeded(class3):
    a, b = (run_method("neggrad_plus", class3["inputs"]) for _ in range(2))
    assert torch.equal(flatten(a.model), flatten(b.model))


def test_a_set_of_classes_is_forgotten(original_mlp, digits_spec, digits):
    split = forget_split(digits, ForgetConfig(classes=[2, 5]))
    inputs = UnlearnInputs(original_mlp, digits_spec, digits, split, seed=0)
    evaluator = Evaluator.for_original(original_mlp, digits, split)
    for name in ("retrain", "neggrad_plus", "gradtau", "forsaken"):
        options = CHEAP_OPTIONS["retrain"] if name == "retrain" else None
        report = evaluator.report(run_method(name, inputs, options).model)
        assert report["forget_acc"] <= (0.5 if name == "forsaken" else 0.05), name
        assert report["test_forgotten_acc"] <= 0.5, name


def test_forsaken_masked_weights_stay_masked(class3):
    result = run_method("forsaken", class3["inputs"], {"repair_steps": 30, "mask_factor": 0.0})
    assert result.info["masked_neurons"] and result.info["stop"] == "target reached"
    weights = dict(result.model.named_parameters())
    for entry in result.info["masked_neurons"]:  # "fc2.weight[:, k]"
        name, k = entry.split("[")[0], int(entry.split(", ")[1].rstrip("]"))
        assert torch.count_nonzero(weights[name][:, k]) == 0, entry


def test_enforce_undoes_what_momentum_and_decay_would_move():
    layer = torch.nn.Linear(4, 3)
    params = dict(layer.named_parameters())
    frozen = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in params.items()}
    with torch.no_grad():
        layer.weight[:, 1] = 0.0
    frozen["weight"][:, 1] = True
    values = {n: p.detach().clone() for n, p in params.items()}
    opt = torch.optim.AdamW(layer.parameters(), lr=0.1, weight_decay=0.5)
    x = torch.randn(16, 4)
    for step in range(5):
        opt.zero_grad()
        layer(x).pow(2).sum().backward()
        opt.step()
        if step == 0:
            assert torch.count_nonzero(layer.weight[:, 1]) > 0  # the optimiser does move it
        enforce(params, frozen, values)
        assert torch.count_nonzero(layer.weight[:, 1]) == 0


def test_a_method_that_leaves_non_finite_weights_is_refused_naming_the_options_to_lower(class3):
    broken = copy.deepcopy(class3["inputs"].original)
    with torch.no_grad():
        next(broken.parameters())[0, 0] = float("nan")  # a first-layer weight: every feature it feeds turns NaN
    with pytest.raises(Diverged, match=r"eu_k diverged: \d+ of \d+ weights are NaN.*`unlearn\.eu_k`"):
        run_method("eu_k", replace(class3["inputs"], original=broken), CHEAP_OPTIONS["eu_k"])
