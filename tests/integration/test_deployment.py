"""The Prefect deployments end to end against real servers: deploy, build, unlearn, fetch, promote.

Runs the CLIs exactly as an operator would (`prefect deploy --all`, `prefect deployment run … --watch`,
`hyperforget fetch`, `hyperforget promote`) against the `full_stack` fixture (S3 + MLflow with artifacts
in S3 + Prefect server and worker), in a throw-away project folder with small settings; the fixture
stops every server afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hyperforget import registry, storage
from hyperforget.io import sha256_file

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NAME = "digits-mlp-forget-classes-3"
METHOD = "gradtau"  # passes the gates on digits in ~2 s (finetune keeps class 3: forget acc ~0.9)


def small_params(folder: Path) -> Path:
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["train"]["epochs"] = 10
    raw["evaluation"].update(retrain_seeds=1, methods=[METHOD])
    path = folder / "params.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


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


def test_unlearn_deployment_registers_uploads_fetches_and_promotes(full_stack, tmp_path):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-cli"), "MLFLOW_DISABLE_TELEMETRY": "true",
           "STACK_DIR": full_stack["STACK_DIR"]}
    params = small_params(tmp_path / "project")
    prefect("deploy", "--all", env=env)
    prefect("deployment", "run", "build/default", "--param", f"params_path={params}", "--watch", env=env)
    assert (params.parent / "artifacts" / "train" / "model.safetensors").exists()
    prefect("deployment", "run", "unlearn/default", "--param", "forget_classes=[3]", "--param", f"method={METHOD}",
            "--param", f"params_path={params}", "--watch", env=env)

    candidate = registry.resolve(f"{NAME}@candidate")
    assert candidate.tags["gates.passed"] == "true" and candidate.tags["method"] == METHOD
    bucket, key = full_stack["HYPERFORGET_S3_BUCKET"], f"models/{NAME}/{candidate.version}/model.onnx"
    assert key in storage.list_keys(bucket, f"models/{NAME}/")
    assert candidate.tags["s3.onnx_uri"] == f"s3://{bucket}/{key}"

    cli("fetch", f"{NAME}@candidate", "--out", str(tmp_path / "fetched"), "--params", str(params), env=env)
    fetched = tmp_path / "fetched" / f"{NAME}-v{candidate.version}.onnx"
    assert sha256_file(fetched) == candidate.tags["sha256.onnx"]

    cli("promote", NAME, str(candidate.version), "--params", str(params), env=env)
    assert str(registry.resolve(f"{NAME}@champion").version) == str(candidate.version)
