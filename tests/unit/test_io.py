"""hyperforget.base.io: safetensors + sha256 sidecars, atomic writes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from hyperforget.base.errors import IntegrityError
from hyperforget.base.io import (
    atomic_path,
    load_tensors,
    read_json,
    save_tensors,
    sha256_bytes,
    sha256_file,
    sidecar,
    tensor_metadata,
    write_json,
)


@pytest.fixture
def tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "fc.weight": torch.randn(4, 3, generator=g),
        "fc.bias": torch.randn(4, generator=g, dtype=torch.float64),
        "steps": torch.arange(5, dtype=torch.int64),
    }


def test_save_then_load_round_trips_tensors_exactly(tmp_path, tensors):
    path = tmp_path / "w" / "model.safetensors"
    digest = save_tensors(path, tensors, metadata={"arch": "mlp"})
    assert digest == sha256_file(path)
    assert sidecar(path).read_text().split() == [digest, "model.safetensors"]
    loaded = load_tensors(path)
    assert loaded.keys() == tensors.keys()
    for name, t in tensors.items():
        assert loaded[name].dtype == t.dtype
        assert torch.equal(loaded[name], t)


SAVE = """
import sys, torch
from hyperforget.base.io import save_tensors
meta = {"arch": "mlp", "width": "10", "input_shape": "[1, 8, 8]", "num_classes": "10", "seed": "0"}
print(save_tensors(sys.argv[1], {"w": torch.arange(6.0), "b": torch.ones(2)}, metadata=meta))
"""


def test_identical_weights_saved_by_different_processes_are_byte_identical(tmp_path):
    # the safetensors writer orders metadata by the process's hash seed; registry and DVC key on sha256.
    # Two processes with two given seeds (whose dict orders differ), run side by side.
    children = [subprocess.Popen([sys.executable, "-c", SAVE, str(tmp_path / f"{seed}.safetensors")],
                                 env={**os.environ, "PYTHONHASHSEED": str(seed)}, stdout=subprocess.PIPE, text=True)
                for seed in (1, 2)]
    digests = {child.communicate(timeout=300)[0].strip() for child in children}
    assert [child.returncode for child in children] == [0, 0] and len(digests) == 1
    assert tensor_metadata(tmp_path / "1.safetensors")["input_shape"] == "[1, 8, 8]"
    assert torch.equal(load_tensors(tmp_path / "2.safetensors")["w"], torch.arange(6.0))


def test_flipped_byte_is_an_integrity_error(tmp_path, tensors):
    path = tmp_path / "model.safetensors"
    save_tensors(path, tensors)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # one bit in the last tensor's data: still valid safetensors, wrong weights
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        load_tensors(path)


def test_wrong_expected_sha256_is_an_integrity_error(tmp_path, tensors):
    path = tmp_path / "model.safetensors"
    save_tensors(path, tensors)
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        load_tensors(path, expected_sha256="0" * 64)


def test_missing_sidecar_is_an_integrity_error(tmp_path, tensors):
    path = tmp_path / "model.safetensors"
    save_tensors(path, tensors)
    sidecar(path).unlink()
    with pytest.raises(IntegrityError, match="no checksum sidecar"):
        load_tensors(path)


def test_missing_file_is_an_integrity_error(tmp_path):
    with pytest.raises(IntegrityError, match="does not exist"):
        load_tensors(tmp_path / "absent.safetensors")


def test_failed_atomic_write_leaves_no_file(tmp_path):
    target = tmp_path / "out" / "table.json"
    with pytest.raises(RuntimeError, match="interrupted"), atomic_path(target) as tmp:
        tmp.write_bytes(b'{"half": ')
        raise RuntimeError("interrupted")
    assert list(target.parent.iterdir()) == []  # neither the target nor the temp file


def test_failed_atomic_write_keeps_the_previous_version(tmp_path):
    target = tmp_path / "table.json"
    write_json(target, {"version": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("garbage")
        raise RuntimeError("interrupted")
    assert read_json(target) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["table.json"]


def test_corrupt_json_is_an_integrity_error(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{"acc": 0.9')
    with pytest.raises(IntegrityError, match="not valid JSON"):
        read_json(path)


def test_a_remembered_digest_is_not_returned_for_a_file_changed_in_place_with_its_mtime_put_back(tmp_path):
    f = tmp_path / "data.bin"
    f.write_bytes(b"a" * 1000)
    time.sleep(2.1)  # written over 2 s ago: its digest is remembered from here on
    first = sha256_file(f)
    assert sha256_file(f) == first == sha256_bytes(b"a" * 1000)
    st = os.stat(f)
    with open(f, "r+b") as h:  # same size, one byte changed, the old mtime restored
        h.seek(500)
        h.write(b"b")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert sha256_file(f) == sha256_bytes(b"a" * 500 + b"b" + b"a" * 499) != first
