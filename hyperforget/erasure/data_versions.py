"""A version of the raw data, row by row, and DVC's record of versions: where each prepared train record sits in
the raw files, writing those files again without some rows, and `collect` (the new version recorded in DVC and
pushed, every other one removed from the cache and remotes). `data_erasure` is the request step built on it.

Why `dvc gc --workspace` and not a scope by commits: erased records are in every version of the data since they
were imported, so every version the workspace does not use must go (older commits' data, other branches' and
experiments' outputs: run those again). `--all-commits` or `--all-branches` would keep exactly what must go
(HEAD's data.dvc names the old version until the change is committed). A cache outside the project is refused:
gc would remove what other projects keep there. Every remote is taken to be this project's own.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import ConfigError, DataError, IntegrityError, StorageError
from hyperforget.base.io import sha256_file, sha256_json, write_bytes
from hyperforget.config.params import DataConfig
from hyperforget.data import datasets
from hyperforget.data.readers import CIFAR_RECORD, DIGITS_FILES, MNIST_FILES, load_raw, read_idx

DVC_TIMEOUT_S = 3600


# ---------- the raw training data, row by row ----------


def _idx(folder: Path, stem: str) -> Path | None:
    return next((p for p in (folder / stem, folder / f"{stem}.gz") if p.exists()), None)  # readers' order


def raw_parts(name: str, folder: Path) -> list[tuple[Path, ...]]:
    """The files holding the raw training rows, in the order `readers.load_raw` concatenates them: an IDX
    (images, labels) pair, or one CIFAR-10 batch per part."""
    if name == "cifar10":
        base = folder / "cifar-10-batches-bin" if (folder / "cifar-10-batches-bin").is_dir() else folder
        return [(b,) for b in sorted(base.glob("data_batch_*.bin"))]
    if name == "digits":
        pair = (_idx(folder, DIGITS_FILES["x"]), _idx(folder, DIGITS_FILES["y"]))
    else:  # MNIST-style: the training files, or the test files of a 10k-only folder (load_raw trains on those)
        pair = (_idx(folder, MNIST_FILES["train_x"]), _idx(folder, MNIST_FILES["train_y"]))
        if not all(pair):
            pair = (_idx(folder, MNIST_FILES["test_x"]), _idx(folder, MNIST_FILES["test_y"]))
    if not all(pair):
        raise DataError(f"{folder}: the raw training files of {name} are missing; restore the data (`dvc checkout`)")
    return [pair]


def raw_version(folder: Path) -> dict:
    """{files: {relative path: sha256}, sha256: of that mapping as canonical JSON}: the raw data's version."""
    files = {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}
    return {"files": files, "sha256": sha256_json(files, sort_keys=True)}


def train_rows(cfg: DataConfig, data: datasets.Dataset) -> np.ndarray:
    """The raw row (counted across `raw_parts`) of each prepared train record: `datasets.prepare`'s splits replayed
    on the raw labels, then checked record by record against `data`; IntegrityError when the raw data is not the
    version `data` was prepared from (its rows could not be located)."""
    x, y, tx, _ = load_raw(cfg.name, Path(cfg.raw_dir) / cfg.name)
    rows = np.arange(len(y))
    if tx is None:  # no test split of its own: prepare carves one first
        rows = rows[datasets.stratified_split(y, cfg.test_fraction, cfg.seed)[0]]
    rows = rows[datasets.stratified_split(y[rows], cfg.val_fraction, cfg.seed + 1)[0]]
    xf = torch.from_numpy(x[rows].astype(np.float32) / (16.0 if cfg.name == "digits" else 255.0))
    same = len(rows) == len(data.y_train) and torch.equal(torch.from_numpy(y[rows].astype(np.int64)), data.y_train) \
        and torch.allclose((xf - xf.mean()) / xf.std(), data.x_train, rtol=0, atol=1e-5)
    if not same:
        raise IntegrityError(f"{cfg.raw_dir}/{cfg.name} is not the raw data the prepared dataset was made from, so "
                             "the rows of a request's records cannot be located; restore the version the request "
                             "names (`dvc checkout`), then close it again: `hyperforget request process ID`")
    return rows


def write_without(name: str, folder: Path, rows: list[int]) -> None:
    """Write the raw training files again without `rows` (each file atomically, in its own format)."""
    parts = raw_parts(name, folder)
    arrays = [[_read(p) for p in part] for part in parts]
    total = sum(len(a[0]) for a in arrays)
    gone = np.unique(np.asarray(rows, dtype=np.int64))
    if len(gone) and (gone[0] < 0 or gone[-1] >= total):
        raise DataError(f"raw rows {gone[:5].tolist()}… are outside the {total} rows of {folder}")
    start = 0
    for part, arrs in zip(parts, arrays, strict=True):
        n = len(arrs[0])
        drop = gone[(gone >= start) & (gone < start + n)] - start
        for path, a in zip(part, arrs, strict=True):
            if len(drop):
                _write(path, np.delete(a, drop, axis=0))
        start += n


def _read(path: Path) -> np.ndarray:
    if path.suffix == ".bin":
        return np.frombuffer(path.read_bytes(), dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    return read_idx(path)


def _write(path: Path, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if path.suffix == ".bin":
        write_bytes(path, array.tobytes())
        return
    blob = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    write_bytes(path, gzip.compress(blob, mtime=0) if path.suffix == ".gz" else blob)  # byte-deterministic


def shift(rows: list[int], removed: list[int]) -> list[int]:
    """`rows` of the old version as rows of the new one, where `removed` are gone (the rest keep their order)."""
    gone = np.unique(np.asarray(removed, dtype=np.int64))
    kept = np.asarray(sorted(set(rows) - set(gone.tolist())), dtype=np.int64)
    return (kept - np.searchsorted(gone, kept)).tolist()


# ---------- DVC ----------


def _dvc(art: Artifacts, *args: str) -> str:
    exe = Path(sys.executable).parent / "dvc"
    cmd = [str(exe) if exe.exists() else shutil.which("dvc") or "dvc", *args]
    try:
        r = subprocess.run(cmd, cwd=art.root, capture_output=True, text=True, timeout=DVC_TIMEOUT_S,
                           env={**os.environ, "DVC_NO_ANALYTICS": "1", "COLUMNS": "4096"})
    except (OSError, subprocess.TimeoutExpired) as e:
        raise StorageError(f"`dvc {' '.join(args)}` in {art.root} did not run ({e}); install DVC (`pip install "
                           "dvc[s3]`) and close the request again: the erasure resumes") from None
    if r.returncode:
        tail = (r.stdout + r.stderr).strip()[-1500:]
        raise StorageError(f"`dvc {' '.join(args)}` in {art.root} exited {r.returncode}: {tail}. Fix the cause (a "
                           "remote down?) and close the request again (`hyperforget request process ID`): it resumes")
    return r.stdout + "\n" + r.stderr


def _removed(text: str, where: str) -> int:
    """How many objects `dvc gc` says it removed from `where` ('repo cache' or 'remote')."""
    return sum(int(n) for n in re.findall(rf"Removed (\d+) objects? from {where}", text))


def _tracking_file(art: Artifacts, folder: Path) -> Path | None:
    """The .dvc file tracking the raw folder or a folder above it (data.dvc tracks data/)."""
    for p in (folder, *folder.parents):
        if p == art.root or not p.is_relative_to(art.root):
            return None
        if (p.parent / f"{p.name}.dvc").is_file():
            return p.parent / f"{p.name}.dvc"
    return None


def _prepare_stages(art: Artifacts) -> list[str]:
    """The stages of dvc.yaml that output the prepared dataset (rebuilt here, so committed here)."""
    path = art.root / "dvc.yaml"
    stages = (yaml.safe_load(path.read_text()) or {}).get("stages", {}) if path.exists() else {}
    target = str(art.dataset.relative_to(art.root))
    return [name for name, s in stages.items()
            if any((o if isinstance(o, str) else next(iter(o))) == target for o in (s or {}).get("outs", []))]


def _remotes(art: Artifacts) -> list[tuple[str, str]]:
    """Every DVC remote of the project as (name, url), from `dvc config --list`: one `key=value` a line (`dvc
    remote list` is a table that DVC wraps at the terminal's width, so a long url breaks its lines)."""
    found = {}
    for line in _dvc(art, "config", "--list").splitlines():
        key, _, value = line.strip().partition("=")
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "remote" and parts[2] == "url":
            found[parts[1]] = value
    return sorted(found.items())


def collect(art: Artifacts, raw_dir: Path) -> dict:
    """Record the new version in DVC, push it to every remote, then remove every version the workspace does not
    use from the cache and from every remote (`dvc gc --workspace`; see the module docstring)."""
    cache = Path(next(line for line in _dvc(art, "cache", "dir").splitlines() if line.strip()).strip()).resolve()
    if not cache.is_relative_to(art.root):
        raise ConfigError(f"the DVC cache {cache} is outside the project {art.root} (shared?): `dvc gc --workspace` "
                          "would remove what other projects keep there. Give this project its own cache "
                          "(`dvc cache dir --unset`), then close the request again")
    tracked = _tracking_file(art, Path(raw_dir))
    targets = []
    if tracked is not None:
        _dvc(art, "add", str(tracked.with_suffix("").relative_to(art.root)))
        targets.append(str(tracked.relative_to(art.root)))
    for stage in _prepare_stages(art):
        _dvc(art, "commit", "--force", stage)
        targets.append(stage)
    remotes = _remotes(art)
    for name, _ in remotes:
        _dvc(art, "push", "-r", name, *targets)
    out = {"scope": "workspace", "command": "dvc gc --workspace --force [--cloud -r REMOTE]",
           "data_dvc": yaml.safe_load(tracked.read_text())["outs"][0].get("md5") if tracked else None,
           "cache": {"dir": str(cache.relative_to(art.root)),
                     "removed": _removed(_dvc(art, "gc", "--workspace", "--force"), "repo cache")},
           "remotes": []}
    for name, url in remotes:
        text = _dvc(art, "gc", "--workspace", "--cloud", "-r", name, "--force")
        out["remotes"].append({"name": name, "url": url, "removed": _removed(text, "remote")})
    return out
