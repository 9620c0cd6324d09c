"""One record-level deletion request end to end on the real stack, as an operator runs it: the `full_stack`
fixture (weed S3, MLflow server with artifacts in S3, Prefect server + worker) and the ledger in a real
PostgreSQL (pgserver) named by the project's `requests.ledger_url`.

submit (CLI) → `unlearn/default` deployment run with the request id → scoped … closed in the ledger → the
certificate beside the project, in the version's MLflow run and in S3 next to the ONNX file → `hyperforget
request verify` accepts it with the project's key. Then the `trueup` deployment (its schedule deployed inactive)
moves `champion`. Pinned once elsewhere, without servers: tampering with a certificate (tests/unit/
test_certificate.py), `request verify`'s exit codes (tests/unit/test_requests.py), a request that fails after
registering, retried to closed with one version (tests/unit/test_requests.py), and the request task's retry
settings (tests/unit/test_flows.py); an S3 outage as one clear error, on a real stack: tests/integration/
test_outages.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hyperforget.base import records
from hyperforget.base.artifacts import Artifacts
from hyperforget.config.overlays import load_params
from hyperforget.erasure.ledger import Ledger
from hyperforget.pipeline import stages
from hyperforget.publish import registry, tracking
from hyperforget.publish import s3 as storage

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory):
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg"))
    yield server.get_uri()
    server.cleanup()


@pytest.fixture(scope="module")
def project(full_stack, postgres_url, small_project):
    """This module's small project, prepared, its ledger the PostgreSQL server (the worker's flow runs read it).
    Its requests are verified against retrains trained for them (`evaluation.reference: per_request`): a class set
    needs that, and this small project builds no reference pool (tests/unit/test_reference_pool.py covers the
    pool's path)."""
    path = small_project
    raw = yaml.safe_load(path.read_text())
    raw["requests"] = {"ledger_url": postgres_url}
    raw["unlearn"]["method"] = "dihyfo2"  # refuses record-level requests: they fall back to gradtau
    raw["evaluation"]["reference"] = "per_request"
    path.write_text(yaml.safe_dump(raw))
    params, art = load_params(path), Artifacts.for_params(path)
    for stage in (stages.import_data, stages.prepare, stages.train):
        stage(params, art)
    led = Ledger(postgres_url)
    yield {"path": path, "params": params, "art": art, "ledger": led}
    led.close()


def _env(full_stack, tmp_path) -> dict:
    return {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-cli"), "MLFLOW_DISABLE_TELEMETRY": "true",
            "STACK_DIR": full_stack["STACK_DIR"]}


def run(*argv: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def ok(r: subprocess.CompletedProcess, env: dict) -> str:
    if r.returncode != 0:
        log = Path(env["STACK_DIR"]) / "logs" / "worker.log"
        worker = log.read_text(errors="replace")[-6000:] if log.exists() else "(no worker log)"
        pytest.fail(f"{' '.join(r.args[:4])}… exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}\n"
                    f"--- worker log ---\n{worker}")
    return r.stdout


def deployment_run(request_id: str, project, env: dict, *params: str) -> subprocess.CompletedProcess:
    """`params`: more `--param KEY=VALUE` items for the flow run."""
    extra = [arg for item in params for arg in ("--param", item)]
    return run("prefect", "--no-prompt", "deployment", "run", "unlearn/default", "--param", f"request_id={request_id}",
               "--param", f"params_path={project['path']}", *extra, "--watch", env=env)


def submit(project, request_id: str, ids: list[int], env: dict) -> None:
    f = project["path"].parent / f"{request_id}.txt"
    f.write_text("".join(f"{i}\n" for i in ids))
    out = ok(run("hyperforget", "request", "submit", "--samples", str(f), "--id", request_id, "--requester",
                 "dpo@example.com", "--params", str(project["path"]), env=env), env)
    assert f"request {request_id} received: {len(ids)} records" in out


@pytest.fixture(scope="module")
def deployed(full_stack, project, tmp_path_factory):
    env = _env(full_stack, tmp_path_factory.mktemp("prefect"))
    ok(run("prefect", "--no-prompt", "deploy", "--all", env=env), env)
    return env


def test_a_record_level_request_is_closed_with_a_certificate_that_verifies(full_stack, project, deployed):
    env, led, art = deployed, project["ledger"], project["art"]
    submit(project, "req-e2e", [3, 14, 15, 92, 653], env)
    ok(deployment_run("req-e2e", project, env), env)
    history = led.history("req-e2e")
    assert [t.state for t in history] == ["received", "scoped", "unlearned", "verified", "published", "closed"]
    unlearned = history[2].detail
    assert unlearned["requested_method"] == "dihyfo2"
    if unlearned["power"]["has_power"]:  # dihyfo2 answers classes only: the fallback method answers
        assert unlearned["method"] == "gradtau" and unlearned["fallback"]["from"] == "dihyfo2"
    else:  # θ0 passes the same gates on these records: answered exactly (as on this project's five records)
        assert unlearned["method"] == "retrain" and unlearned["fallback"]["from"] == "gradtau"
        assert unlearned["fallback"]["reason"].startswith("no power")
    registered, closed = history[4].detail["registered"], history[-1].detail
    name = f"digits-mlp-forget-samples-{records.ids_sha256([3, 14, 15, 92, 653])[:12]}"
    assert registered["name"] == name

    cert = art.root / closed["path"]
    out = ok(run("hyperforget", "request", "verify", str(cert), "--params", str(project["path"]), env=env), env)
    assert "valid" in out and "the expected key" in out  # signed by the worker with the project's key

    bucket = full_stack["HYPERFORGET_S3_BUCKET"]
    keys = storage.list_keys(bucket, f"models/{name}/{registered['version']}/")
    assert {f"models/{name}/{registered['version']}/{f}" for f in ("model.onnx", "certificate.json",
                                                                   "certificate.md")} <= set(keys)
    client = tracking.client(project["params"], art)
    logged = {f.path for f in client.list_artifacts(registered["run_id"], "certificate")}
    assert "certificate/certificate.json" in logged
    mv = client.get_model_version(name, registered["version"])
    assert mv.tags["deletion.request"] == "req-e2e" and mv.tags["deletion.certificate_sha256"] == closed["sha256"]


SCHEDULES = """
import asyncio, json
from prefect import get_client

async def main():
    async with get_client() as c:
        deployment = await c.read_deployment_by_name("trueup/default")
    print(json.dumps([{"active": s.active, "cron": s.schedule.cron} for s in deployment.schedules]))

asyncio.run(main())
"""


def test_the_trueup_deployment_is_scheduled_off_and_moves_champion_to_the_exact_model(full_stack, project,
                                                                                       deployed):
    env = deployed
    # in a fresh process: this one's Prefect settings were fixed when prefect was first imported
    schedules = json.loads(ok(run("python", "-c", SCHEDULES, env=env), env).strip().splitlines()[-1])
    assert schedules == [{"active": False, "cron": "0 3 * * 0"}]
    ok(run("prefect", "--no-prompt", "deployment", "run", "trueup/default", "--param",
           f"params_path={project['path']}", "--watch", env=env), env)
    client = tracking.client(project["params"], project["art"])
    champion = registry.resolve("digits-mlp-trueup@champion", client)
    assert champion.tags["gates.passed"] == "true" and champion.tags["lineage.trueup"]
    covered = {n.request_id for n in project["ledger"].read_notes(kind="trued_up")}
    assert "req-e2e" in covered


@pytest.fixture(scope="module")
def dihyfo2_built(project):
    """The project's zoo (single classes only: no row holds a class set) and its DiHyFo-2 hypernetwork."""
    stages.zoo(project["params"], project["art"])
    stages.hypernet(project["params"], project["art"], "dihyfo2")


def test_a_class_set_request_is_closed_through_the_deployment_against_its_own_retrains(full_stack, project, deployed,
                                                                                      dihyfo2_built):
    """A class-set request (issue #24) on the stack: submitted by the CLI, processed by the `unlearn/default`
    deployment on the worker, answered by DiHyFo-2 and judged against retrains of the set trained for it (the
    pool's references are per class); an answer that fails a gate is followed in the same run by a retrain
    (`requests.exact_on_gate_failure`). Either way it closes with a passing, signed certificate that says which
    method answered and that the reference was trained for the request: 4 retrains, the flow's `settings` overriding
    the params file's 3 as the CLI's `--set` does."""
    env, led, art = deployed, project["ledger"], project["art"]
    ok(run("hyperforget", "request", "submit", "--classes", "2,7", "--id", "req-set", "--requester", "dpo@example.com",
           "--params", str(project["path"]), env=env), env)
    ok(deployment_run("req-set", project, env, 'settings=["evaluation.retrain_seeds=4"]'), env)
    history = led.history("req-set")
    states = [t.state for t in history]
    assert states[-3:] == ["verified", "published", "closed"] and "unlearned" in states
    unlearned = [t.detail for t in history if t.state == "unlearned"]
    assert unlearned[0]["method"] == "dihyfo2" and unlearned[0]["reference_source"]["kind"] == "per_request"
    assert unlearned[0]["reference_source"]["retrains"] == 4
    answered = unlearned[-1]
    if answered["fallback"] is None:
        assert answered["method"] == "dihyfo2" and len(unlearned) == 1
    else:  # DiHyFo-2's answer failed a gate: the same run answered exactly
        assert answered["method"] == "retrain" and answered["fallback"]["from"] == "dihyfo2"
        assert "exact_on_gate_failure" in answered["fallback"]["reason"]
    closed = history[-1].detail
    cert = json.loads((art.root / closed["path"]).read_text())
    assert cert["request"]["classes"] == [2, 7] and cert["method"]["name"] == answered["method"]
    assert cert["gates"]["passed"] and cert["gates"]["reference_source"]["kind"] == "per_request"
    out = ok(run("hyperforget", "request", "verify", str(art.root / closed["path"]), "--params", str(project["path"]),
                 env=env), env)
    assert "valid" in out
