"""The data sets' original files: safe readers and the import of a set's files into `data/raw/<name>/`.

Raw files are read by small readers written here (IDX for MNIST-style sets, the CIFAR-10 binary
records), never by unpickling. `import_raw` materialises a data set's original files under
`data/raw/<name>/` (the folder `data.dvc` tracks). The digits export is byte-deterministic, so a fresh
clone rebuilds exactly what `data.dvc` records.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
from math import prod
from pathlib import Path

import numpy as np

from hyperforget.base.errors import DataError
from hyperforget.base.io import sha256_file, write_bytes
from hyperforget.config.params import DataConfig

IDX_DTYPES = {0x08: np.uint8}
MNIST_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
# md5 of the uncompressed original MNIST files (its authors' release; ../shared/datasets/mnist/README.md)
MNIST_MD5 = {
    "train_x": "6bbc9ace898e44ae57da46a324031adb",
    "train_y": "a25bea736e30d166cdddb491f175f624",
    "test_x": "2646ac647ad5339dbf082846283269ea",
    "test_y": "27ae3e4e09519cfbb04c329615203637",
}
DIGITS_FILES = {"x": "digits-images-idx3-ubyte", "y": "digits-labels-idx1-ubyte"}
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
CIFAR_RECORD = 1 + 3 * 32 * 32


# ---------- readers ----------


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or .gz), checking the magic number and that the size matches the header."""
    path = Path(path)
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e}); the file is corrupt or truncated — replace it") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (bad magic number {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + prod(dims)
    if len(data) != expected:
        raise DataError(
            f"{path}: IDX header promises {dims} ({expected} bytes) but the file has {len(data)} bytes; "
            "the file is truncated or corrupt — replace it with the original"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte array as an IDX file's bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx(path: str | Path, array: np.ndarray) -> None:
    write_bytes(path, idx_bytes(array))


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def read_cifar_batches(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for p in paths:
        raw = p.read_bytes()
        if len(raw) == 0 or len(raw) % CIFAR_RECORD:
            raise DataError(f"{p}: size {len(raw)} is not a multiple of the CIFAR-10 record size {CIFAR_RECORD}")
        rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
        if rec[:, 0].max() > 9:
            raise DataError(f"{p}: labels above 9; not a CIFAR-10 binary batch")
        ys.append(rec[:, 0])
        xs.append(rec[:, 1:].reshape(-1, 3, 32, 32))
    return np.concatenate(xs), np.concatenate(ys)


def _check_pair(x: np.ndarray, y: np.ndarray, where: str) -> None:
    if len(x) != len(y):
        raise DataError(f"{where}: {len(x)} images but {len(y)} labels")


def load_raw(name: str, folder: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Return uint8 images [N, C, H, W], labels, and the test split if the files include one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"raw data folder {folder} not found; run `hyperforget import-data` first")
    if name == "digits":
        x, y = (read_idx(_find(folder, DIGITS_FILES[k]) or folder / DIGITS_FILES[k]) for k in ("x", "y"))
        _check_pair(x, y, str(folder))
        return x[:, None], y, None, None
    if name in ("mnist", "fashion_mnist"):
        found = {k: _find(folder, stem) for k, stem in MNIST_FILES.items()}
        if found["test_x"] is None or found["test_y"] is None:
            raise DataError(f"{folder}: needs at least {MNIST_FILES['test_x']}[.gz] and {MNIST_FILES['test_y']}[.gz]")
        tx, ty = read_idx(found["test_x"]), read_idx(found["test_y"])
        _check_pair(tx, ty, str(found["test_x"]))
        if found["train_x"] and found["train_y"]:
            x, y = read_idx(found["train_x"]), read_idx(found["train_y"])
            _check_pair(x, y, str(found["train_x"]))
            return x[:, None], y, tx[:, None], ty
        return tx[:, None], ty, None, None
    if name == "cifar10":
        base = folder / "cifar-10-batches-bin" if (folder / "cifar-10-batches-bin").is_dir() else folder
        train = sorted(base.glob("data_batch_*.bin"))
        if not train or not (base / "test_batch.bin").exists():
            raise DataError(f"{base}: needs data_batch_1..5.bin and test_batch.bin (CIFAR-10 binary version)")
        x, y = read_cifar_batches(train)
        tx, ty = read_cifar_batches([base / "test_batch.bin"])
        return x, y, tx, ty
    raise DataError(f"unknown data set {name!r}")


# ---------- raw import ----------


def export_digits(folder: Path) -> None:
    """Write scikit-learn's shipped digits as IDX files (pixel values 0..16, byte-deterministic)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    for key, array in (("x", d.images), ("y", d.target)):
        path = folder / DIGITS_FILES[key]
        data = idx_bytes(array.astype(np.uint8))
        _refuse_overwrite(path, data)
        write_bytes(path, data)


def _refuse_overwrite(path: Path, data: bytes) -> None:
    """Importing never overwrites a raw file that differs from the original: after a deletion request
    erased records from it (`hyperforget.erasure.data_erasure`), a fresh import would bring them back."""
    if path.is_file() and path.read_bytes() != data:
        raise DataError(f"{path} differs from the data set's original file: a deletion request erased records "
                        "from it (`hyperforget request list`) or it was edited, and importing never overwrites "
                        "it. Restore the tracked version with `dvc checkout data.dvc`, or delete the folder to "
                        "import the originals")


def _download(name: str, folder: Path) -> Path:
    """Online users only: fetch the original files with torchvision's checksum-verifying downloader."""
    try:
        from torchvision.datasets import MNIST, FashionMNIST
        from torchvision.datasets.utils import download_and_extract_archive
    except Exception as e:  # torchvision missing, or a CUDA build beside a CPU torch
        raise DataError(f"downloading {name} needs a working torchvision (`pip install .[scale]`): {e}") from e
    cache = folder / ".download"
    if name == "cifar10":
        download_and_extract_archive(CIFAR_URL, str(cache), md5=CIFAR_MD5)
        return cache / "cifar-10-batches-bin"
    cls = MNIST if name == "mnist" else FashionMNIST
    cls(str(cache), train=True, download=True)
    return cache / cls.__name__ / "raw"


def check_mnist_md5(folder: str | Path) -> dict[str, str]:
    """Verify every MNIST file present in `folder` against the authors' md5 (of the uncompressed bytes, so a
    re-gzipped copy passes); returns {file: md5}. A file that differs is not MNIST: DataError."""
    out = {}
    for key, stem in MNIST_FILES.items():
        path = _find(Path(folder), stem)
        if path is None:
            continue
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if digest != MNIST_MD5[key]:
            raise DataError(f"{path}: md5 {digest} of its content is not the original MNIST's {MNIST_MD5[key]}; "
                            "replace it with the original file (or use data.name fashion_mnist for Fashion-MNIST)")
        out[path.name] = digest
    return out


def import_raw(cfg: DataConfig) -> Path:
    """Materialise the data set's original files under `raw_dir/<name>` and return that folder."""
    dest = Path(cfg.raw_dir) / cfg.name
    if cfg.name == "digits":
        export_digits(dest)
        return dest
    source = Path(cfg.source) if cfg.source else None
    if source is None:
        if not cfg.download:
            raise DataError(f"data.source is not set for {cfg.name}: point it at a folder of the original files "
                            "or set data.download: true (needs internet)")
        source = _download(cfg.name, dest)
    if not source.is_dir():
        raise DataError(f"data.source {source} is not a folder")
    load_raw(cfg.name, source)  # validate before copying anything
    if cfg.name == "mnist":
        check_mnist_md5(source)
    dest.mkdir(parents=True, exist_ok=True)
    files = [f for f in sorted(source.iterdir()) if f.is_file() and not f.name.startswith(".")]
    for f in files:
        _refuse_overwrite(dest / f.name, f.read_bytes())
    for f in files:
        shutil.copyfile(f, dest / f.name)
    if (source / "cifar-10-batches-bin").is_dir():
        shutil.copytree(source / "cifar-10-batches-bin", dest / "cifar-10-batches-bin", dirs_exist_ok=True)
    return dest


def raw_checksums(folder: str | Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(Path(folder).iterdir()) if p.is_file()}
