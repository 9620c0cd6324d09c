"""Two `unlearn` flow runs of two projects in one process (the thread task runner's case) stay in their own
project roots. Flows run without PREFECT_API_URL start Prefect's ephemeral API server, so this is an integration
test; the projects are built ones (tests/fixtures.py), on the embedded MLflow default, no stack."""

from __future__ import annotations

import pytest

from tests.fixtures import (  # noqa: F401  (fixtures: pytest finds them in this module's namespace)
    _embedded_default,
    make_project,
    mlflow_db,
    project_template,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def two_projects(make_project):  # noqa: F811  (the imported fixture)
    """Two built projects with the same prepared digits and θ0 (5 epochs), each with its own params and stores."""
    return make_project("project-a").parent, make_project("project-b").parent


@pytest.mark.slow
def test_two_unlearn_flow_runs_of_two_projects_in_one_process_stay_in_their_own_roots(two_projects, tmp_path,
                                                                                       monkeypatch):
    """The thread runner case: no working directory, tracking URI or active run is shared between them."""
    from concurrent.futures import ThreadPoolExecutor

    from prefect import flow
    from prefect.server.api.server import SubprocessASGIServer

    from flows.unlearn import unlearn
    from hyperforget.base.artifacts import Artifacts
    from hyperforget.config.overlays import load_params
    from hyperforget.publish import tracking

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # first start: ~30 s here
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("HYPERFORGET_S3_ENDPOINT", raising=False)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # one ephemeral API server, started before the two threads race for it, with time to start on a loaded
    # machine (in-process Prefect settings were read at import: the environment variable above may not reach it)
    SubprocessASGIServer().start(timeout=120)
    flow(name="warm-up")(lambda: None)()
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda root: unlearn(forget_classes=[3], method="retrain",  # passes every gate (exact)
                                                     params_path=str(root / "params.yaml")), two_projects))
    assert list(elsewhere.iterdir()) == []  # nothing was written where the process happened to be
    for root, result in zip(two_projects, results, strict=True):
        art = Artifacts(root)
        runs = list((art.request("classes-3", "retrain") / "runs").iterdir())
        assert len(runs) == 1 and (runs[0] / "model.safetensors").exists()
        assert result["gates"]["passed"] and result["exported"]["onnx_path"].startswith(str(root))
        c = tracking.client(load_params(root / "params.yaml"), art)
        [mv] = c.search_model_versions("name = 'digits-mlp-forget-classes-3'")
        assert mv.tags["sha256.weights"] == result["sha256"]
        runs = c.search_runs([c.get_experiment_by_name("hyperforget/digits").experiment_id])
        flow_runs = sorted(r.data.tags["stage"] for r in runs if r.data.tags["stage"] not in ("prepare", "train"))
        assert flow_runs == ["register", "request/classes-3", "unlearn/retrain"]  # this project's request only
        assert all(r.info.status == "FINISHED" for r in runs)
