"""hyperforget.publish.s3 against a real SeaweedFS S3 server started by infra/local/stack.py, and `down` leaving
nothing behind. (Without a server: the configuration, a truncated download and an S3 that is down, in
tests/unit/test_s3_client.py.)"""

from __future__ import annotations

import hashlib
import os
import random
import socket

import pytest

from hyperforget.base.errors import IntegrityError, StorageError
from hyperforget.publish import s3 as storage

pytestmark = pytest.mark.integration


def _write(path, n_bytes: int, seed: int = 0) -> bytes:
    data = random.Random(seed).randbytes(n_bytes)
    path.write_bytes(data)
    return data


def _no_leftovers(folder) -> bool:
    return not folder.exists() or not any(folder.iterdir())


@pytest.fixture
def bucket(s3_stack) -> str:
    return s3_stack["HYPERFORGET_S3_BUCKET"]


@pytest.fixture
def uploaded(s3_stack, bucket, tmp_path, request):
    """A 9 MiB object (multipart upload, so its ETag is not an md5) and its sha256."""
    src = tmp_path / "src" / "model.onnx"
    src.parent.mkdir()
    data = _write(src, 9 * 2**20, seed=1)
    key = f"tests/{request.node.name}/model.onnx"
    return key, storage.upload_file(src, bucket, key), data


def test_upload_then_fetch_gives_identical_sha256(uploaded, bucket, tmp_path):
    key, digest, data = uploaded
    assert digest == hashlib.sha256(data).hexdigest()
    out = storage.fetch_file(bucket, key, tmp_path / "out" / "model.onnx", digest)
    assert out.read_bytes() == data
    assert storage.sha256_file(out) == digest
    assert [p.name for p in out.parent.iterdir()] == ["model.onnx"]  # no temp file left beside it


def test_fetch_with_wrong_checksum_leaves_no_file(uploaded, bucket, tmp_path):
    key, _, _ = uploaded
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        storage.fetch_file(bucket, key, tmp_path / "out" / "model.onnx", wrong)
    assert _no_leftovers(tmp_path / "out")


@pytest.mark.parametrize("metadata", ["original", "missing"])
def test_fetch_of_object_replaced_behind_our_back_fails(uploaded, bucket, tmp_path, metadata):
    key, digest, _ = uploaded
    tampered = b"not the model we uploaded"
    extra = {"Metadata": {"sha256": digest}} if metadata == "original" else {}
    storage.s3_client().put_object(Bucket=bucket, Key=key, Body=tampered, **extra)
    # even a caller who expects the new bytes is refused: they no longer match the upload's metadata
    with pytest.raises(IntegrityError, match="replaced or corrupted after upload"):
        storage.fetch_file(bucket, key, tmp_path / "out" / "model.onnx", hashlib.sha256(tampered).hexdigest())
    assert _no_leftovers(tmp_path / "out")


def test_list_keys_returns_only_keys_under_prefix(s3_stack, bucket, tmp_path):
    src = tmp_path / "tree"
    for rel in ("a.bin", "sub/b.bin"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        _write(src / rel, 100, seed=len(rel))
    digests = storage.upload_dir(src, bucket, "listing/run1")
    storage.upload_file(src / "a.bin", bucket, "listing/run2/a.bin")
    assert storage.list_keys(bucket, "listing/run1/") == ["listing/run1/a.bin", "listing/run1/sub/b.bin"]
    assert sorted(digests) == ["listing/run1/a.bin", "listing/run1/sub/b.bin"]


def test_ensure_bucket_creates_once_and_is_idempotent(s3_stack):
    storage.ensure_bucket("hyperforget-extra")
    storage.ensure_bucket("hyperforget-extra")
    names = [b["Name"] for b in storage.s3_client().list_buckets()["Buckets"]]
    assert "hyperforget-extra" in names


def test_wrong_secret_is_rejected_by_the_server(s3_stack, bucket, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
    with pytest.raises(StorageError, match="AWS_SECRET_ACCESS_KEY") as err:
        storage.list_keys(bucket, "", client=storage.s3_client(retries=0))
    assert "wrong-secret-value" not in str(err.value)


@pytest.fixture(scope="module")
def stopped_s3(tmp_path_factory, local_stack):
    """An S3 stack of its own that held an object and was then stopped with `down`."""
    stack = local_stack
    state_dir = tmp_path_factory.mktemp("stopped-s3")
    base = stack.free_port_base()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", stack.DEFAULT_CREDENTIALS[0])
        mp.setenv("AWS_SECRET_ACCESS_KEY", stack.DEFAULT_CREDENTIALS[1])
        try:
            env = stack.up(["s3"], state_dir, base)
            pids = [pid for pid in stack.status(state_dir).values() if pid]
            for k, v in env.items():
                mp.setenv(k, v)
            src = state_dir / "obj.bin"
            _write(src, 1000, seed=7)
            digest = storage.upload_file(src, env["HYPERFORGET_S3_BUCKET"], "obj.bin")
        finally:
            stack.down(state_dir)
    return {"env": env, "pids": pids, "ports": stack.service_ports("s3", base), "digest": digest, "dir": state_dir}


def test_down_leaves_no_process_or_listening_port(stopped_s3, local_stack):
    assert stopped_s3["pids"], "the stack reported no running process before down"
    for pgid in stopped_s3["pids"]:
        with pytest.raises(ProcessLookupError):
            os.killpg(pgid, 0)  # no member of the service's process group survives
    for port in stopped_s3["ports"]:
        with socket.socket() as s, pytest.raises(ConnectionRefusedError):
            s.connect(("127.0.0.1", port))
    assert local_stack.status(stopped_s3["dir"]) == {"s3": None, "mlflow": None, "prefect": None, "worker": None}
    assert not list((stopped_s3["dir"] / "run").glob("*.pid"))
