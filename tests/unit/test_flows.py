"""Choosing the flows' task runner from HYPERFORGET_TASK_RUNNER: threads by default, clear errors otherwise; the
unlearn flow's strict parameters. (Two unlearn flow runs in one process, which start Prefect's ephemeral API
server: tests/integration/test_flow_isolation.py.)"""

from __future__ import annotations

import sys

import pytest
from prefect.task_runners import ThreadPoolTaskRunner

from flows.build import task_runner
from hyperforget.base.errors import ConfigError


def test_threads_by_default(monkeypatch):
    monkeypatch.delenv("HYPERFORGET_TASK_RUNNER", raising=False)
    assert isinstance(task_runner(), ThreadPoolTaskRunner)


def test_unknown_runner_names_the_choices(monkeypatch):
    monkeypatch.setenv("HYPERFORGET_TASK_RUNNER", "spark")
    with pytest.raises(ConfigError, match="choose one of thread, dask"):
        task_runner()


def test_missing_runner_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setenv("HYPERFORGET_TASK_RUNNER", "dask")
    monkeypatch.setitem(sys.modules, "prefect_dask", None)  # as on a machine without the `scale` extra
    with pytest.raises(ConfigError, match=r"needs prefect-dask .*pip install 'hyperforget\[scale\]'"):
        task_runner()


@pytest.mark.parametrize("classes", [[True], ["3"]])
def test_the_unlearn_flow_refuses_parameters_that_are_not_exactly_integers(classes, tmp_path, monkeypatch):
    from prefect.exceptions import ParameterTypeError

    from flows.unlearn import unlearn

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(ParameterTypeError, match="forget_classes"):
        unlearn.validate_parameters({"forget_classes": classes})


class _Finished:
    """A task run's final state as `retry_condition_fn` sees it: `result()` returns or raises."""

    def __init__(self, error: Exception | None = None):
        self.error = error

    def result(self):
        if self.error is not None:
            raise self.error
        return {}


def test_the_request_task_retries_an_io_failure_twice_5_then_15_s_later_and_a_user_error_never():
    """What bounds a flow run whose S3 or MLflow is down (tests/integration/test_request_lifecycle.py runs one):
    two retries, 5 s and 15 s after the failure, and none for bad input or a failed gate, which fail the same
    again. The settings are the pin, not a measured time."""
    from flows.unlearn import process_request, transient
    from hyperforget.base.errors import GateFailed, StorageError

    assert process_request.retries == 2 and process_request.retry_delay_seconds == [5, 15]
    assert process_request.retry_condition_fn is transient
    assert transient(None, None, _Finished(StorageError("the S3 store at http://127.0.0.1:9 is down")))
    assert transient(None, None, _Finished(ConnectionResetError("an MLflow blip")))
    assert not transient(None, None, _Finished(ConfigError("no deletion request 'zz'")))
    assert not transient(None, None, _Finished(GateFailed("forget acc 0.4000 > 0.0500")))


def test_the_unlearn_flow_takes_settings_as_the_cli_takes_set_but_never_the_scope(make_project):
    """`settings` (`KEY=VALUE`, as `--set`) reach the request: a class set, which the pool cannot judge, closes against
    retrains trained for it when the settings ask for them. The scope stays the flow's own parameters: a known
    request must keep the scope it was submitted with."""
    from flows.unlearn import process_request, setting_overrides
    from hyperforget.base.artifacts import Artifacts
    from hyperforget.config.overlays import load_params
    from hyperforget.erasure import project_ledger

    assert setting_overrides(["evaluation.reference=per_request", "gates.max_forget_acc=0.1"]) == {
        "evaluation.reference": "per_request", "gates.max_forget_acc": 0.1}
    for scope in (["forget.classes=[3]"], ["forget={classes: [3]}"]):
        with pytest.raises(ConfigError, match="forget_classes or forget_fraction"):
            setting_overrides(scope)
    path = make_project("flow-settings")
    out = process_request.fn(str(path), {"forget.classes": [3, 5]}, setting_overrides(
        ["evaluation.reference=per_request"]), "flow-set", "retrain", "prefect")
    assert out["state"] == "closed", out
    params, art = load_params(path), Artifacts.for_params(path)
    with project_ledger.opened(params, art, None) as led:
        assert project_ledger.details(led, "flow-set")["unlearned"]["reference_source"]["kind"] == "per_request"
