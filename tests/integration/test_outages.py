"""What a user hits when servers die, on a stack of this module's own (weed S3 + MLflow with artifacts in
S3, 127.0.0.1): S3 killed for real during a request, MLflow killed and restarted at once.

Pins: a candidate's MLflow Model is served from S3 by `mlflow models serve`; an S3 outage is one clear error
naming S3 and the fix, not pages of tracebacks; runs of a failed request end FAILED, never RUNNING. What bounds
the wait are settings, pinned in tests/unit/test_registry.py (MLflow's HTTP retries, `with_retries`) and
tests/unit/test_s3_client.py (boto's attempts); an export cut by an S3 outage (no alias, the retry completes
the same version) is pinned in tests/unit/test_registry.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from hyperforget.base.artifacts import Artifacts
from hyperforget.config.overlays import load_params
from hyperforget.pipeline import stages
from hyperforget.pipeline.answer import unlearn
from hyperforget.publish import registry, tracking
from hyperforget.publish import release as publish
from hyperforget.publish.onnx import onnx_outputs

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
NAME = "digits-mlp-forget-classes-3"
METHOD = "retrain"  # passes every gate on this small project (gradtau relearns too fast, SCRUB far too slow)


@pytest.fixture(scope="module")
def outage_stack(tmp_path_factory, local_stack, small_project):
    """S3 + MLflow of this module only (the tests kill them), and a prepared small project tracked there, its
    reference pool built."""
    stack = local_stack
    state_dir, base = tmp_path_factory.mktemp("outage-stack"), stack.free_port_base()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", stack.DEFAULT_CREDENTIALS[0])
        mp.setenv("AWS_SECRET_ACCESS_KEY", stack.DEFAULT_CREDENTIALS[1])
        try:
            env = stack.up(["s3", "mlflow"], state_dir, base)
            for k, v in env.items():
                mp.setenv(k, v)
            params_path = small_project
            art, params = Artifacts.for_params(params_path), load_params(params_path)
            for stage in (stages.import_data, stages.prepare, stages.train, stages.pool):
                stage(params, art)
            yield {"env": env, "dir": state_dir, "base": base, "params_path": params_path, "art": art,
                   "params": params, "stack": stack}
        finally:
            stack.down(state_dir)


def kill(outage_stack, svc: str, leader_only: bool = False) -> None:
    stack = outage_stack["stack"]
    pid = stack.status(outage_stack["dir"])[svc]
    assert pid, f"{svc} is not running"
    if leader_only:
        os.kill(pid, signal.SIGKILL)  # what `kill -9 <pid>` does: its workers are left dying
        return
    os.killpg(pid, signal.SIGKILL)
    while stack._alive(pid):
        time.sleep(0.1)


def restart(outage_stack, services=("s3", "mlflow")) -> None:
    outage_stack["stack"].up(list(services), outage_stack["dir"], outage_stack["base"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_candidate_is_served_from_s3_by_mlflow_models_serve_predicting_like_its_onnx(outage_stack, tmp_path):
    params, art = outage_stack["params"], outage_stack["art"]
    request = unlearn(params, art, METHOD, run="serve")  # passes every gate, so it is exported
    reg = publish.register(request, publish.gate(request, params), params, art)
    publish.export_and_upload(NAME, reg["version"], params, art)
    assert str(registry.resolve(f"{NAME}@candidate", tracking.client(params, art)).version) == reg["version"]
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = onnx_outputs(publish.fetch(f"{NAME}@candidate", tmp_path, params, art), x)

    port, log = _free_port(), (tmp_path / "serve.log").open("w")
    env = {**os.environ, **outage_stack["env"], "MLFLOW_DISABLE_TELEMETRY": "true",
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}  # the venv active, as an operator has it (uvicorn)
    server = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{NAME}@candidate",
                               "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        answer, body = None, json.dumps({"inputs": x.numpy().tolist()}).encode()
        while answer is None:  # until it answers or exits (pytest-timeout bounds a server that does neither)
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body,
                                             {"Content-Type": "application/json"})
                with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as r:
                    answer = json.loads(r.read())
            except OSError:
                served = (tmp_path / "serve.log").read_text()[-3000:]
                assert server.poll() is None, f"mlflow models serve exited:\n{served}"
                time.sleep(1)
        got = np.asarray(answer["predictions"]["logits"] if isinstance(answer["predictions"], dict)
                         else [row["logits"] for row in answer["predictions"]], dtype=np.float32)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        log.close()


def test_s3_down_during_a_request_is_one_clear_error_and_its_runs_end_failed(outage_stack):
    # one HTTP try per tracking call (the default retries, and with_retries' attempts, are pinned in
    # tests/unit/test_registry.py): the same path to the same one error, without waiting out each retry
    env = {**os.environ, **outage_stack["env"], "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    kill(outage_stack, "s3")
    started_ms = int(time.time() * 1000)  # selects this test's runs, asserts nothing about time
    try:
        r = subprocess.run([str(BIN / "hyperforget"), "unlearn", "--method", METHOD, "--register", "--params",
                            str(outage_stack["params_path"])], env=env, capture_output=True, text=True, timeout=300)
    finally:
        restart(outage_stack)
    out = r.stdout + r.stderr
    error = [line for line in out.splitlines() if "error:" in line]
    assert r.returncode == 1 and "Traceback" not in out, out[-3000:]
    assert len(error) == 1 and "S3" in error[0] and outage_stack["env"]["HYPERFORGET_S3_ENDPOINT"] in error[0]
    assert "is down" in error[0] and "make stack-up" in error[0]
    c = tracking.client(outage_stack["params"], outage_stack["art"])
    runs = c.search_runs([c.get_experiment_by_name("hyperforget/digits").experiment_id],
                         f"attributes.start_time >= {started_ms}")
    assert {run.data.tags["stage"] for run in runs} == {"request/classes-3", f"unlearn/{METHOD}"}
    assert {run.info.status for run in runs} == {"FAILED"}  # never left RUNNING


def test_stack_up_right_after_a_killed_mlflow_starts_a_healthy_one(outage_stack):
    kill(outage_stack, "mlflow", leader_only=True)
    restart(outage_stack)  # at once: its old workers may still be dying and holding the port
    uri = outage_stack["env"]["MLFLOW_TRACKING_URI"]
    tracking.check_server(uri, attempts=1)
