"""Safe, self-describing artifacts: atomic writes, sha256 sidecars, safetensors, JSON.

Nothing here unpickles: weights are safetensors, tables are JSON. Every write goes to a temp file in
the same folder and is renamed into place, so an interrupted run never leaves a half file that
looks complete.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from hyperforget.base.errors import IntegrityError

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(value: Any, **dumps: Any) -> str:
    """sha256 of `json.dumps(value, **dumps)`: a digest of settings, ids or keys. The `dumps` options are part of
    the bytes hashed, so a stored digest (a ledger's ids, a cache key) is reproduced only with the same ones."""
    return sha256_bytes(json.dumps(value, **dumps).encode())


_SETTLED_NS = 2_000_000_000  # a file unchanged this long has a timestamp no later write can repeat
_DIGESTS: dict[tuple, str] = {}


def sha256_file(path: str | Path) -> str:
    """The file's sha256, remembered in this process while its size, inode and timestamps stay the same.

    Why: one request checks the same data set and θ0 against its record half a dozen times (submit, scope,
    reference keys, lineage), 0.1 s each for MNIST-60k's 220 MB. Any write moves mtime and ctime (and ctime
    cannot be set back), so a changed file is hashed again. As git does with its index ("racy git"), a digest is
    remembered only for a file last written over 2 s before it was hashed: a write in the same timestamp tick
    as the one hashed could otherwise leave every stat field unchanged."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if (known := _DIGESTS.get(key)) is not None:
        return known
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > _SETTLED_NS:
        _DIGESTS[key] = h.hexdigest()
    return h.hexdigest()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the mode a plain open() would
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IntegrityError(f"{path} is not valid JSON ({e}); delete it and re-run the stage") from e


def sidecar(path: str | Path) -> Path:
    return Path(f"{path}.sha256")


def recorded_sha256(path: str | Path) -> str:
    """The sha256 that `path`'s sidecar records: what `load_tensors` verifies the file against, so after a load it
    names the content read without hashing it again."""
    side = sidecar(path)
    if not side.exists():
        raise IntegrityError(f"{path} has no checksum sidecar {side.name}; re-run the stage that writes it")
    return side.read_text().split()[0]


def canonical_header(data: bytes) -> bytes:
    """safetensors bytes with the JSON header re-serialised with sorted keys. Why: the writer emits the
    metadata in hash-map order, which changes from process to process, so identical weights saved by two
    processes would get two sha256s (and the registry, DVC and the zoo key on those). Tensor offsets are
    relative to the data section, which is unchanged; the header keeps its 8-byte-aligned padding."""
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-(8 + len(header)) % 8)
    return len(header).to_bytes(8, "little") + header + data[8 + n:]


def tensor_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """The canonical safetensors bytes of `tensors` (`canonical_header`): what `save_tensors` writes, and what
    names a set of weights by its sha256 without writing it."""
    return canonical_header(st_save({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                                    metadata=metadata))


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """Write safetensors atomically (byte-identical for identical inputs) plus a `.sha256` sidecar;
    return the digest."""
    data = tensor_bytes(tensors, metadata)
    digest = sha256_bytes(data)
    write_bytes(path, data)
    write_text(sidecar(path), f"{digest}  {Path(path).name}\n")
    return digest


def load_tensors(path: str | Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read safetensors after checking its sha256 (from the sidecar unless one is given)."""
    path = Path(path)
    if not path.exists():
        raise IntegrityError(f"{path} does not exist; re-run the stage that writes it")
    data = path.read_bytes()
    if expected_sha256 is None:
        expected_sha256 = recorded_sha256(path)
    actual = sha256_bytes(data)
    if actual != expected_sha256:
        raise IntegrityError(
            f"checksum mismatch for {path}: expected sha256 {expected_sha256[:12]}…, got {actual[:12]}…; "
            "the file is corrupt or truncated; delete it and re-run the stage that writes it"
        )
    try:
        return st_load(data)
    except (SafetensorError, ValueError) as e:
        raise IntegrityError(f"{path} is not a valid safetensors file ({e})") from e


def tensor_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file (reads the header only)."""
    with safe_open(str(path), "pt") as f:
        return f.metadata() or {}


def jsonable(obj: Any) -> Any:
    """NaN/inf → None and numpy scalars → Python, so the JSON is strict (DVC and browsers parse it)."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
