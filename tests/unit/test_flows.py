"""Choosing the flows' task runner from HYPERFORGET_TASK_RUNNER: threads by default, clear errors otherwise."""

from __future__ import annotations

import sys

import pytest
from prefect.task_runners import ThreadPoolTaskRunner

from flows.build import task_runner
from hyperforget.errors import ConfigError


def test_threads_by_default(monkeypatch):
    monkeypatch.delenv("HYPERFORGET_TASK_RUNNER", raising=False)
    assert isinstance(task_runner(), ThreadPoolTaskRunner)


def test_unknown_runner_names_the_choices(monkeypatch):
    monkeypatch.setenv("HYPERFORGET_TASK_RUNNER", "spark")
    with pytest.raises(ConfigError, match="choose one of thread, dask, ray"):
        task_runner()


def test_missing_runner_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setenv("HYPERFORGET_TASK_RUNNER", "ray")
    monkeypatch.setitem(sys.modules, "prefect_ray", None)  # as on a machine without the `scale` extra
    with pytest.raises(ConfigError, match=r"needs prefect-ray .*pip install 'hyperforget\[scale\]'"):
        task_runner()


def test_dask_runner_is_a_local_cluster_of_worker_processes(monkeypatch):
    from prefect_dask import DaskTaskRunner

    monkeypatch.setenv("HYPERFORGET_TASK_RUNNER", "dask")
    monkeypatch.delenv("HYPERFORGET_DASK_ADDRESS", raising=False)
    runner = task_runner()
    assert isinstance(runner, DaskTaskRunner)
    assert runner.cluster_kwargs == {"n_workers": 2, "threads_per_worker": 1, "processes": True}
