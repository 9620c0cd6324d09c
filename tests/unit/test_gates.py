"""The release gates: each limit decides on its own, and failures say the numbers."""

import math

from hyperforget.config import GatesConfig
from hyperforget.gates import GateResult, check_gates

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
    assert g.reasons[0].startswith("forget acc 0.2000 > 0.0500 (max(gates.max_forget_acc, retrain mean 0.0000")


def test_retained_acc_is_judged_against_retrain_mean_minus_drop():
    assert check_gates(report(test_retained_acc=0.901), REFERENCE, GATES).passed  # limit 0.90
    g = check_gates(report(test_retained_acc=0.89), REFERENCE, GATES)
    assert not g.passed
    assert "retained test acc 0.8900 < 0.9000" in g.reasons[0] and "retrain mean 0.9500" in g.reasons[0]


def test_mia_is_an_absolute_threshold_where_retrain_sits_below_it():
    assert check_gates(report(mia=0.5), REFERENCE, GATES).passed  # boundary is inclusive
    g = check_gates(report(mia=0.51), REFERENCE, GATES)
    assert not g.passed and g.reasons[0].startswith("MIA member rate on D_f 0.5100 > 0.5000")


def test_random_subset_limits_follow_the_retrain_reference():
    # a retrained model still recognises a random D_f: forget acc 0.90, MIA 0.88
    ref = REFERENCE | {"forget_acc": {"mean": 0.90, "std": 0.01}, "mia": {"mean": 0.88, "std": 0.01}}
    assert check_gates(report(forget_acc=0.93, mia=0.92), ref, GATES).passed
    g = check_gates(report(forget_acc=0.97, mia=0.95), ref, GATES)
    assert not g.checks["forget_acc"]["passed"] and not g.checks["mia"]["passed"]
    assert "0.9700 > 0.9500" in g.reasons[0]


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
