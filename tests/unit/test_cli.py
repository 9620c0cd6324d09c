"""The command line as a user meets it: the same request gives the same signal as the flow, help lists
what can be chosen, and an ad-hoc request never touches the pipeline's outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hyperforget.base.artifacts import Artifacts
from hyperforget.cli import app
from hyperforget.config.options import VARIANTS
from hyperforget.unlearn import METHODS


@pytest.fixture(scope="module")
def project(make_project) -> Path:
    """A built digits project (tests/fixtures.py), its MLflow store under its own root."""
    return make_project("cli-project").parent


def test_help_lists_the_methods_and_the_hypernetwork_variants():
    out = CliRunner().invoke(app, ["--help"], terminal_width=200).output
    assert all(name in out for name in (*METHODS, *VARIANTS))


def test_a_model_that_fails_its_gates_exits_1_after_the_gate_report(project, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("HYPERFORGET_S3_ENDPOINT", raising=False)
    result = CliRunner().invoke(app, ["unlearn", "--method", "finetune", "--register", "--params",
                                      str(project / "params.yaml")], terminal_width=200)
    assert result.exit_code == 1, result.output  # finetune never looks at D_f: class 3 is still recognised
    assert "## Gates: FAILED" in result.output and "FAIL forget_acc" in result.output
    assert "gates failed:" in result.output


def test_an_ad_hoc_request_writes_only_its_own_folder(project, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    art = Artifacts(project)
    before = {p for p in art.base.rglob("*") if p.is_file()}
    # retrain passes every gate here; the approximate methods do not on this tiny project (too fast to relearn,
    # or, like scrub, far slower than any retrain: over-forgetting, the relearn gate's upper side)
    result = CliRunner().invoke(app, ["unlearn", "--method", "retrain", "--params", str(project / "params.yaml")])
    assert result.exit_code == 0, result.output
    new = {p for p in art.base.rglob("*") if p.is_file()} - before
    runs = art.request("classes-3", "retrain").parent / "retrain" / "runs"
    # the reference is read from the project's pool: no reference cache is written either
    assert new and all(runs in p.parents for p in new), sorted(map(str, new))
    assert not art.publish.exists()


def test_an_unknown_method_is_refused_before_any_work(project):
    result = CliRunner().invoke(app, ["unlearn", "--method", "bogus", "--params", str(project / "params.yaml")])
    assert result.exit_code != 0 and "bogus" in str(result.exception or result.output)
    assert not (Artifacts(project).requests / "classes-3" / "bogus").exists()
