"""Choosing the flows' task runner from HYPERFORGET_TASK_RUNNER: threads by default, clear errors otherwise."""

from __future__ import annotations

import sys
from pathlib import Path

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


@pytest.fixture(scope="module")
def two_projects(tmp_path_factory, digits):
    """Two projects with the same prepared digits and θ0 (5 epochs), each with its own params and stores."""
    import shutil

    import yaml

    from hyperforget.base.artifacts import Artifacts
    from hyperforget.config.params import load_params
    from hyperforget.pipeline import stages

    first = tmp_path_factory.mktemp("project-a")
    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    raw["train"]["epochs"] = 5
    raw["evaluation"]["retrain_seeds"] = 3  # the fewest verification takes: 2 LiRA shadows + 1 held-out
    (first / "params.yaml").write_text(yaml.safe_dump(raw))
    art, params = Artifacts(first), load_params(first / "params.yaml")
    for stage in (stages.import_data, stages.prepare, stages.train):
        stage(params, art)
    second = tmp_path_factory.mktemp("project-b")
    shutil.copytree(first, second, dirs_exist_ok=True)
    (second / "mlruns.db").unlink()
    shutil.rmtree(second / "mlartifacts", ignore_errors=True)
    return first, second


@pytest.mark.slow
def test_two_unlearn_flow_runs_of_two_projects_in_one_process_stay_in_their_own_roots(two_projects, tmp_path,
                                                                                       monkeypatch):
    """The thread runner case: no working directory, tracking URI or active run is shared between them."""
    from concurrent.futures import ThreadPoolExecutor

    from prefect import flow

    from flows.unlearn import unlearn
    from hyperforget.base.artifacts import Artifacts
    from hyperforget.config.params import load_params
    from hyperforget.publish import tracking

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # first start: ~30 s here
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("HYPERFORGET_S3_ENDPOINT", raising=False)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    flow(name="warm-up")(lambda: None)()  # one ephemeral API server, started before the two threads race for it
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda root: unlearn(forget_classes=[3], method="scrub",  # passes every gate
                                                     params_path=str(root / "params.yaml")), two_projects))
    assert list(elsewhere.iterdir()) == []  # nothing was written where the process happened to be
    for root, result in zip(two_projects, results, strict=True):
        art = Artifacts(root)
        runs = list((art.request("classes-3", "scrub") / "runs").iterdir())
        assert len(runs) == 1 and (runs[0] / "model.safetensors").exists()
        assert result["gates"]["passed"] and result["exported"]["onnx_path"].startswith(str(root))
        c = tracking.client(load_params(root / "params.yaml"), art)
        [mv] = c.search_model_versions("name = 'digits-mlp-forget-classes-3'")
        assert mv.tags["sha256.weights"] == result["sha256"]
        runs = c.search_runs([c.get_experiment_by_name("hyperforget/digits").experiment_id])
        flow_runs = sorted(r.data.tags["stage"] for r in runs if r.data.tags["stage"] not in ("prepare", "train"))
        assert flow_runs == ["register", "request/classes-3", "unlearn/scrub"]  # this project's request only
        assert all(r.info.status == "FINISHED" for r in runs)


@pytest.mark.parametrize("classes", [[True], ["3"]])
def test_the_unlearn_flow_refuses_parameters_that_are_not_exactly_integers(classes, tmp_path, monkeypatch):
    from prefect.exceptions import ParameterTypeError

    from flows.unlearn import unlearn

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(ParameterTypeError, match="forget_classes"):
        unlearn.validate_parameters({"forget_classes": classes})
