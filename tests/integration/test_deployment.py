"""The unlearn deployment end to end against real servers: deploy, unlearn on the worker, fetch, promote, and
a run that fails its gates where the project leaves that to an operator.

Runs the CLIs exactly as an operator would (`prefect deploy --all`, `prefect deployment run … --watch`,
`hyperforget fetch`, `hyperforget promote`) against the `full_stack` fixture (S3 + MLflow with artifacts
in S3 + Prefect server and worker), in a throw-away project folder with small settings, prepared, θ0
trained and its reference pool built in this process; the fixture stops every server afterwards. Pinned
elsewhere: the build flow's stages (tests/integration/test_build_flow.py), that each deployment in prefect.yaml
runs a flow of this repository (tests/unit/test_prefect_yaml.py), and ten concurrent registrations getting ten
versions with candidate on the newest (tests/unit/test_registry.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.io import sha256_file
from hyperforget.config.overlays import load_params
from hyperforget.config.params import Params
from hyperforget.pipeline import stages
from hyperforget.publish import registry, tracking
from hyperforget.publish import s3 as storage

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NAME = "digits-mlp-forget-classes-3"
METHOD = "retrain"  # passes every gate on this small project in seconds (finetune keeps class 3: forget acc ~0.9;
# gradtau and SalUn relearn too fast, SCRUB far too slow: the two-sided relearn gate)


def prefect(*args: str, env: dict, timeout: float = 240) -> str:
    """Run the prefect CLI; on failure show its output and the worker's log (where flow errors land)."""
    r = subprocess.run([str(BIN / "prefect"), "--no-prompt", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                       text=True, timeout=timeout)
    if r.returncode != 0:
        log = Path(env["STACK_DIR"]) / "logs" / "worker.log"
        worker = log.read_text(errors="replace")[-6000:] if log.exists() else "(no worker log)"
        pytest.fail(f"prefect {' '.join(args)} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}\n"
                    f"--- worker log ---\n{worker}")
    return r.stdout


def cli(*args: str, env: dict) -> str:
    r = subprocess.run([str(BIN / "hyperforget"), *args], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"hyperforget {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def prepared(full_stack, small_project):
    """The module's small project, digits prepared, θ0 trained and its reference pool built (tracked on the
    stack's MLflow)."""
    params, art = load_params(small_project), Artifacts.for_params(small_project)
    for stage in (stages.import_data, stages.prepare, stages.train, stages.pool):
        stage(params, art)
    return small_project


def test_unlearn_deployment_registers_uploads_fetches_and_promotes(full_stack, prepared, tmp_path):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-cli"), "MLFLOW_DISABLE_TELEMETRY": "true",
           "STACK_DIR": full_stack["STACK_DIR"]}
    params = prepared
    prefect("deploy", "--all", env=env)
    prefect("deployment", "run", "unlearn/default", "--param", "forget_classes=[3]", "--param", f"method={METHOD}",
            "--param", f"params_path={params}", "--watch", env=env)

    client = tracking.client(Params(), Artifacts(params.parent))  # MLFLOW_TRACKING_URI: the stack's server
    candidate = registry.resolve(f"{NAME}@candidate", client)
    assert candidate.tags["gates.passed"] == "true" and candidate.tags["method"] == METHOD
    bucket, key = full_stack["HYPERFORGET_S3_BUCKET"], f"models/{NAME}/{candidate.version}/model.onnx"
    assert key in storage.list_keys(bucket, f"models/{NAME}/")
    assert candidate.tags["s3.onnx_uri"] == f"s3://{bucket}/{key}"

    cli("fetch", f"{NAME}@candidate", "--out", str(tmp_path / "fetched"), "--params", str(params), env=env)
    fetched = tmp_path / "fetched" / f"{NAME}-v{candidate.version}.onnx"
    assert sha256_file(fetched) == candidate.tags["sha256.onnx"]

    cli("promote", NAME, str(candidate.version), "--params", str(params), env=env)
    assert str(registry.resolve(f"{NAME}@champion", client).version) == str(candidate.version)
    assert candidate.tags["lineage.dataset"] and candidate.tags["lineage.original"]

    # a model that fails its gates, in a project that leaves it to an operator (requests.exact_on_gate_failure off;
    # on, the default, a retrain answers in the same run: tests/unit/test_requests.py): the watched run fails, and
    # says why
    raw = yaml.safe_load(params.read_text())
    raw["requests"]["exact_on_gate_failure"] = False
    operator = params.parent / "params-operator.yaml"  # the same project folder, so the same artifacts and pool
    operator.write_text(yaml.safe_dump(raw))
    r = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deployment", "run", "unlearn/default", "--param",
                        "forget_classes=[3]", "--param", "method=finetune", "--param", f"params_path={operator}",
                        "--watch"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode != 0, r.stdout[-3000:]  # `--watch` exits non-zero; the reasons are the state message
    state = subprocess.run([sys.executable, "-c", LAST_STATE_MESSAGE], env=env, capture_output=True, text=True,
                           timeout=60)
    assert "failed its gates" in state.stdout and "forget_acc" in state.stdout, state.stdout + state.stderr
    assert str(registry.resolve(f"{NAME}@candidate", client).version) == str(candidate.version)  # unmoved


LAST_STATE_MESSAGE = """
import asyncio
from prefect import get_client
from prefect.client.schemas.sorting import FlowRunSort

async def main():
    async with get_client() as client:
        [run] = await client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
        print(run.state.type.value, run.state.message)

asyncio.run(main())
"""
