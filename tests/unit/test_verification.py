"""Honest verification (LiRA on D_f, linear probe, relearn time): each metric against a hand-computed
case, and the calibration the gates promise on digits class 3 — a retrain seed that was never a
reference passes every check, θ0 and head-only fine-tuning (forget accuracy ~0) do not. (The same on a small
CNN: tests/model/test_quality_bars.py.)"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_info, threadpool_limits
from torch import nn

from hyperforget.base.errors import ConfigError
from hyperforget.config.options import VerificationGates, VerificationOptions
from hyperforget.config.params import ForgetConfig, GatesConfig
from hyperforget.data.datasets import forget_split
from hyperforget.models.metrics import Evaluator, accuracy, summarise
from hyperforget.models.nets import HEAD_LAYERS, ModelSpec, head_parameters, predict
from hyperforget.unlearn import run_method
from hyperforget.unlearn.method import UnlearnInputs
from hyperforget.verify.gates import check_gates
from hyperforget.verify.lira import (
    auc,
    auc_lower_bound,
    class_audit,
    lira_audit,
    population_auc,
    true_class_logit,
    z_scores,
)
from hyperforget.verify.probe import PROBE_FOLDS, confidence_sets, probe_accuracy, probe_confidence, probe_sets
from hyperforget.verify.relearn import reaches, relearn_steps
from hyperforget.verify.verdict import retrain_row, shadows_and_held_out, verification_checks, verify


@pytest.fixture(scope="session")
def retrains(retrains_class3):
    """Four retrains on D_r with θ0's recipe (tests/fixtures.py): two shadows, one held out, one never seen."""
    return retrains_class3


class Table(nn.Module):
    """Returns fixed logits: example i (input value i) gets row i of `logits`."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits, dtype=torch.float64))

    def forward(self, x):
        return self.logits[x.long().flatten()]


class Features(nn.Module):
    """A 'model' whose penultimate features are its input."""

    def features(self, x):
        return x

    def forward(self, x):
        return x


# ---------- the metrics by hand ----------


def test_true_class_logit_is_the_log_odds_of_the_true_class_even_when_saturated():
    model = Table([[2.0, 0.0, 0.0], [0.0, 1000.0, 0.0], [-1000.0, 0.0, 0.0]])
    phi = true_class_logit(model, torch.arange(3), torch.tensor([0, 1, 0]))
    p = math.exp(2) / (math.exp(2) + 2)
    assert phi[0] == pytest.approx(math.log(p / (1 - p)))
    assert phi[1] == pytest.approx(1000 - math.log(2))  # p_y rounds to 1: naive log(p/(1−p)) is inf
    assert phi[2] == pytest.approx(-1000 - math.log(2))


def test_lira_z_scores_a_hand_computed_case_with_the_variance_floor():
    # two classes, label 0: φ = logit0 − logit1. Shadow φ: example 0 → {0, 2}, example 1 → {2, 2}.
    shadows = [Table([[0.0, 0.0], [2.0, 0.0]]), Table([[2.0, 0.0], [2.0, 0.0]])]
    target = Table([[3.0, 0.0], [2.0, 0.0]])
    x, y = torch.arange(2), torch.zeros(2, dtype=torch.long)
    phis, phi = np.stack([true_class_logit(m, x, y) for m in shadows]), true_class_logit(target, x, y)
    # μ = (1, 2); unbiased var = (2, 0); floor = max(mean var 1, min_var) → σ² = (2, 1)
    assert z_scores(phi, phis, min_var=1e-2) == pytest.approx([2 / math.sqrt(2), 0.0])
    assert z_scores(phi, phis, min_var=4.0) == pytest.approx([1.0, 0.0])  # absolute floor
    with pytest.raises(ConfigError, match="at least 2"):
        class_audit(phis[:1], phi, phi)


def test_auc_tpr_at_fpr_and_population_auc_on_synthetic_scores():
    assert auc(np.array([3.0, 4.0, 5.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(8.5 / 9)  # tie = ½
    assert auc(np.zeros(4), np.zeros(4)) == 0.5
    from hyperforget.verify.lira import tpr_at_fpr

    neg = np.arange(100.0)  # 1% of 100 negatives may exceed the threshold: it is 98
    assert tpr_at_fpr(np.array([97.0, 98.0, 99.0, 150.0]), neg, 0.01) == 0.5
    assert tpr_at_fpr(np.array([99.0, 99.5]), neg, 0.0) == 0.5  # no false positive allowed: above 99
    assert population_auc(np.zeros(5)) == 0.5
    assert population_auc(np.array([10.0, -10.0])) == pytest.approx(0.5)
    assert population_auc(np.array([1.0])) == pytest.approx(0.8413447, abs=1e-6)


def test_the_auc_lower_bound_covers_a_chance_auc_and_tightens_with_more_records():
    """DeLong's bound on AUC: on a hand case (every positive above every negative, none tied) the components have
    no spread and the bound is the AUC; from scores of one distribution it stays under ½ in about 95% of draws
    (small samples a little less); a real separation is read surely once there are enough records."""
    assert auc_lower_bound(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == pytest.approx(1.0)
    assert math.isnan(auc_lower_bound(np.array([3.0]), np.arange(10.0)))  # one record: no variance to read
    rng = np.random.default_rng(0)
    for n in (5, 100):
        above = [auc_lower_bound(rng.normal(size=n), rng.normal(size=360)) > 0.5 for _ in range(400)]
        assert np.mean(above) < 0.12
    pos, neg = rng.normal(1.0, 1.0, 200), rng.normal(size=360)  # AUC Φ(1/√2) ≈ 0.76
    assert 0.5 < auc_lower_bound(pos, neg) < auc(pos, neg) < auc_lower_bound(pos, neg) + 0.06
    assert auc(pos[:5], neg) - auc_lower_bound(pos[:5], neg) > 0.06  # 5 of the same records: far less sure


def test_lira_audit_of_the_held_out_retrain_against_itself_is_chance(retrains, digits, split_class3):
    x, y = digits.x_train[split_class3.forget_idx], digits.y_train[split_class3.forget_idx]
    same = lira_audit(retrains[:2], retrains[2], retrains[2], x, y)
    assert same["auc_vs_held_out"] == pytest.approx(0.5) and same["auc"] == same["held_out_auc"]
    assert same["n_shadows"] == 2
    assert same["tpr_at_1fpr"] <= 0.01


def test_probe_sets_are_class_balanced_draws_from_val_and_test(digits):
    xtr, ytr, _, yte = probe_sets(digits, seed=0, per_class=5)
    assert torch.bincount(ytr).tolist() == [5] * 10
    counts = torch.bincount(yte)
    assert (counts == counts[0]).all() and counts[0] == torch.bincount(digits.y_test).min()
    val_rows = {tuple(r.flatten().tolist()) for r in digits.x_val}
    assert all(tuple(r.flatten().tolist()) in val_rows for r in xtr)  # held-out data, never train
    again = probe_sets(digits, seed=0, per_class=5)
    assert torch.equal(again[0], xtr) and not torch.equal(probe_sets(digits, seed=1, per_class=5)[0], xtr)


def test_probe_accuracy_reads_only_what_the_features_hold():
    y = torch.arange(10).repeat(6)
    perfect = F.one_hot(y, 10).double()
    assert probe_accuracy(Features(), perfect, y, perfect, y, [3]) == 1.0
    merged = perfect.clone()
    merged[y == 3] = perfect[y == 5][0]  # class 3's features are class 5's: the pair is a coin the probe can't flip
    assert probe_accuracy(Features(), merged, y, merged, y, [3, 5]) == 0.5
    assert probe_accuracy(Features(), merged, y, merged, y, [0, 1, 2]) == 1.0


def test_confidence_sets_draw_balanced_from_val_and_test_and_fold_every_row_once(digits):
    x, y, folds = confidence_sets(digits, seed=0, per_class=20)
    assert torch.bincount(y).tolist() == [20] * 10
    held = {tuple(r.flatten().tolist()) for r in torch.cat([digits.x_val, digits.x_test])}
    assert all(tuple(r.flatten().tolist()) in held for r in x)  # held-out data, never train
    scored = np.concatenate([score for _, score in folds])
    assert len(folds) == PROBE_FOLDS and sorted(scored.tolist()) == list(range(len(y)))
    assert all(not set(fit) & set(score) for fit, score in folds)  # no row is scored by a probe that saw it
    rarest = int(torch.bincount(torch.cat([digits.y_val, digits.y_test])).min())
    assert torch.bincount(confidence_sets(digits, seed=0, per_class=10**6)[1]).tolist() == [rarest] * 10


def test_probe_confidence_is_high_where_features_hold_the_class_and_chance_where_they_do_not():
    y = torch.arange(10).repeat(20)
    gen = torch.Generator().manual_seed(0)
    clear = F.one_hot(y, 10).double() + 0.05 * torch.randn(len(y), 10, generator=gen, dtype=torch.float64)
    rows = np.arange(len(y))
    folds = [(np.setdiff1d(rows, score), score) for score in np.array_split(rows, 5)]
    held = probe_confidence(Features(), clear, y, folds, [3])
    merged = clear.clone()
    merged[y == 3] = merged[y == 5]  # class 3's features are class 5's: at best a coin between them
    lost = probe_confidence(Features(), merged, y, folds, [3])
    assert held > 2.0  # log-odds: mean true-class probability above 0.88
    assert lost < 0.05 and lost < held - 2.0  # log-odds 0: probability one half


def test_the_probe_fits_on_one_blas_thread_and_gives_the_threads_back(monkeypatch):
    def blas_threads() -> set[int]:
        return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

    seen = []
    fit = LogisticRegression.fit

    def spy(self, *args, **kwargs):
        seen.append(blas_threads())
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(LogisticRegression, "fit", spy)
    y = torch.arange(10).repeat(20)
    x = F.one_hot(y, 10).double() + 0.05 * torch.randn(len(y), 10, generator=torch.Generator().manual_seed(0),
                                                        dtype=torch.float64)
    rows = np.arange(len(y))
    folds = [(np.setdiff1d(rows, score), score) for score in np.array_split(rows, 5)]
    with threadpool_limits(limits=2, user_api="blas"):  # what OpenBLAS takes on this machine outside tests
        probe_confidence(Features(), x, y, folds, [3])
        probe_accuracy(Features(), x, y, x, y, [3])
        after = blas_threads()
    assert seen == [{1}] * 6  # 5 cross-fitted probes and the accuracy probe
    assert after == {2}


def test_relearn_steps_zero_for_a_model_that_classifies_sentinel_when_never(original_mlp, retrains, digits,
                                                                           split_class3):
    xf, yf = digits.x_train[split_class3.forget_idx], digits.y_train[split_class3.forget_idx]
    keep = digits.y_test == 3
    xe, ye = digits.x_test[keep], digits.y_test[keep]
    before = [p.clone() for p in retrains[0].parameters()]
    assert relearn_steps(original_mlp, xf, yf, xe, ye, m=10, lr=3e-3, max_steps=50, seed=0) == 0
    assert relearn_steps(retrains[0], xf, yf, xe, ye, m=10, lr=1e-9, max_steps=5, seed=0) == 6
    steps = relearn_steps(retrains[0], xf, yf, xe, ye, m=10, lr=3e-3, max_steps=300, seed=0)
    assert 0 < steps <= 300
    assert relearn_steps(retrains[0], xf, yf, xe, ye, m=10, lr=3e-3, max_steps=300, seed=0) == steps
    assert all(torch.equal(a, b) for a, b in zip(before, retrains[0].parameters(), strict=True))  # a copy learns


def test_features_feed_the_head_for_every_architecture():
    x = torch.randn(4, 1, 8, 8)
    for arch, width in (("mlp", 10), ("cnn", 4)):
        model = ModelSpec(arch, (1, 8, 8), 10, width).build(seed=0)
        head = getattr(model, HEAD_LAYERS[arch])
        assert torch.equal(model(x), head(model.features(x)))
        assert head_parameters(model) == [f"{HEAD_LAYERS[arch]}.weight", f"{HEAD_LAYERS[arch]}.bias"]


def test_verification_options_reject_bad_relearn_counts():
    with pytest.raises(ValueError):
        VerificationOptions(relearn_m=(10, 10))
    with pytest.raises(ValueError):
        VerificationOptions(relearn_m=(0,))


# ---------- gates ----------


def _result(lira=0.5, probe=0.8, r10=50.0, ref_probe=0.8, ref_r10=50.0):
    return {"lira_auc": lira, "probe_forget_acc": probe, "relearn_m": [10], "relearn_steps_m10": r10,
            "reference": {"probe_forget_acc": {"mean": ref_probe, "std": 0.0},
                          "relearn_steps_m10": {"mean": ref_r10, "std": 0.0}}}


def test_verification_checks_gate_the_gaps_to_the_reference():
    g = VerificationGates(max_lira_auc_excess=0.1, max_probe_excess=0.05, min_relearn_ratio=0.5)
    checks = verification_checks(_result(), g)
    assert set(checks) == {"lira_auc", "probe_forget_acc", "relearn_steps_m10", "relearn_steps_m10_high"}
    assert all(c["passed"] for c in checks.values())
    assert set(checks["lira_auc"]) == {"value", "op", "limit", "passed", "detail"}
    assert checks["lira_auc"]["limit"] == pytest.approx(0.6) and checks["relearn_steps_m10"]["limit"] == 25
    assert not verification_checks(_result(lira=0.61), g)["lira_auc"]["passed"]
    assert not verification_checks(_result(probe=0.86), g)["probe_forget_acc"]["passed"]
    assert verification_checks(_result(probe=0.85), g)["probe_forget_acc"]["passed"]  # limit is inclusive
    assert not verification_checks(_result(r10=24), g)["relearn_steps_m10"]["passed"]
    assert not verification_checks(_result(lira=float("nan")), g)["lira_auc"]["passed"]  # unmeasured fails
    assert not verification_checks(_result(ref_probe=float("nan")), g)["probe_forget_acc"]["passed"]


# ---------- calibration on digits class 3 ----------


@pytest.fixture(scope="module")
def verified(original_mlp, digits_spec, digits, split_class3, retrains):
    """Each model's verification and its verdict on every gate (`check_gates`, default thresholds), as
    `compare` builds them with retrain_seeds = 3: retrains 0-1 are the shadows and the probe/relearn reference,
    retrain 2 the held-out seed, the output gates' summary is over all three; retrain 3 was never any of them."""
    refs, held_out, unseen = retrains[:2], retrains[2], retrains[3]
    inputs = UnlearnInputs(original_mlp, digits_spec, digits, split_class3, seed=0)
    head_only = run_method("head_finetune", inputs).model
    ev = Evaluator.for_original(original_mlp, digits, split_class3)
    summary = summarise([ev.report(m) for m in retrains[:3]])
    out = {}
    for name, model in (("retrain", unseen), ("held_out", held_out), ("theta0", original_mlp),
                        ("head_finetune", head_only)):
        v = verify(model, refs, held_out, digits, split_class3)
        out[name] = {"verification": v, "gates": check_gates(ev.report(model), summary, GatesConfig(), v)}
    return out | {"head_forget_acc": accuracy(predict(head_only, inputs.x_forget), inputs.y_forget)}


def test_verify_reports_every_metric_for_model_and_reference(verified):
    import json

    r = verified["retrain"]["verification"]
    for key in ("lira_auc", "lira_tpr_at_1fpr", "probe_forget_acc", "relearn_steps_m10", "relearn_steps_m100"):
        assert isinstance(r[key], int | float) and not math.isnan(r[key]), key
    for key in ("probe_forget_acc", "relearn_steps_m10", "relearn_steps_m100"):
        assert set(r["reference"][key]) == {"mean", "std", "values"} and len(r["reference"][key]["values"]) == 2
    assert r["lira_n_shadows"] == 2
    json.dumps(r, allow_nan=False)


def _failed(gate) -> set[str]:
    return {name for name, c in gate.checks.items() if not c["passed"]}


@pytest.mark.parametrize("who", ["retrain", "held_out"])
def test_a_held_out_retrain_seed_passes_every_gate(verified, who):
    """Calibration: a retrain that was never a shadow passes the output and verification gates alike (the seed
    the comparison holds out, and one that was never in the reference at all)."""
    gate = verified[who]["gates"]
    assert set(gate.checks) == {"forget_acc", "retained_test_acc", "mia", "lira_auc", "probe_forget_acc",
                                "relearn_steps_m10", "relearn_steps_m100", "relearn_steps_m10_high",
                                "relearn_steps_m100_high"}
    assert gate.passed, gate.reasons
    assert verification_checks(verified[who]["verification"]).keys() <= gate.checks.keys()


def test_theta0_fails_the_lira_and_relearn_gates(verified):
    """θ0 never forgot: LiRA sees D_f as trained on (AUC ≈ 1) and it 'relearns' in 0 steps. (The probe gate does
    not separate θ0 on digits' 10-unit MLP: a retrain's features already separate class 3; see VerificationGates.)"""
    gate, v = verified["theta0"]["gates"], verified["theta0"]["verification"]
    assert {"lira_auc", "relearn_steps_m10", "relearn_steps_m100"} <= _failed(gate)
    assert v["lira_auc"] > 0.99 and v["relearn_steps_m10"] == 0
    assert any(r.startswith("lira_auc: LiRA AUC against the retrains") for r in gate.reasons)


def test_head_only_finetuning_passes_the_output_gates_but_fails_relearn(verified):
    """Gao et al.'s illusion on digits' MLP: forget accuracy ~0 and every output gate passes, but the untouched
    features relearn the class several times faster than a retrain: only the verification gates catch it."""
    assert verified["head_forget_acc"] <= 0.02
    gate = verified["head_finetune"]["gates"]
    failed = _failed(gate)
    assert not failed & {"forget_acc", "retained_test_acc", "mia"}
    assert {"relearn_steps_m10", "relearn_steps_m100"} <= failed and not gate.passed
    assert any(r.startswith("relearn_steps_m10: relearn steps (m=10)") for r in gate.reasons)


def test_retrain_row_spreads_every_metric_over_the_seeds(retrains, digits, split_class3):
    three = retrain_row(retrains[:3], digits, split_class3)
    assert len(three["lira_auc"]["values"]) == 3 and three["lira_tpr_at_1fpr"] is None  # TPR needs a 4th seed
    assert len(three["probe_forget_acc"]["values"]) == 2  # the shadows: the reference the gates use
    four = retrain_row(retrains, digits, split_class3)
    assert len(four["lira_tpr_at_1fpr"]["values"]) == 4 and 0 <= four["lira_tpr_at_1fpr"]["mean"] <= 1
    x, y = digits.x_train[split_class3.forget_idx], digits.y_train[split_class3.forget_idx]
    others = np.stack([true_class_logit(m, x, y) for m in retrains[1:]])
    loo0 = population_auc(z_scores(true_class_logit(retrains[0], x, y), others, 1e-2))  # 0 against the other three
    assert four["lira_auc"]["values"][0] == pytest.approx(loo0)
    with pytest.raises(ConfigError, match="retrain_seeds ≥ 3"):
        shadows_and_held_out(retrains[:2])


def test_random_subset_requests_get_lira_only(original_mlp, digits, digits_spec, retrains):
    split = forget_split(digits, ForgetConfig(fraction=0.1, seed=0))
    result = verify(original_mlp, retrains[:2], retrains[2], digits, split)
    assert result["probe_forget_acc"] is None and result["relearn_steps_m10"] is None
    assert 0 <= result["lira_auc"] <= 1
    assert set(verification_checks(result)) == {"lira_auc"}


def test_a_diverged_model_is_measured_as_nan_and_fails_every_verification_gate(original_mlp, digits, split_class3,
                                                                                 retrains):
    diverged = copy.deepcopy(original_mlp)
    with torch.no_grad():
        next(diverged.parameters())[0, 0] = float("nan")  # what an unbounded ascent (SCRUB on MNIST) left behind
    result = verify(diverged, retrains[:2], retrains[2], digits, split_class3)
    assert result["weights_not_finite"] and math.isnan(result["lira_auc"]) and math.isnan(result["probe_forget_acc"])
    checks = verification_checks(result)
    assert set(checks) == {"lira_auc", "probe_forget_acc", "relearn_steps_m10", "relearn_steps_m100",
                           "relearn_steps_m10_high", "relearn_steps_m100_high"}
    assert not any(c["passed"] for c in checks.values())
    assert all("not measured" in c["detail"] for c in checks.values())


def test_the_relearn_check_decides_as_soon_as_the_images_read_settle_it_and_as_the_whole_pass_would(original_mlp,
                                                                                                   digits):
    read = []

    class Counting(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = original_mlp

        def forward(self, x):
            read.append(len(x))
            return self.inner(x)

    x = digits.x_train[:1000]
    y = torch.where(torch.arange(1000) < 500, digits.y_train[:1000], (digits.y_train[:1000] + 1) % 10)  # ≤ half right
    accuracy = float((predict(original_mlp, x).argmax(1) == y).float().mean())
    for target in (0.0, 0.1, 0.3, accuracy, accuracy + 1e-6, 0.6, 0.9, 1.0):
        read.clear()
        assert reaches(Counting(), x, y, target) == (accuracy >= target - 1e-9)
        assert sum(read) <= len(y)
    read.clear()
    assert not reaches(Counting(), x, y, 0.9)
    assert sum(read) < len(y)  # under 90% settled before the last batch
