"""Signed deletion certificates: the round trip, tamper evidence (any byte), signer pinning, referenced-file
checksums, key handling (0600 file, reuse, environment wins) and the human rendering."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hyperforget.base.errors import ConfigError
from hyperforget.erasure.certificate import (
    build_certificate,
    file_bytes,
    load_or_create_key,
    public_key_b64,
    render_markdown,
    sign,
    verify,
    write_certificate,
)

ENV = "HF_TEST_SIGNING_KEY"


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


@pytest.fixture
def evidence(tmp_path):
    """A folder of files the certificate references (weights, gate report)."""
    root = tmp_path / "evidence"
    root.mkdir()
    (root / "after.safetensors").write_bytes(b"unlearned weights")
    (root / "gates.json").write_text('{"passed": true}\n')
    return root


def fields(files: dict[str, str]) -> dict:
    return {
        "request": {"id": "req-42", "requester": "dpo@example.com", "submitted_at": datetime(2025, 3, 1, tzinfo=UTC),
                    "closed_at": datetime(2025, 3, 2, 17, 30, tzinfo=UTC), "classes": [3],
                    "ids_sha256": "a" * 64, "n_records": 182, "dataset_sha256": "d" * 64},
        "models": {"before": {"name": "digits-mlp", "version": 1, "weights_sha256": "b" * 64},
                   "after": {"name": "digits-mlp-forget-req-42", "version": 3, "weights_sha256": "c" * 64}},
        "method": {"name": "dihyfo", "params": {"steps": 50, "guidance": 1.5}},
        "gates": {"passed": True, "retrain_reference": {"models": 3, "test_retained_acc": {"mean": 0.97}},
                  "checks": {"forget_acc": {"passed": True, "detail": "forget acc 0.0000 ≤ 0.0500"},
                             "mia": {"passed": True, "detail": "MIA member rate on D_f 0.0120 ≤ 0.1000"}}},
        "verification": {"relearn_time": {"passed": True, "epochs": 4}},
        "files": files,
    }


@pytest.fixture
def issued(tmp_path, key, evidence):
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(evidence.iterdir())}
    cert = sign(build_certificate(fields(files)), key)
    return write_certificate(cert, tmp_path / "out")["json"]


def test_signed_certificate_verifies(issued, key, evidence):
    assert verify(issued, public_key_b64=public_key_b64(key), files_root=evidence) == []


def test_flipping_one_digit_in_a_value_breaks_the_signature(issued):
    data = issued.read_bytes()
    at = data.index(b'"n_records": 182') + len(b'"n_records": 18')
    issued.write_bytes(data[:at] + b"3" + data[at + 1:])  # 182 → 183, same length, still valid JSON
    assert json.loads(issued.read_bytes())["request"]["n_records"] == 183
    assert any("signature does not match" in p for p in verify(issued))


def test_changed_content_fails_however_the_file_is_formatted(issued):
    cert = json.loads(issued.read_bytes())
    cert["request"]["requester"] = "mallory@example.com"
    issued.write_text(json.dumps(cert, separators=(",", ":")))  # compact: the signature alone must catch it
    assert any("signature does not match" in p for p in verify(issued))


def test_one_byte_outside_the_signed_values_is_still_reported(issued):
    data = issued.read_bytes()
    issued.write_bytes(data.replace(b'\n  "files"', b'\n \t"files"', 1))  # whitespace only: same JSON value
    problems = verify(issued)
    assert len(problems) == 1 and "byte for byte" in problems[0]


def test_every_single_byte_flip_is_detected(issued):
    data = issued.read_bytes()
    for i in range(len(data)):
        tampered = bytearray(data)
        tampered[i] ^= 0x01
        issued.write_bytes(bytes(tampered))
        assert verify(issued), f"flip at byte {i} ({data[i:i + 1]!r}) went unnoticed"


def test_certificate_signed_by_another_key_fails_pinning(issued, key):
    other = public_key_b64(Ed25519PrivateKey.generate())
    problems = verify(issued, public_key_b64=other)
    assert len(problems) == 1 and "not by the expected key" in problems[0]
    assert verify(issued, public_key_b64=public_key_b64(key)) == []


def test_resigning_with_another_key_is_caught_by_pinning(issued, key):
    forged = sign(json.loads(issued.read_bytes()), Ed25519PrivateKey.generate())
    issued.write_bytes(file_bytes(forged))
    assert verify(issued) == []  # self-consistent, so only the expected key can tell
    assert any("not by the expected key" in p for p in verify(issued, public_key_b64=public_key_b64(key)))


def test_changed_referenced_file_fails(issued, evidence):
    (evidence / "after.safetensors").write_bytes(b"other weights")
    problems = verify(issued, files_root=evidence)
    assert len(problems) == 1 and "after.safetensors has sha256" in problems[0]
    (evidence / "gates.json").unlink()
    assert any("gates.json is missing" in p for p in verify(issued, files_root=evidence))


def test_missing_signature_and_broken_json_are_problems(tmp_path, issued):
    unsigned = tmp_path / "unsigned.json"
    unsigned.write_bytes(file_bytes(build_certificate(fields({}))))
    assert any("no signature block" in p for p in verify(unsigned))
    issued.write_bytes(issued.read_bytes()[:-10])
    assert any("not valid UTF-8 JSON" in p for p in verify(issued))


def test_build_refuses_incomplete_fields():
    f = fields({})
    del f["request"]["closed_at"], f["models"]["after"]["weights_sha256"], f["verification"]
    with pytest.raises(ConfigError, match=r"request\.closed_at, models\.after\.weights_sha256, verification"):
        build_certificate(f)


def test_key_file_is_created_private_and_reused(tmp_path):
    path = tmp_path / "keys" / "signing.pem"
    key, created = load_or_create_key(path, env_var=ENV)
    assert created and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again, created_again = load_or_create_key(path, env_var=ENV)
    assert not created_again and public_key_b64(again) == public_key_b64(key)
    assert [p.name for p in path.parent.iterdir()] == ["signing.pem"]  # no temp file left behind


def test_key_file_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "signing.pem"
    load_or_create_key(path, env_var=ENV)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_or_create_key(path, env_var=ENV)


def test_environment_key_wins_over_the_key_file(tmp_path, monkeypatch, key):
    path = tmp_path / "signing.pem"
    file_key, _ = load_or_create_key(path, env_var=ENV)
    monkeypatch.setenv(ENV, base64.b64encode(bytes(range(32))).decode())
    env_key, created = load_or_create_key(path, env_var=ENV)
    assert not created and public_key_b64(env_key) == public_key_b64(key) != public_key_b64(file_key)
    monkeypatch.setenv(ENV, "not base64!")
    with pytest.raises(ConfigError, match=ENV):
        load_or_create_key(path, env_var=ENV)


def test_markdown_tells_a_reader_what_happened(issued, key):
    md = render_markdown(json.loads(issued.read_bytes()))
    for needle in ["req-42", "2025-03-02T17:30:00+00:00", "classes [3]", "182 records", "a" * 64,
                   "| before | digits-mlp | 1 |", "| after | digits-mlp-forget-req-42 | 3 |", "## Method: dihyfo",
                   "## Gates: PASSED", "- PASS forget_acc: forget acc 0.0000 ≤ 0.0500", "- PASS relearn_time: epochs=4",
                   public_key_b64(key), "fingerprint `SHA256:"]:
        assert needle in md, needle
    assert (issued.parent / "certificate.md").read_text() == md
