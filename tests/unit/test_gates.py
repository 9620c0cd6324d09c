"""The release gates: each limit decides on its own, and failures name the check and say the numbers."""

import math

import pytest

from hyperforget.config.params import GatesConfig
from hyperforget.verify.gates import GateResult, check_gates, record_power, record_widening

GATES = GatesConfig(max_forget_acc=0.05, max_retain_drop=0.05, max_mia=0.5)
REFERENCE = {"test_retained_acc": {"mean": 0.95, "std": 0.01}, "forget_acc": {"mean": 0.0, "std": 0.0},
             "mia": {"mean": 0.0, "std": 0.0}}


def report(**over):
    return {"forget_acc": 0.0, "test_retained_acc": 0.94, "mia": 0.1, **over}


def test_good_model_passes_with_no_reasons():
    g = check_gates(report(), REFERENCE, GATES)
    assert g.passed and g.reasons == []
    assert set(g.checks) == {"forget_acc", "retained_test_acc", "mia"}
    assert all(c["passed"] for c in g.checks.values())


def test_forget_acc_above_limit_fails_and_says_the_numbers():
    g = check_gates(report(forget_acc=0.2), REFERENCE, GATES)
    assert not g.passed and not g.checks["forget_acc"]["passed"]
    assert g.reasons[0].startswith("forget_acc: forget acc 0.2000 > 0.0500 (max(gates.max_forget_acc, retrain mean "
                                   "0.0000")


def test_retained_acc_is_judged_against_retrain_mean_minus_drop():
    assert check_gates(report(test_retained_acc=0.901), REFERENCE, GATES).passed  # limit 0.90
    g = check_gates(report(test_retained_acc=0.89), REFERENCE, GATES)
    assert not g.passed
    assert "retained test acc 0.8900 < 0.9000" in g.reasons[0] and "retrain mean 0.9500" in g.reasons[0]


def test_mia_is_an_absolute_threshold_where_retrain_sits_below_it():
    assert check_gates(report(mia=0.5), REFERENCE, GATES).passed  # boundary is inclusive
    g = check_gates(report(mia=0.51), REFERENCE, GATES)
    assert not g.passed and g.reasons[0].startswith("mia: MIA member rate on D_f 0.5100 > 0.5000")


def test_random_subset_limits_follow_the_retrain_reference():
    # a retrained model still recognises a random D_f: forget acc 0.90, MIA 0.88
    ref = REFERENCE | {"forget_acc": {"mean": 0.90, "std": 0.01}, "mia": {"mean": 0.88, "std": 0.01}}
    assert check_gates(report(forget_acc=0.93, mia=0.92), ref, GATES).passed
    g = check_gates(report(forget_acc=0.97, mia=0.95), ref, GATES)
    assert not g.checks["forget_acc"]["passed"] and not g.checks["mia"]["passed"]
    assert "0.9700 > 0.9500" in g.reasons[0]


def test_a_small_record_request_widens_its_excesses_by_the_spread_of_its_rates():
    """A true retrain classifies a person's few records about as well as unseen data: all 5 right is its likeliest
    outcome (0.94⁵ ≈ 0.73), which the limits set on 100-record requests rejected. Below the calibration size the
    excess widens by √(100 / n), the binomial spread; at or above it the calibrated limit stands."""
    ref = REFERENCE | {"forget_acc": {"mean": 0.94, "std": 0.03}, "mia": {"mean": 0.30, "std": 0.05}}
    assert not check_gates(report(forget_acc=1.0, mia=0.5, forget_records=100), ref, GATES).passed
    assert not check_gates(report(forget_acc=1.0, mia=0.5), ref, GATES).passed  # a class request: never widened
    small = check_gates(report(forget_acc=1.0, mia=0.5, forget_records=4), ref, GATES)
    assert small.passed, small.reasons
    assert small.checks["forget_acc"]["limit"] == pytest.approx(0.94 + 0.05 * 5)  # √(100 / 4) = 5
    assert "the excess × 5.00 for 4 records" in small.checks["mia"]["detail"]
    assert check_gates(report(forget_acc=1.0, forget_records=1000), ref, GATES).checks["forget_acc"]["limit"] == \
        pytest.approx(0.99)  # never narrower than calibrated


def test_the_record_lira_limit_widens_with_the_auc_null_spread():
    """The record LiRA AUC compares D_f's n records with M unseen examples: a Mann–Whitney statistic whose null
    spread is √((n + M + 1) / (12 n M)); with 5 records it is 0.13 (a retrain's AUC spread 0.50 ± 0.13 measured),
    with 100 0.03, where the excess was calibrated."""
    result = {"lira_auc": 0.70, "lira_min_out_per_record": 3, "lira_unseen": 360}
    assert not check_gates(report(), REFERENCE, GATES, result | {"lira_records": 100}).passed
    few = check_gates(report(), REFERENCE, GATES, result | {"lira_records": 5})
    assert few.passed and few.checks["lira_auc"]["limit"] == pytest.approx(
        0.5 + 0.06 * record_widening(5, 100, 360))
    assert record_widening(5, 100, 360) == pytest.approx(
        math.sqrt((5 + 361) / (5 * 360)) / math.sqrt((100 + 361) / (100 * 360)))
    assert record_widening(100, 100, 360) == record_widening(400, 100) == 1.0


def test_a_record_request_has_power_only_if_theta0_surely_fails_its_lira_check():
    """θ0's record LiRA AUC is one noisy draw: above the limit by chance as often as a retrain's. Power needs the
    AUC's lower 95% bound above the limit as well; otherwise the verdict says why it has none."""
    theta0 = {"lira_auc": 0.70, "lira_min_out_per_record": 3, "lira_unseen": 360, "lira_records": 100}
    checks = check_gates(report(), REFERENCE, GATES, theta0 | {"lira_auc_low": 0.60}).checks
    assert not checks["lira_auc"]["passed"]  # 0.70 > 0.56, and surely: 0.60 > 0.56
    assert record_power(checks, theta0 | {"lira_auc_low": 0.60}) | {"why": ""} == {
        "has_power": True, "original_lira_auc_low": 0.60, "why": ""}
    chance = record_power(checks, theta0 | {"lira_auc_low": 0.52})  # failed, but within its noise
    assert not chance["has_power"] and "not surely above the limit 0.560" in chance["why"]
    assert not record_power(checks, theta0)["has_power"]  # no bound measured: no power claimed
    passed = check_gates(report(), REFERENCE, GATES, theta0 | {"lira_auc": 0.5, "lira_auc_low": 0.45}).checks
    assert not record_power(passed, theta0 | {"lira_auc": 0.5, "lira_auc_low": 0.45})["has_power"]


def test_every_failure_is_reported():
    g = check_gates(report(forget_acc=1.0, test_retained_acc=0.1, mia=1.0), REFERENCE, GATES)
    assert len(g.reasons) == 3


def test_unmeasured_metric_or_reference_fails():
    g = check_gates({k: v for k, v in report().items() if k != "mia"}, REFERENCE, GATES)
    assert not g.passed and "not measured" in g.reasons[0]
    g = check_gates(report(forget_acc=math.nan), REFERENCE, GATES)
    assert not g.passed
    g = check_gates(report(), {}, GATES)
    assert not g.passed and "limit not measured" in g.reasons[0]


def test_result_round_trips_through_a_dict():
    g = check_gates(report(forget_acc=0.3), REFERENCE, GATES)
    assert GateResult.from_dict(g.to_dict()) == g
    assert [line.split()[0] for line in g.lines()] == ["FAIL", "PASS", "PASS"]


# ---------- the verification gates (numbers: options.VerificationGates) ----------

VERIFIED = {"lira_auc": 0.6, "probe_forget_acc": 0.8, "relearn_m": [10, 100], "relearn_steps_m10": 40,
            "relearn_steps_m100": 35, "reference": {"probe_forget_acc": {"mean": 0.75, "std": 0.05},
                                                     "relearn_steps_m10": {"mean": 50.0, "std": 5.0},
                                                     "relearn_steps_m100": {"mean": 45.0, "std": 5.0}}}


def test_verification_gates_join_the_output_gates_with_the_configured_limits():
    g = check_gates(report(), REFERENCE, GATES, VERIFIED)
    assert g.passed and list(g.checks) == ["forget_acc", "retained_test_acc", "mia", "lira_auc", "probe_forget_acc",
                                           "relearn_steps_m10", "relearn_steps_m10_high", "relearn_steps_m100",
                                           "relearn_steps_m100_high"]
    assert g.checks["lira_auc"]["limit"] == 0.95 and g.checks["relearn_steps_m10"]["limit"] == 20.0  # defaults
    strict = GatesConfig(max_lira_auc_excess=0.05, max_probe_excess=0.01, min_relearn_ratio=0.9)
    g = check_gates(report(), REFERENCE, strict, VERIFIED)
    assert not g.passed and [r.split(":")[0] for r in g.reasons] == ["lira_auc", "probe_forget_acc",
                                                                     "relearn_steps_m10", "relearn_steps_m100"]
    assert g.reasons[0] == ("lira_auc: LiRA AUC against the retrains 0.6000 > 0.5500 "
                            "(0.5 + gates.max_lira_auc_excess 0.05)")
    assert "relearn steps (m=10) 40.0000 < 45.0000 (retrain mean 50.0 × gates.min_relearn_ratio 0.9)" in g.reasons[2]


def test_a_deficit_below_one_half_makes_the_lira_gate_two_sided():
    assert "lira_auc_low" not in check_gates(report(), REFERENCE, GATES, VERIFIED).checks  # one-sided by default
    two_sided = GatesConfig(max_lira_auc_deficit=0.3)
    assert check_gates(report(), REFERENCE, two_sided, VERIFIED).passed  # 0.6 ≥ 0.2
    g = check_gates(report(), REFERENCE, two_sided, VERIFIED | {"lira_auc": 0.1})
    assert not g.passed and g.reasons == ["lira_auc_low: LiRA AUC against the retrains 0.1000 < 0.2000 "
                                          "(0.5 − gates.max_lira_auc_deficit 0.3)"]


def test_the_cross_fitted_probe_is_gated_only_where_its_limit_is_calibrated():
    logit = VERIFIED | {"probe_forget_logit": 2.9,
                        "reference": VERIFIED["reference"] | {"probe_forget_logit": {"mean": 2.2, "std": 0.1}}}
    assert "probe_forget_logit" not in check_gates(report(), REFERENCE, GATES, logit).checks  # measured, not gated
    assert check_gates(report(), REFERENCE, GatesConfig(max_probe_logit_excess=0.8), logit).passed
    g = check_gates(report(), REFERENCE, GatesConfig(max_probe_logit_excess=0.5), logit)
    assert not g.passed and g.reasons == ["probe_forget_logit: probe confidence (log-odds) 2.9000 > 2.7000 "
                                          "(retrain mean 2.200 + gates.max_probe_logit_excess 0.5)"]
    unmeasured = check_gates(report(), REFERENCE, GatesConfig(max_probe_logit_excess=0.8), VERIFIED)  # measured before
    assert not unmeasured.passed and "not measured" in unmeasured.checks["probe_forget_logit"]["detail"]


def test_a_release_without_verification_fails_a_check_named_verification():
    assert set(check_gates(report(), REFERENCE, GATES).checks) == {"forget_acc", "retained_test_acc", "mia"}
    g = check_gates(report(), REFERENCE, GATES, require_verification=True)
    assert not g.passed and g.reasons == [f"verification: {g.checks['verification']['detail']}"]
    assert "retrain_seeds ≥ 3" in g.reasons[0]


def test_random_subset_verification_gates_lira_only():
    subset = {"lira_auc": 0.97, "probe_forget_acc": None, "relearn_m": [10], "relearn_steps_m10": None,
              "reference": {"probe_forget_acc": None, "relearn_steps_m10": None}}
    g = check_gates(report(), REFERENCE, GATES, subset)
    assert set(g.checks) == {"forget_acc", "retained_test_acc", "mia", "lira_auc"}
    assert not g.checks["lira_auc"]["passed"]
