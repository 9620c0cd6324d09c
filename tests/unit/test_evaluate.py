"""compare() on digits: one table with the retrain reference and every method, written as JSON,
Markdown and a PNG; and method timings provably exclude evaluation."""

from __future__ import annotations

import itertools
import json
import re

import pytest

from hyperforget.base.errors import ConfigError
from hyperforget.config.overlays import parse_params
from hyperforget.data.datasets import forget_split
from hyperforget.models.metrics import Evaluator
from hyperforget.pipeline import compare as evaluate
from hyperforget.pipeline import tables
from hyperforget.unlearn import method as base
from hyperforget.unlearn.method import UnlearnInputs

METHODS = ["finetune", "neggrad", "ssd"]


@pytest.fixture(scope="module")
def timed_comparison(original_mlp, digits_spec, digits, split_class3):
    """compare() with every Timer block, every Evaluator.report and every verify call logged as (start, end) on a
    logical clock (one tick per event: the order is what matters, never how long anything took)."""
    spans: dict[str, list[tuple[int, int]]] = {"timer": [], "report": [], "verify": []}
    ticks = itertools.count()
    enter, exit_, report, verify = base.Timer.__enter__, base.Timer.__exit__, Evaluator.report, evaluate.verify

    def logged_enter(self):
        self._tick = next(ticks)
        return enter(self)

    def logged_exit(self, *exc):
        exit_(self, *exc)
        spans["timer"].append((self._tick, next(ticks)))

    def logged_report(self, model):
        t0 = next(ticks)
        out = report(self, model)
        spans["report"].append((t0, next(ticks)))
        return out

    def logged_verify(*args, **kwargs):
        t0 = next(ticks)
        out = verify(*args, **kwargs)
        spans["verify"].append((t0, next(ticks)))
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(base.Timer, "__enter__", logged_enter)
        mp.setattr(base.Timer, "__exit__", logged_exit)
        mp.setattr(Evaluator, "report", logged_report)
        mp.setattr(evaluate, "verify", logged_verify)
        params = parse_params({"train": {"epochs": 10}, "evaluation": {"retrain_seeds": 3, "mia_splits": 5}})
        inputs = UnlearnInputs(original_mlp, digits_spec, digits, split_class3, params.seed)
        result = evaluate.compare(params, inputs, ["retrain", *METHODS])
    return result, spans


def test_compare_writes_json_markdown_and_png(timed_comparison, tmp_path):
    result, _ = timed_comparison
    paths = evaluate.write_report(result, tmp_path / "compare", tmp_path / "timing.json")
    on_disk = json.loads(paths["json"].read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    assert set(on_disk["methods"]) == set(METHODS)
    assert evaluate.load_report(tmp_path / "compare", tmp_path / "timing.json") == result
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = paths["md"].read_text()
    for text in ("retrain (3 seeds)", "original", *METHODS, "digits", "forget class 3", "cores", "threads",
                 "LiRA AUC", "TPR@1%FPR", "probe forget acc", "relearn m=10", "relearn m=100", "gates"):
        assert text in markdown
    table = evaluate.format_table(result)
    assert all(f"\n{name} " in table for name in ("retrain (3 seeds)", *METHODS))


def test_compare_reports_gaps_and_speedups_against_one_retrain(timed_comparison):
    result, _ = timed_comparison
    t_retrain = result["timing"]["t_retrain_s"]
    assert len(result["retrain"]["reports"]) == 3 and result["retrain"]["summary"]["forget_acc"]["mean"] <= 0.05
    for name, m in result["methods"].items():
        assert m["speedup"] == pytest.approx(t_retrain / m["wall_time_s"]), name
        gap_values = [v for k, v in m["gaps"].items() if k != "avg_gap"]
        assert m["gaps"]["avg_gap"] == pytest.approx(sum(gap_values) / len(gap_values)), name
        assert m["gaps"]["gap_forget_acc"] == pytest.approx(
            abs(m["report"]["forget_acc"] - result["retrain"]["summary"]["forget_acc"]["mean"])), name
        assert len(m["report"]["per_class_test_acc"]) == 10


def test_method_timings_exclude_evaluation(timed_comparison):
    """No evaluation (reports or verification) ran inside any timed block (retrain ×2 and each method)."""
    _, spans = timed_comparison
    assert len(spans["timer"]) == 2 + len(METHODS)
    assert len(spans["report"]) == 1 + 3 + len(METHODS)  # original, retrain seeds, methods
    assert len(spans["verify"]) == 2 + len(METHODS)  # original, the held-out retrain, methods
    for t0, t1 in spans["timer"]:
        assert all(r1 <= t0 or r0 >= t1 for r0, r1 in spans["report"] + spans["verify"])


def test_no_wall_clock_fact_reaches_the_files_dvc_hashes(timed_comparison, tmp_path):
    """comparison.json and headline.json hold no times, so an identical rerun leaves dvc.lock unchanged."""
    result, _ = timed_comparison
    paths = evaluate.write_report(result, tmp_path / "compare", tmp_path / "timing.json")
    for name in ("json", "headline"):
        text = paths[name].read_text()
        assert not any(f'"{key}"' in text for key in evaluate.VOLATILE), name
        assert not re.search(r'"\w+_s":', text), name  # seconds, whatever the method calls them
    assert json.loads(paths["timing"].read_text())["timing"]["t_retrain_s"] == result["timing"]["t_retrain_s"]


def test_unknown_method_is_refused_before_anything_runs(original_mlp, digits_spec, digits, split_class3, monkeypatch):
    ran = []
    monkeypatch.setattr(evaluate, "run_method", lambda *a, **k: ran.append(a) or pytest.fail("ran a method"))
    inputs = UnlearnInputs(original_mlp, digits_spec, digits, split_class3)
    with pytest.raises(ConfigError, match="unknown method bogus"):
        evaluate.compare(parse_params({}), inputs, ["retrain", "bogus"])
    assert ran == []


def test_the_comparison_verifies_and_gates_every_model_beside_the_retrain_spread(timed_comparison, tmp_path):
    result, _ = timed_comparison
    v, ref = result["verification"], result["retrain"]["verification"]
    assert v["shadows"] == 2 and v["held_out_seed"] == result["retrain"]["info"]["seeds"][-1]
    keys = ("lira_auc", "lira_tpr_at_1fpr", "probe_forget_acc", "relearn_steps_m10", "relearn_steps_m100")
    for name, m in [("original", v["original"]), ("held-out", v["held_out"]), *result["methods"].items()]:
        assert all(isinstance(m["verification"][k], int | float) for k in keys), name
        assert {"lira_auc", "relearn_steps_m10"} <= set(m["gates"]["checks"]), name
        # the reference every model is gated against is the retrain row's probe/relearn spread
        assert m["verification"]["reference"]["relearn_steps_m10"] == ref["relearn_steps_m10"], name
    assert len(ref["lira_auc"]["values"]) == 3 and ref["lira_tpr_at_1fpr"] is None  # TPR needs ≥ 4 seeds
    assert not v["original"]["gates"]["passed"]  # θ0 never forgot
    header, body = tables.verification_rows(result)
    assert header == ["method", "LiRA AUC", "TPR@1%FPR", "probe forget acc", "probe log-odds", "relearn m=10",
                      "relearn m=100", "gates"]
    retrain = body[1]
    assert retrain[0] == "retrain (3 seeds)" and " ± " in retrain[1] and retrain[2] == "–" and " ± " in retrain[4]
    assert body[0][-1].startswith("FAIL ") and "LiRA" in body[0][-1]
    assert [r[0] for r in body[3:]] == METHODS
    headline = json.loads(evaluate.write_report(result, tmp_path, tmp_path / "t.json")["headline"].read_text())
    assert set(headline["ssd"]) >= {"lira_auc", "gates_passed"} and "lira_auc" in headline["retrain"]


def test_random_subset_comparison_has_no_probe_or_relearn(original_mlp, digits_spec, digits):
    params = parse_params({"train": {"epochs": 3}, "forget": {"fraction": 0.1},
                           "evaluation": {"retrain_seeds": 3, "mia_splits": 2}})
    split = forget_split(digits, params.forget)
    result = evaluate.compare(params, UnlearnInputs(original_mlp, digits_spec, digits, split), ["finetune"])
    m = result["methods"]["finetune"]
    assert m["verification"]["probe_forget_acc"] is None and m["verification"]["relearn_steps_m10"] is None
    assert set(m["gates"]["checks"]) == {"forget_acc", "retained_test_acc", "mia", "lira_auc"}
    _, body = tables.verification_rows(result)
    assert all(row[3:6] == ["–", "–", "–"] for row in body)
