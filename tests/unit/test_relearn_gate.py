"""The two-sided relearn gate (`gates.verification_checks`): a model relearning the forgotten class far slower
than the retrains over-forgot, and fails `relearn_steps_m{m}_high`. Results are built by hand."""

from __future__ import annotations

import math

import pytest

from hyperforget.config.options import VerificationGates
from hyperforget.config.params import GatesConfig
from hyperforget.verify.gates import check_gates, verification_checks

GATES = VerificationGates()  # max_relearn_ratio 2.5, relearn_band_std 3.0, min_relearn_ratio 0.4


def _result(steps: float, mean: float = 50.0, std: float = 2.0, max_steps: int = 300) -> dict:
    return {"lira_auc": 0.5, "probe_forget_acc": None, "relearn_m": [10], "relearn_max_steps": max_steps,
            "relearn_steps_m10": steps, "reference": {"relearn_steps_m10": {"mean": mean, "std": std}}}


def test_relearning_far_slower_than_the_retrains_fails_the_high_check_naming_its_limit():
    checks = verification_checks(_result(200), GATES)
    high = checks["relearn_steps_m10_high"]
    assert checks["relearn_steps_m10"]["passed"] and not high["passed"]
    assert high["op"] == "≤" and high["limit"] == 125.0  # max(50 × 2.5, 50 + 3 × 2)
    assert high["detail"] == ("relearn steps (m=10) 200.0000 > 125.0000 (max(retrain mean 50.0 × "
                              "gates.max_relearn_ratio 2.5, mean + gates.relearn_band_std 3.0 × std 2.0))")


def test_the_release_gate_names_the_high_check_among_its_reasons():
    report = {"forget_acc": 0.0, "test_retained_acc": 0.95, "mia": 0.0}
    reference = {"forget_acc": {"mean": 0.0}, "test_retained_acc": {"mean": 0.95}, "mia": {"mean": 0.0}}
    g = check_gates(report, reference, GatesConfig(), _result(295, mean=88.0, std=10.0))
    assert not g.passed and [r.split(":")[0] for r in g.reasons] == ["relearn_steps_m10_high"]
    assert list(g.checks)[-2:] == ["relearn_steps_m10", "relearn_steps_m10_high"]


@pytest.mark.parametrize("steps", [50, 20, 125])
def test_a_relearn_time_inside_the_band_passes_both_sides(steps):
    checks = verification_checks(_result(steps), GATES)
    assert checks["relearn_steps_m10"]["passed"] and checks["relearn_steps_m10_high"]["passed"]  # inclusive


def test_the_upper_band_widens_with_the_reference_spread_and_the_ratio_floors_it():
    narrow = verification_checks(_result(130, std=2.0), GATES)["relearn_steps_m10_high"]
    wide = verification_checks(_result(130, std=30.0), GATES)["relearn_steps_m10_high"]
    assert narrow["limit"] == 125.0 and not narrow["passed"]  # 50 + 3 × 2 = 56 < 50 × 2.5: the ratio
    assert wide["limit"] == 140.0 and wide["passed"]  # 50 + 3 × 30
    agree = verification_checks(_result(125, std=0.0), GATES)["relearn_steps_m10_high"]
    assert agree["limit"] == 125.0 and agree["passed"]  # two retrains that agree leave the ratio's width
    gates = VerificationGates(relearn_band_std=5.0)
    assert verification_checks(_result(130, std=30.0), gates)["relearn_steps_m10_high"]["limit"] == 200.0


def test_the_lower_limit_stays_the_ratio_whatever_the_spread():
    for std in (0.0, 2.0, 30.0):
        low = verification_checks(_result(19, std=std), GATES)["relearn_steps_m10"]
        assert low["limit"] == 20.0 and not low["passed"]  # 50 × 0.4; not widened by a noisy std


def test_a_limit_beyond_the_budget_still_checks_and_says_it_cannot_fail():
    never = verification_checks(_result(101, max_steps=100), GATES)["relearn_steps_m10_high"]
    assert never["passed"] and never["limit"] == 125.0  # 101 = never relearnt within 100 steps
    assert "relearn_max_steps + 1 = 101" in never["detail"]
    assert "every value within the budget passes" in never["detail"]
    within = verification_checks(_result(100, max_steps=300), GATES)["relearn_steps_m10_high"]
    assert "budget" not in within["detail"]


def test_never_relearning_within_the_budget_fails_when_the_limit_is_below_it():
    scrub = verification_checks(_result(301, mean=63.0, std=3.0), GATES)["relearn_steps_m10_high"]
    assert not scrub["passed"] and scrub["limit"] == 157.5  # digits: SCRUB against the retrains' 63 ± 3


def test_an_unmeasured_value_or_reference_fails_and_a_missing_std_leaves_the_ratio():
    assert not verification_checks(_result(float("nan")), GATES)["relearn_steps_m10_high"]["passed"]
    nan_ref = verification_checks(_result(50, mean=float("nan")), GATES)["relearn_steps_m10_high"]
    assert not nan_ref["passed"] and math.isnan(nan_ref["limit"]) and "not measured" in nan_ref["detail"]
    no_std = _result(130) | {"reference": {"relearn_steps_m10": {"mean": 50.0}}}
    assert verification_checks(no_std, GATES)["relearn_steps_m10_high"]["limit"] == 125.0


def test_the_band_keys_are_validated():
    assert (GATES.max_relearn_ratio, GATES.relearn_band_std) == (2.5, 3.0)
    with pytest.raises(ValueError, match="max_relearn_ratio"):
        VerificationGates(max_relearn_ratio=0.5)
    with pytest.raises(ValueError, match="below min_relearn_ratio"):
        VerificationGates(min_relearn_ratio=3.0, max_relearn_ratio=2.0)
    with pytest.raises(ValueError):
        VerificationGates(relearn_band_std=-1.0)
