"""Held-out class sets: every baseline beside DiHyFo on a set no zoo checkpoint holds, and the summary."""

from __future__ import annotations

import pytest

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import DataError, Diverged
from hyperforget.base.io import read_json
from hyperforget.config.options import HypernetConfig
from hyperforget.config.params import Params, TrainConfig, ZooConfig
from hyperforget.data.datasets import save_dataset
from hyperforget.hypernet.diffusion import train_hypernet
from hyperforget.models.nets import save_model
from hyperforget.studies import heldout
from hyperforget.studies.heldout import BASELINES, heldout_report, step_sweep
from hyperforget.zoo.build import build_zoo
from hyperforget.zoo.shards import load_zoo
from tests.recipes import tiny_hypernet

TINY_HYPERNET = tiny_hypernet(steps=10, checkpoint_every=10, sample_steps=3)


@pytest.fixture(scope="module")
def project(tmp_path_factory, original_mlp, digits_spec, digits):
    art = Artifacts(tmp_path_factory.mktemp("heldout"))
    save_dataset(digits, art.prepare)
    save_model(art.model, original_mlp, digits_spec)
    zoo_cfg = ZooConfig(class_sets=2, holdout_sets=20, trajectories=2, steps=6, save_every=3, retrain_seeds=0)
    build_zoo(original_mlp, digits_spec, digits, zoo_cfg, TrainConfig(epochs=1), art.zoo, progress=False)
    params = Params(zoo=zoo_cfg, train=TrainConfig(epochs=2, batch_size=64), unlearn={"dihyfo2": {"k": 4}})
    zoo, _ = load_zoo(art.zoo)
    train_hypernet(zoo, HypernetConfig(variant="dihyfo2", **TINY_HYPERNET), art.hypernet("dihyfo2"), progress=False,
                   held_out=params.zoo.held_out(10))
    return params, art


def test_every_baseline_answers_a_held_out_set_beside_dihyfo_judged_as_a_request_is(project):
    params, art = project
    result = heldout_report(params, art, ("dihyfo2",), ("gradtau", "retrieval"), sample_steps=2, limit=1,
                            time_retrain=False)
    [one] = result["sets"]
    assert one["classes"] == list(params.zoo.held_out(10)[0])
    # the registry's retrieval (nearest rows with DiHyFo-1's repairs) beside the bare nearest row, not over it
    assert set(one["rows"]) == {"dihyfo2", "gradtau", "retrieval+repairs", "reference", *BASELINES}
    assert "zoo_row" in one["rows"]["retrieval"] and "zoo_row" not in one["rows"]["retrieval+repairs"]
    for name, row in one["rows"].items():
        assert 0 <= row["forget_acc"] <= 1 and 0 <= row["retained_acc"] <= 1, name
        assert row["delta"] == pytest.approx(row["retained_acc"] - one["rows"]["reference"]["retained_acc"])
        assert (row["passed"] is None) == (name == "reference")
        if name != "reference":  # the full verification, as a request gets it: LiRA, probe, relearn, power
            assert 0 <= row["lira_auc"] <= 1 and 0 <= row["probe"] <= 1 and row["relearn_steps_m10"] >= 0, name
            assert row["passed"] == (row["failed"] == []), name
    dihyfo, steps = one["rows"]["dihyfo2"], one["rows"]["retrieval+steps"]
    assert dihyfo["steps"] == 2 and 0 <= dihyfo["pass_rate"] <= 1 and steps["steps"] >= 1
    assert steps["budget_s"] == pytest.approx(dihyfo["time_s"])
    assert result["summary"]["dihyfo2"]["sets"] == 1 and result["summary"]["dihyfo2"]["sets_passed"] in (0, 1)
    assert read_json(art.compare / "heldout-sets.json")["sets"][0]["classes"] == one["classes"]


def test_step_sweep_tunes_on_sets_that_are_neither_held_out_nor_in_the_zoo(project):
    params, art = project
    sweep = step_sweep(params, art, "dihyfo2", (1, 2), sets=1)
    tuned = {tuple(s["classes"]) for s in sweep["sets"]}
    zoo, _ = load_zoo(art.zoo)
    in_zoo = {tuple(m.nonzero().flatten().tolist()) for m in zoo.forget_mask}
    assert not tuned & (set(params.zoo.held_out(10)) | in_zoo) and sweep["chosen"] in (1, 2)
    assert set(sweep["summary"]) == {"reference", "dihyfo2@1", "dihyfo2@2"}


def test_a_method_that_diverges_fails_its_rows_and_each_set_is_kept_as_it_finishes(project, monkeypatch):
    """An hour-long study must neither stop at one method's NaN weights nor lose the sets it finished."""
    params, art = project
    real = heldout.run_method

    def gradtau_diverges(name, *args, **kwargs):
        if name == "gradtau":
            raise Diverged("unlearning method gradtau diverged: 7 of 650 weights are NaN")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(heldout, "run_method", gradtau_diverges)
    written = []
    result = heldout_report(params, art, ("dihyfo2",), ("gradtau",), sample_steps=2, limit=2, time_retrain=False,
                            progress=lambda i, n, s: written.append(read_json(art.compare / "heldout-sets.json")))
    assert [len(w["sets"]) for w in written] == [1, 2] and [w["complete"] for w in written] == [False, True]
    assert heldout_report(params, art, ("dihyfo2",), (), limit=0)["complete"]  # no set asked for: nothing to wait on
    assert [s["rows"]["gradtau"]["failed"] for s in result["sets"]] == [["diverged"], ["diverged"]]
    assert result["summary"]["gradtau"]["sets_passed"] == 0 and result["summary"]["dihyfo2"]["sets"] == 2
    assert result["summary"]["gradtau"]["failed_checks"] == {"diverged": 2}  # what each method failed, per set


def test_a_resumed_study_keeps_the_sets_it_finished_and_runs_only_the_rest(project, monkeypatch):
    """A set takes minutes on the CNN: `resume` must pick up where an interrupted run stopped, and only
    when the earlier run measured the same study."""
    params, art = project
    held = params.zoo.held_out(10)
    first = heldout_report(params, art, ("dihyfo2",), ("gradtau",), sample_steps=2, limit=1, time_retrain=False)
    ran, real = [], heldout.evaluate_set
    monkeypatch.setattr(heldout, "evaluate_set", lambda *a, **k: ran.append(tuple(a[2])) or real(*a, **k))
    resumed = heldout_report(params, art, ("dihyfo2",), ("gradtau",), sample_steps=2, limit=2, time_retrain=False,
                             resume=True)
    assert ran == [tuple(held[1])] and resumed["complete"] and resumed["sets"][0] == first["sets"][0]
    heldout_report(params, art, ("dihyfo2",), ("gradtau",), sample_steps=3, limit=1, time_retrain=False, resume=True)
    assert ran == [tuple(held[1]), tuple(held[0])]  # other DDIM steps: another study, run afresh
    heldout_report(params, art, ("dihyfo2",), ("gradtau", "retrieval"), sample_steps=3, limit=1, time_retrain=False,
                   resume=True)  # the bare nearest row is no answer of the registry's retrieval: run again
    assert ran == [tuple(held[1]), tuple(held[0]), tuple(held[0])]


def test_the_zoo_trend_reads_each_size_from_its_study_and_refuses_sizes_that_studied_other_sets(project, tmp_path):
    """Issue #24 item 3: pass rate against the zoo's class sets, read from finished studies, never mixed across
    different held-out sets."""
    params, art = project
    result = heldout_report(params, art, ("dihyfo2",), (), sample_steps=2, limit=1, time_retrain=False)
    level = heldout.zoo_level(art)
    rows = read_json(art.zoo / "index.json")["rows"]
    assert level["class_sets"] == params.zoo.class_sets == 2 and level["requests"] == 10 + 2
    assert level["zoo_rows"] == len(rows) and level["sets"] == [s["classes"] for s in result["sets"]]
    assert level["passed"]["dihyfo2"] == [s["classes"] for s in result["sets"] if s["rows"]["dihyfo2"]["passed"]]
    assert level["summary"]["dihyfo2"]["probe"] == result["sets"][0]["rows"]["dihyfo2"]["probe"]
    smaller = {**level, "class_sets": 0, "project": "zoo0"}
    assert [lv["class_sets"] for lv in heldout.zoo_trend([level, smaller])] == [0, 2]
    with pytest.raises(DataError, match="different held-out sets"):
        heldout.zoo_trend([level, {**smaller, "sets": [[0, 1]]}])
    with pytest.raises(DataError, match="run its held-out study first"):
        heldout.zoo_level(Artifacts(tmp_path / "unstudied"))
