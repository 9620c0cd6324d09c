"""Record ids: how a deletion request names the training records it wants gone, and how a record is hashed.

A record-ids file holds one entry per line (blank lines and `#` comments are ignored):
- a non-negative integer written with the ASCII digits 0-9: the index of a record in the prepared TRAIN split
  (`x_train[i]`, `y_train[i]` of `artifacts/prepare/dataset.safetensors`; the dataset card gives its size), or
- `sha256:<64 hex digits>`: the hash of a record's bytes, as `RECORD_HASH` defines it. A hash names content,
  so every train record with those bytes is meant (identical duplicates go together).
Parsing is strict, because a deletion request must be exactly what was asked: `²` or `٣` (digits Python's
`int()` would read) are refused, and so is an entry listed twice (the request would silently name fewer records
than its file lists); each error is one line naming the entry and its line.

Why both: an index is what the data owner's own tables hold once they know the prepared order; a hash
lets someone who holds only the record itself (the image and its label) ask without knowing any index.
`hyperforget request record-hashes` writes the hash of every train record for the owner's lookups.

Why the hash is over the *prepared* record: the prepared dataset is the one every model here was trained on
(its sha256 is each registered version's `lineage.dataset` tag), so a hash names exactly a training record.

Everything here is plain parsing and hashing; which dataset the ids are checked against is the caller's.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from hyperforget.base.errors import DataError
from hyperforget.base.io import sha256_json, write_text

HASH_PREFIX = "sha256:"
RECORD_HASH = ("sha256 over the record's prepared input x_train[i] as float32 little-endian bytes in C order, "
               "followed by its label y_train[i] as int64 little-endian (artifacts/prepare/dataset.safetensors)")
_HEX = re.compile(r"[0-9a-f]{64}")
_INDEX = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() and int() also take '²' and '٣'
_SHOWN = 5  # ids named in one error message
_TIMES = {2: "twice", 3: "three times"}


@dataclass(frozen=True)
class RecordIds:
    """The entries of one record-ids file: sorted unique indices and sorted unique record hashes."""

    indices: tuple[int, ...]
    hashes: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return len(self.indices) + len(self.hashes)


def ids_sha256(indices: list[int] | tuple[int, ...]) -> str:
    """sha256 of the sorted unique indices as a compact JSON list (the ledger's `ids_sha256` of a request)."""
    return sha256_json(sorted(set(indices)), separators=(",", ":"))


def parse_ids(text: str, source: str = "record ids") -> RecordIds:
    """The entries of a record-ids text; DataError (one line) naming the line of a malformed entry, every entry
    listed more than once, or an empty list."""
    lines: dict[int | str, list[int]] = {}  # entry → the lines it is on
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.lower().startswith(HASH_PREFIX):
            digest = line[len(HASH_PREFIX):].strip().lower()
            if not _HEX.fullmatch(digest):
                raise DataError(f"{source} line {n}: {line!r} is not sha256:<64 hex digits>")
            lines.setdefault(digest, []).append(n)
        elif _INDEX.fullmatch(line):
            lines.setdefault(int(line), []).append(n)
        else:
            raise DataError(f"{source} line {n}: {line!r} is neither a record id (a non-negative integer in the ASCII "
                            "digits 0-9: an index into the prepared train split) nor sha256:<hex> of a record; one "
                            "entry per line")
    if not lines:
        raise DataError(f"{source} names no records (it is empty or only comments): a deletion request must name at "
                        "least one record, one id per line")
    repeated = [(entry, at) for entry, at in lines.items() if len(at) > 1]
    if repeated:
        extra = sum(len(at) - 1 for _, at in repeated)
        named = [f"{_entry(e)} {_TIMES.get(len(at), f'{len(at)} times')}: lines {_few(at)}" for e, at in repeated]
        raise DataError(f"{source}: {extra} duplicate id{'s' if extra > 1 else ''} ({_few(named, '; ')}); list each "
                        "record once")
    indices = sorted(e for e in lines if isinstance(e, int))
    hashes = sorted(e for e in lines if isinstance(e, str))
    return RecordIds(tuple(indices), tuple(hashes), source)


def _entry(entry: int | str) -> str:
    return str(entry) if isinstance(entry, int) else f"{HASH_PREFIX}{entry[:12]}…"


def read_ids(path: str | Path) -> RecordIds:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (some editors write one) is not an entry
    except FileNotFoundError:
        raise DataError(f"record-ids file {path} not found; give the path of a file with one record id per line "
                        "(a relative forget.samples is resolved against the params file's folder)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read record-ids file {path} ({e}); it must be UTF-8 text, one id per line") from None
    return parse_ids(text, str(path))


def digest(ids: RecordIds) -> str:
    """What names the request's record set: `ids_sha256` of the indices when it has only indices (the form a
    request is stored in), else the sha256 of the canonical JSON of both lists."""
    if not ids.hashes:
        return ids_sha256(ids.indices)
    return sha256_json({"indices": list(ids.indices), "sha256": list(ids.hashes)}, separators=(",", ":"))


def file_digest(path: str | Path) -> str:
    """`digest` of a record-ids file, cached while the file is unchanged (a slug asks for it often)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return digest(read_ids(path))  # raises the clear error
    return _cached_digest(str(path.resolve()), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=64)
def _cached_digest(path: str, mtime_ns: int, size: int) -> str:
    return digest(read_ids(path))


def record_hashes(x: Any, y: Any) -> list[str]:
    """The `RECORD_HASH` of every record (row of `x` with its label in `y`), as hex digests."""
    xs = np.ascontiguousarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype="<f4")
    ys = np.ascontiguousarray(y.detach().cpu().numpy() if hasattr(y, "detach") else y, dtype="<i8")
    rows = xs.reshape(len(xs), -1)
    return [hashlib.sha256(rows[i].tobytes() + ys[i].tobytes()).hexdigest() for i in range(len(rows))]


def _few(items: list, sep: str = ", ") -> str:
    shown = sep.join(str(i) for i in items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def resolve(ids: RecordIds, data: Any) -> list[int]:
    """The sorted train indices `ids` names in `data` (a prepared `data.Dataset`). DataError, one each, for
    ids past the train split, hashes of no train record (saying when they are validation or test records) and
    a request that would delete every training record."""
    n, name = len(data.y_train), getattr(data, "name", "the data set")
    out_of_range = [i for i in ids.indices if i >= n]
    if out_of_range:
        raise DataError(f"{ids.source}: record id{'s' if len(out_of_range) > 1 else ''} {_few(out_of_range)} out of "
                        f"range: record ids index the prepared TRAIN split of {name} (0..{n - 1}); validation and "
                        "test records were never trained on, so no model holds them. Check the ids against "
                        "artifacts/prepare/dataset_card.json (sizes.train)")
    found = set(ids.indices)
    if ids.hashes:
        table: dict[str, list[int]] = {}
        for i, h in enumerate(record_hashes(data.x_train, data.y_train)):
            table.setdefault(h, []).append(i)
        unknown = [h for h in ids.hashes if h not in table]
        if unknown:
            elsewhere = {h: split for split in ("val", "test")
                         for h in set(record_hashes(getattr(data, f"x_{split}"), getattr(data, f"y_{split}")))
                         & set(unknown)}
            held = [f"sha256:{h[:12]}… (a {elsewhere[h]} record)" for h in unknown if h in elsewhere]
            none = [f"sha256:{h[:12]}…" for h in unknown if h not in elsewhere]
            parts = ([f"{_few(held)} name validation/test records, which no model trains on: record ids name "
                      "TRAIN records"] if held else []) + ([f"{_few(none)} match no record of {name}"] if none else [])
            raise DataError(f"{ids.source}: {'; '.join(parts)}. A record's hash is the {RECORD_HASH}; "
                            "`hyperforget request record-hashes` lists every train record's hash")
        found.update(i for h in ids.hashes for i in table[h])
    if len(found) >= n:
        raise DataError(f"{ids.source} would delete every one of the {n} training records of {name}: nothing would "
                        "be left to train on. Delete the data set instead, or name fewer records")
    return sorted(found)


def write_ids(path: Path, indices: list[int]) -> str:
    """The canonical form of a resolved request: sorted unique indices, one per line. Returns `ids_sha256`."""
    unique = sorted(set(indices))
    write_text(path, "".join(f"{i}\n" for i in unique))
    return ids_sha256(unique)
