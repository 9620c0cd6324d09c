"""The README's DVC remote on the local S3 server: `dvc push`, lose the data and the cache, `dvc pull`."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hyperforget.publish import s3 as storage

pytestmark = pytest.mark.integration

DVC = str(Path(sys.executable).parent / "dvc")


def dvc(*args: str, cwd: Path) -> str:
    r = subprocess.run([DVC, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"dvc {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def test_dvc_push_then_pull_restores_the_data_from_s3(s3_stack, tmp_path):
    bucket, endpoint = s3_stack["HYPERFORGET_S3_BUCKET"], os.environ[storage.ENDPOINT_VAR]
    repo = tmp_path / "repo"
    (repo / "data" / "raw").mkdir(parents=True)
    blob = random.Random(0).randbytes(300_000)
    (repo / "data" / "raw" / "images.idx").write_bytes(blob)
    dvc("init", "--no-scm", cwd=repo)
    dvc("add", "data", cwd=repo)
    dvc("remote", "add", "-d", "s3", f"s3://{bucket}/dvc", cwd=repo)  # as the README says
    dvc("remote", "modify", "s3", "endpointurl", endpoint, cwd=repo)
    dvc("push", cwd=repo)
    assert any(k.startswith("dvc/") for k in storage.list_keys(bucket, "dvc/"))

    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    dvc("pull", cwd=repo)
    assert (repo / "data" / "raw" / "images.idx").read_bytes() == blob
