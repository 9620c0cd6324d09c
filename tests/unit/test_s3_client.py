"""hyperforget.publish.s3 without a server: the configuration it needs, a truncated download, and an S3 that is
down, which is one StorageError after a bounded number of attempts (boto's retry settings, counted here, not
timed). What needs a real S3 server (multipart ETags, objects replaced behind our back, a wrong secret, `down`):
tests/integration/test_storage.py."""

from __future__ import annotations

import hashlib
import io
import socket

import pytest

from hyperforget.base.errors import IntegrityError, StorageError
from hyperforget.publish import s3 as storage


def _no_leftovers(folder) -> bool:
    return not folder.exists() or not any(folder.iterdir())


@pytest.fixture
def nothing_listening(monkeypatch) -> str:
    """S3 configured at a loopback port where no server listens (a stopped one), with the local dev keys."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv(storage.ENDPOINT_VAR, endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    return endpoint


@pytest.mark.parametrize("missing", ["HYPERFORGET_S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
def test_missing_configuration_names_the_variable_without_leaking_secrets(monkeypatch, missing):
    monkeypatch.setenv("HYPERFORGET_S3_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-id-value")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "super-secret-value")
    monkeypatch.delenv(missing)
    with pytest.raises(StorageError, match=missing) as err:
        storage.s3_client()
    assert "super-secret-value" not in str(err.value)


def test_truncated_download_is_integrity_error_and_leaves_no_file(nothing_listening, tmp_path):
    from botocore.response import StreamingBody
    from botocore.stub import Stubber

    client = storage.s3_client()
    full = b"0123456789" * 100
    digest = hashlib.sha256(full).hexdigest()
    body = StreamingBody(io.BytesIO(full[:600]), len(full))  # server promised 1000 bytes, sent 600
    with Stubber(client) as stub:
        stub.add_response(
            "get_object",
            {"Body": body, "ContentLength": len(full), "Metadata": {"sha256": digest}},
            {"Bucket": "b", "Key": "k"},
        )
        with pytest.raises(IntegrityError, match="truncated"):
            storage.fetch_file("b", "k", tmp_path / "out" / "f.bin", digest, client=client)
    assert _no_leftovers(tmp_path / "out")


def test_the_client_bounds_its_attempts_and_timeouts(nothing_listening):
    """The defaults every S3 call gets: 5 attempts (4 retries, standard mode: capped exponential backoff), a 2 s
    connect timeout and a 60 s read timeout. These settings bound how long a dead S3 takes to be named."""
    config = storage.s3_client().meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 5}
    assert (config.connect_timeout, config.read_timeout) == (2.0, 60.0)


def test_a_fetch_from_an_s3_that_is_down_fails_after_its_attempts_naming_it_and_leaves_no_file(nothing_listening,
                                                                                                 tmp_path):
    client = storage.s3_client(retries=2, connect_timeout=1)
    sent = []
    client.meta.events.register("before-send.s3.GetObject", lambda request, **_: sent.append(request.url))
    with pytest.raises(StorageError) as err:
        storage.fetch_file("hyperforget", "obj.bin", tmp_path / "out" / "obj.bin", "0" * 64, client=client)
    message = str(err.value)
    assert len(sent) == 3  # the first try and two retries, each sent
    assert nothing_listening in message and "after 3 attempts" in message and "make stack-up" in message
    assert _no_leftovers(tmp_path / "out")
