"""A record request's records erased from the data on the real stack (`full_stack`: S3, and MLflow with its
artifacts in S3), in a git + DVC project whose DVC remote is a prefix of the stack's S3 bucket.

Closing the request writes a new raw version without the records (data.dvc and dvc.lock updated), pushes it and
removes every older version from the cache and from S3; the certificate names the new dataset; the ids are kept
once (the certificate folder; not the working folder, not the MLflow run); a fresh clone pulls the new version
and cannot pull the old one. A request still open on the old version is carried over: refused until θ0 is
retrained on the erased data, then answered, closed and erased in turn; the true-up trains on the erased data.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import DataError
from hyperforget.base.io import sha256_file
from hyperforget.config.overlays import load_params
from hyperforget.erasure import closing, data_erasure, data_versions, deletion, evidence, project_ledger, trueup
from hyperforget.pipeline import stages
from hyperforget.publish import s3 as storage
from hyperforget.publish import tracking

pytestmark = pytest.mark.integration

DVC = str(Path(sys.executable).parent / "dvc")
PREPARE_STAGE = {"stages": {"prepare": {"cmd": "hyperforget prepare", "deps": ["data/raw"], "outs": [
    "artifacts/prepare/dataset.safetensors", "artifacts/prepare/dataset.safetensors.sha256",
    {"artifacts/prepare/dataset_card.json": {"cache": False}}]}}}


def run(*args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if ok:
        assert r.returncode == 0, f"{' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


def used(root: Path) -> set[str]:
    """The md5 of every object the workspace uses: data.dvc's folder and files, the prepare stage's outputs."""
    out = yaml.safe_load((root / "data.dvc").read_text())["outs"][0]["md5"]
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]["prepare"]["outs"]
    entries = json.loads((root / ".dvc" / "cache" / "files" / "md5" / out[:2] / out[2:]).read_text())
    return {out, *(e["md5"] for e in entries), *(o["md5"] for o in lock if "dataset_card" not in o["path"])}


@pytest.fixture(scope="module")
def project(full_stack, small_project):
    """The small project, θ0 trained, as a git + DVC repository whose data and prepared dataset are pushed to
    `s3://<stack bucket>/dvc-erasure-<random>`. Its record requests are verified against retrains trained for them
    (`evaluation.reference: per_request`; tests/integration/test_request_lifecycle.py says why)."""
    root = small_project.parent
    raw = yaml.safe_load(small_project.read_text())
    raw["evaluation"]["reference"] = "per_request"
    small_project.write_text(yaml.safe_dump(raw))
    params, art = load_params(small_project), Artifacts.for_params(small_project)
    for stage in (stages.import_data, stages.prepare, stages.train):
        stage(params, art)
    (root / "dvc.yaml").write_text(yaml.safe_dump(PREPARE_STAGE, sort_keys=False))
    bucket, prefix = full_stack["HYPERFORGET_S3_BUCKET"], f"dvc-erasure-{uuid.uuid4().hex[:8]}"
    run("git", "init", "-q", cwd=root)
    run(DVC, "init", "-q", cwd=root)
    run(DVC, "add", "-q", "data", cwd=root)
    run(DVC, "commit", "-q", "--force", "prepare", cwd=root)
    run(DVC, "remote", "add", "-d", "s3", f"s3://{bucket}/{prefix}", cwd=root)
    run(DVC, "remote", "modify", "s3", "endpointurl", os.environ[storage.ENDPOINT_VAR], cwd=root)
    run(DVC, "push", "-q", cwd=root)
    return {"root": root, "params": params, "art": art, "bucket": bucket, "prefix": prefix}


def remote_objects(project) -> set[str]:
    keys = storage.list_keys(project["bucket"], f"{project['prefix']}/")
    return {"".join(k.split("/")[-2:]) for k in keys if "/files/md5/" in k}


@pytest.fixture(scope="module")
def erased(project):
    """Request erase-a processed to closed; erase-q (one record in common) submitted before and left open."""
    params, art, root = project["params"], project["art"], project["root"]
    old = {"used": used(root), "remote": remote_objects(project), "data_dvc": (root / "data.dvc").read_text(),
           "dataset": sha256_file(art.dataset)}
    deletion.submit(params, art, samples=[3, 14, 15, 92, 653], request_id="erase-a", requester="dpo")
    deletion.submit(params, art, samples=[14, 60, 61, 62, 63, 64, 65, 66], request_id="erase-q", requester="dpo")
    out = deletion.process(params, art, "erase-a")
    return {"old": old, "out": out}


def test_closing_erases_the_records_from_the_data_the_cache_and_the_s3_remote(project, erased, tmp_path):
    root, art, old, out = project["root"], project["art"], erased["old"], erased["out"]
    assert out.state == "closed"
    cert_path = root / out.certificate["path"]
    cert = json.loads(cert_path.read_text())
    new_dataset = sha256_file(art.dataset)
    assert cert["data"]["erased"] and cert["data"]["rows_removed"] == 5
    assert cert["data"]["before"]["dataset_sha256"] == old["dataset"] == cert["request"]["dataset_sha256"]
    assert cert["data"]["after"]["dataset_sha256"] == new_dataset != old["dataset"]
    assert evidence.verify_certificate(cert_path, out.certificate["public_key"]) == []

    gone = old["used"] - used(root)  # the old raw files, the old folder listing, the old prepared dataset
    assert len(gone) >= 3 and gone <= old["remote"]
    assert not gone & remote_objects(project) and used(root) <= remote_objects(project)
    assert not gone & {p.parent.name + p.name for p in (root / ".dvc" / "cache" / "files" / "md5").glob("*/*")}
    collected = cert["data"]["collected"]
    assert collected["scope"] == "workspace" and collected["remotes"][0]["url"].startswith("s3://")
    assert collected["remotes"][0]["removed"] >= len(gone)

    # the ids, once: in the certificate folder only
    assert (cert_path.parent / "ids.txt").read_text() == "3\n14\n15\n92\n653\n"
    assert not art.deletion("erase-a").exists()
    run_id = cert["models"]["after"]["run_id"]
    logged = {f.path for f in tracking.client(project["params"], art).list_artifacts(run_id, evidence.MLFLOW_DIR)}
    assert "certificate/certificate.json" in logged and "certificate/ids.txt" not in logged

    # a fresh clone pulls the new version from S3, and the old version is gone from S3
    clone = tmp_path / "clone"
    clone.mkdir()
    run("git", "init", "-q", cwd=clone)
    run(DVC, "init", "-q", cwd=clone)
    shutil.copy(root / ".dvc" / "config", clone / ".dvc" / "config")
    shutil.copy(root / "data.dvc", clone / "data.dvc")
    run(DVC, "pull", "data.dvc", cwd=clone)
    raw = Path("data") / "raw" / "digits"
    assert data_versions.raw_version(clone / raw) == data_versions.raw_version(root / raw)
    shutil.rmtree(clone / "data")
    (clone / "data.dvc").write_text(old["data_dvc"])
    assert run(DVC, "pull", "data.dvc", cwd=clone, ok=False).returncode != 0
    assert not (clone / raw / "digits-images-idx3-ubyte").exists()


def test_an_open_request_is_carried_over_answered_after_dvc_repro_and_the_trueup_trains_on_erased_data(
        project, erased):
    params, art = project["params"], project["art"]
    with project_ledger.opened(params, art, None) as led:
        carried = led.read_notes("erase-q", data_erasure.CARRIED)[-1].detail
        assert carried["by_request"] == "erase-a" and carried["already_erased"] == 1 and carried["n_rows"] == 7
    with pytest.raises(DataError, match="dvc repro"):
        deletion.process(params, art, "erase-q")
    stages.train(params, art)  # what `dvc repro` runs first: θ0 on the erased data
    out = deletion.process(params, art, "erase-q")
    # in scope: erase-a's version too (trained on the old data, from the old θ0): no successor, so retired; so is
    # every version other modules of this session registered on the stack from the same digits and θ0
    a_version = json.loads((project["root"] / erased["out"].certificate["path"]).read_text())["models"]["after"]
    pending = [(m["name"], m["version"]) for m in out.pending]
    assert out.state == "published" and (a_version["name"], a_version["version"]) in pending, out.summary
    assert sha256_file(art.model) not in {m["original"] for m in out.pending}  # each from another original
    for name, version in pending:
        closed = closing.retire(params, art, "erase-q", name, version, reason="old data")
    assert closed.state == "closed"
    cert = json.loads((project["root"] / closed.certificate["path"]).read_text())
    assert cert["data"]["erased"] and cert["data"]["rows_removed"] == 7
    assert cert["data"]["after"]["dataset_sha256"] == sha256_file(art.dataset)
    assert [c["by_request"] for c in cert["data"]["carried_over"]] == ["erase-a"]

    up = trueup.trueup(params, art)
    assert up["dataset_sha256"] == sha256_file(art.dataset) and up["erased"] == ["erase-a", "erase-q"]
    assert up["excluded_records"] == 0 and up["gates"]["passed"], up["gates"]
