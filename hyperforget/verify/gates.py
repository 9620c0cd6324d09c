"""Release gates for an unlearned model: the output gates (forget accuracy, retained test accuracy, MIA)
and the verification gates (LiRA on D_f, linear probe, relearn time; papers.md §5).

Why the output gates: a model may ship only if it no longer recognises what it was asked to forget
(forget accuracy ≤ `max_forget_acc`), still does its job (retained-class test accuracy no more than
`max_retain_drop` below the mean of the models retrained from scratch without D_f), and does not leak
membership of D_f (the loss MIA calls at most `max_mia` of D_f "member").

The MIA gate is an absolute threshold on the fraction of D_f judged member, not a gap to the retrain
reference: a retrained model's own score depends on the request (near 0 for a forgotten class), so a
relative gate would be lax exactly where leakage matters. A metric that is missing or NaN fails its
gate: an unmeasured model is not a released model.

Why the verification gates: output metrics alone cannot certify (a head-only fine-tune reaches forget accuracy 0 and
leaves the features). `verification.verify` measures, against the retrain reference, the per-example LiRA AUC on
D_f, a linear probe's accuracy on the forgotten classes and the steps to relearn them; `verification_checks` gates
each as a gap to that reference (thresholds `gates.max_lira_auc_excess`, `max_probe_excess`, `min_relearn_ratio`:
`options.VerificationGates`, where their calibration is written down). The cross-fitted probe's confidence
(`probe_forget_logit`) is gated only where `max_probe_logit_excess` is set: an experiment's calibration derives it
(`bench/gate_calibration.py`). `max_lira_auc_deficit` < 0.5 makes the LiRA gate two-sided (a model that pushes D_f
further out than any retrain would is told apart from one too: over-forgetting, the "Streisand effect"); it is off
by default because on digits a retrain seed itself can score 0.004. The relearn gate is two-sided always: a model
that relearns far slower than the retrains (`relearn_steps_m{m}_high`, above max(mean × `max_relearn_ratio`, mean +
`relearn_band_std` × std)) over-forgot the same way. A release without a verification result fails a check named
`verification`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from hyperforget.config.options import VerificationGates
from hyperforget.config.params import GatesConfig

_EPS = 1e-9  # float noise never decides a gate


@dataclass(frozen=True)
class GateResult:
    """Overall verdict, one reason per failed gate, and every check's numbers (value, op, limit)."""

    passed: bool
    reasons: list[str] = field(default_factory=list)
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GateResult:
        return cls(bool(d["passed"]), list(d.get("reasons", [])), dict(d.get("checks", {})))

    def lines(self) -> list[str]:
        """One human line per check, pass or fail (for summaries)."""
        return [f"{'PASS' if c['passed'] else 'FAIL'} {name}: {c['detail']}" for name, c in self.checks.items()]


def _value(d: dict, key: str) -> float:
    v = d.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else float("nan")


def _check(name: str, value: float, op: str, limit: float, rule: str) -> dict[str, Any]:
    if math.isnan(value) or math.isnan(limit):
        what = "the limit" if math.isnan(limit) else name
        return {"value": value, "op": op, "limit": limit, "passed": False,
                "detail": f"{what} not measured ({rule})"}
    ok = value <= limit + _EPS if op == "≤" else value >= limit - _EPS
    shown = op if ok else {"≤": ">", "≥": "<"}[op]
    return {"value": value, "op": op, "limit": limit, "passed": ok,
            "detail": f"{name} {value:.4f} {shown} {limit:.4f} ({rule})"}


def record_widening(records: float | None, calibrated: int, unseen: float | None = None) -> float:
    """How much wider a record request's excess must be than at the size it was calibrated at: the ratio of its
    statistic's null spread at `records` records to that at `calibrated`, never below 1 (a larger D_f keeps the
    calibrated limit). Forget accuracy and the MIA member rate are binomial shares of D_f (spread ∝ 1/√n); the
    record LiRA AUC is a Mann–Whitney statistic of D_f against `unseen` examples (null spread
    √((n + M + 1) / (12 n M))). Why: the limits were set on requests of `calibrated` records, and a person's
    few records spread far more: with 5 records of digits, exact retrains failed 50% of today's checks
    (docs/results/gate-calibration.md, "Small record requests")."""
    if not records or math.isnan(records):
        return 1.0
    if unseen is None:
        ratio = math.sqrt(calibrated / records)
    else:
        def var(n: float) -> float:
            return (n + unseen + 1) / (n * unseen)

        ratio = math.sqrt(var(records) / var(calibrated))
    return max(1.0, ratio)


def verification_checks(result: dict[str, Any], thresholds: VerificationGates) -> dict[str, dict]:
    """Gate the gaps to the retrain reference of a `verification.verify` result: name → {value, op, limit,
    passed, detail}. A missing or NaN value fails; probe and relearn checks exist only when `verify`
    measured them (class requests).

    Relearn is two-sided, per m: `relearn_steps_m{m}` (steps ≥ mean × `min_relearn_ratio`: relearning
    faster than a retrain means the class is still in the weights) and `relearn_steps_m{m}_high` (steps ≤
    max(mean × `max_relearn_ratio`, mean + `relearn_band_std` × std): slower than any retrain is
    over-forgetting, which tells the model apart from a retrain too). mean and std are the reference's,
    over the K − 1 reference retrains. Only the upper side takes the std: from 2-3 retrains it is noisy,
    so each side's ratio is a floor on the band's width and the std may only widen it. Widening the lower
    side the same way (min(mean × ratio, mean − band × std)) would loosen the gate that catches
    head-only fine-tuning and θ0 (calibrated as a ratio alone, `options.VerificationGates`) whenever two
    retrains happen to disagree, so the lower limit stays mean × `min_relearn_ratio`."""
    g = thresholds
    if "lira_min_out_per_record" in result:  # a record request against membership shadows: its own statistic
        widen = record_widening(_value(result, "lira_records"), g.record_calibration_records,
                                _value(result, "lira_unseen"))
        checks = {"lira_auc": _check("LiRA AUC of D_f against unseen data", _value(result, "lira_auc"), "≤",
                                     0.5 + g.max_record_lira_auc_excess * widen,
                                     f"0.5 + gates.max_record_lira_auc_excess {g.max_record_lira_auc_excess}"
                                     + _widened(widen, result.get("lira_records"), g))}
    else:
        checks = {"lira_auc": _check("LiRA AUC against the retrains", _value(result, "lira_auc"), "≤",
                                     0.5 + g.max_lira_auc_excess,
                                     f"0.5 + gates.max_lira_auc_excess {g.max_lira_auc_excess}")}
    if g.max_lira_auc_deficit < 0.5:  # two-sided: D_f pushed further out than a retrain would is a signal too
        checks["lira_auc_low"] = _check("LiRA AUC against the retrains", _value(result, "lira_auc"), "≥",
                                        0.5 - g.max_lira_auc_deficit,
                                        f"0.5 − gates.max_lira_auc_deficit {g.max_lira_auc_deficit}")
    ref = result.get("reference") or {}
    if result.get("probe_forget_acc") is not None:
        mean = _value(ref.get("probe_forget_acc") or {}, "mean")
        checks["probe_forget_acc"] = _check(
            "probe forget acc", _value(result, "probe_forget_acc"), "≤", mean + g.max_probe_excess,
            f"retrain mean {mean:.4f} + gates.max_probe_excess {g.max_probe_excess}")
    if result.get("probe_forget_acc") is not None and g.max_probe_logit_excess is not None:  # missing: fails
        mean = _value(ref.get("probe_forget_logit") or {}, "mean")
        checks["probe_forget_logit"] = _check(
            "probe confidence (log-odds)", _value(result, "probe_forget_logit"), "≤", mean + g.max_probe_logit_excess,
            f"retrain mean {mean:.3f} + gates.max_probe_logit_excess {g.max_probe_logit_excess}")
    budget = _value(result, "relearn_max_steps") + 1  # "never relearnt"; NaN when the result does not say
    for m in result.get("relearn_m", []):
        key = f"relearn_steps_m{m}"
        if result.get(key) is None:
            continue
        mean, std = _value(ref.get(key) or {}, "mean"), _value(ref.get(key) or {}, "std")
        value = _value(result, key)
        checks[key] = _check(f"relearn steps (m={m})", value, "≥", mean * g.min_relearn_ratio,
                             f"retrain mean {mean:.1f} × gates.min_relearn_ratio {g.min_relearn_ratio}")
        checks[f"{key}_high"] = _relearn_high(m, value, mean, std, budget, g)
    return checks


def _widened(widen: float, records: Any, g: VerificationGates) -> str:
    """The rule's note when a small record request widened the excess (`record_widening`)."""
    if widen <= 1.0:
        return ""
    return (f", the excess × {widen:.2f} for {records} records (calibrated at "
            f"gates.record_calibration_records {g.record_calibration_records})")


def _relearn_high(m: int, value: float, mean: float, std: float, budget: float, g: VerificationGates) -> dict:
    """Upper relearn check: steps ≤ max(mean × max_relearn_ratio, mean + relearn_band_std × std). The std of
    K − 1 = 2 reference retrains is noisy (0 when they agree), so the ratio floors the band's width; a
    missing std counts as 0 (the ratio alone)."""
    spread = 0.0 if math.isnan(std) else std
    limit = max(mean * g.max_relearn_ratio, mean + g.relearn_band_std * spread) if not math.isnan(mean) else mean
    rule = (f"max(retrain mean {mean:.1f} × gates.max_relearn_ratio {g.max_relearn_ratio}, mean + "
            f"gates.relearn_band_std {g.relearn_band_std} × std {spread:.1f})")
    if limit >= budget:
        rule += (f"; at or above the budget relearn_max_steps + 1 = {budget:.0f}, so every value within the "
                 "budget passes, never relearning included: raise evaluation.verification.relearn_max_steps "
                 "to gate over-forgetting here")
    return _check(f"relearn steps (m={m})", value, "≤", limit, rule)


def record_power(checks: dict[str, dict], verification: dict[str, Any]) -> dict[str, Any]:
    """Has a record request's test power? Only if θ0 fails its record LiRA check (`checks`: θ0's, under the
    request's limits) *surely*: the lower 95% bound of θ0's AUC (`lira_auc_low` of `verification`, θ0's
    `verify` result: `lira.auc_lower_bound`) above the check's limit too. The output gates do not count: they
    fail true retrains about as often as θ0 (bench/gate_calibration.py). Why the bound: θ0's AUC is one noisy
    draw; where θ0 remembers no more than a retrain (MNIST), it lands above the limit as often as a retrain's
    does, and a pass judged by that test would be released as if it had power."""
    lira = checks.get("lira_auc") or {}
    low = _value(verification, "lira_auc_low")
    has = not lira.get("passed", True) and not math.isnan(low) and low > lira["limit"]
    why = (f"θ0's record LiRA AUC ≥ {low:.3f} (lower 95% bound) > limit {lira['limit']:.3f}" if has else
           f"θ0's record LiRA AUC {_value(verification, 'lira_auc'):.3f} (lower 95% bound {low:.3f}) is not surely "
           f"above the limit {lira.get('limit', float('nan')):.3f}: the test cannot tell θ0 from a retrain")
    return {"has_power": has, "original_lira_auc_low": None if math.isnan(low) else low, "why": why}


def power_check(power: dict[str, Any], exact: bool) -> dict[str, Any]:
    """The `power` check: a test that θ0 passes on this request cannot tell an answer from θ0, so its pass
    certifies nothing (papers.md §5; expected for record requests on MNIST, where θ0 barely remembers single
    examples). `power` is the request's `answer.test_power`: which checks θ0 fails under the same reference. An
    exact method (a retrain without the data) needs no power: it is certified by construction."""
    fails = list(power.get("original_fails") or [])
    shown = ", ".join(fails) or "none"
    if exact:
        return {"value": float(len(fails)), "op": "", "limit": 0.0, "passed": True,
                "detail": f"exact method: certified by construction, not by the test (θ0 fails: {shown})"}
    ok = bool(power.get("has_power"))
    why = power.get("why") or ("θ0 fails this test on the request" if ok else "θ0 passes every gate on this "
                                                                             "request too")
    detail = (f"{why} ({shown}): the verdict has power" if ok else
              f"no power: {why}, so a pass would certify nothing; answer it exactly (method retrain)")
    return {"value": float(len(fails)), "op": "≥", "limit": 1.0, "passed": ok, "detail": detail}


def check_gates(report: dict, reference_summary: dict, gates: GatesConfig,
                verification: dict[str, Any] | None = None, *, require_verification: bool = False,
                power: dict[str, Any] | None = None, exact: bool = False) -> GateResult:
    """Judge an unlearning report (metrics.Evaluator.report) against the retrain reference summary
    (metrics.summarise over the retrained models: {key: {mean, std}}) and its `verification.verify` result.
    Without one, only the output gates are judged, unless `require_verification` (a release:
    `publish.gate`), where the missing result fails a check named `verification`. With `power` (θ0 judged by
    the same test) a check named `power` fails a verdict that cannot tell θ0 from a retrain (`power_check`)."""
    ref_mean = _value(reference_summary.get("test_retained_acc", {}), "mean")
    ref_forget = _value(reference_summary.get("forget_acc", {}), "mean")
    ref_mia = _value(reference_summary.get("mia", {}), "mean")
    # A retrained model still classifies a random subset about as well as unseen data (and the MIA
    # calls much of it "member"): the limits follow the retrain reference where it sits above them.
    # A record request's rates spread with its size: the excesses widen below the size they were calibrated at.
    records = report.get("forget_records")  # only a record request's report has it
    widen = record_widening(records, gates.record_calibration_records)
    forget_limit = max(gates.max_forget_acc, ref_forget + gates.max_forget_excess * widen)
    mia_limit = max(gates.max_mia, ref_mia + gates.max_mia_excess * widen)
    more = _widened(widen, records, gates)
    checks = {
        "forget_acc": _check("forget acc", _value(report, "forget_acc"), "≤", forget_limit,
                             f"max(gates.max_forget_acc, retrain mean {ref_forget:.4f} + gates.max_forget_excess)"
                             + more),
        "retained_test_acc": _check(
            "retained test acc", _value(report, "test_retained_acc"), "≥", ref_mean - gates.max_retain_drop,
            f"retrain mean {ref_mean:.4f} − gates.max_retain_drop {gates.max_retain_drop}",
        ),
        "mia": _check("MIA member rate on D_f", _value(report, "mia"), "≤", mia_limit,
                      f"max(gates.max_mia, retrain mean {ref_mia:.4f} + gates.max_mia_excess)" + more),
    }
    if verification is None and require_verification:
        checks["verification"] = {"value": float("nan"), "op": "", "limit": float("nan"), "passed": False,
                                  "detail": "verification not measured (LiRA, probe and relearn need the retrain "
                                            "reference models: evaluation.retrain_seeds ≥ 3)"}
    elif verification is not None:
        checks |= verification_checks(verification, gates)
    if power is not None:
        checks["power"] = power_check(power, exact)
    reasons = [f"{name}: {c['detail']}" for name, c in checks.items() if not c["passed"]]
    return GateResult(not reasons, reasons, checks)
