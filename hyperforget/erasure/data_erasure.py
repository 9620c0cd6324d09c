"""Erasing a record request's records from the data itself: a new version of the raw data without them, every
older version collected from the DVC cache and remotes, and the ledger's notes of both.

Why: answering a request removes the records' influence from the models, but the records are still in
`data/raw`, in the prepared dataset, and in every version of both that DVC keeps. So in a DVC project (`.dvc/`
at the root), `closing.close` runs `erase` once every model in scope is answered, before the certificate:
1. the raw training file(s) under `data/raw/<name>` are written again without the request's rows, the prepared
   dataset is rebuilt from them (as `hyperforget prepare` does), and the ledger notes `data_erased`: both
   versions by sha256 (raw files, prepared dataset), the number of rows erased and the sha256 of their row
   numbers, and θ0's sha256 (θ0 saw the old version);
2. `data_versions.collect`: `dvc add` (data.dvc names the new version), `dvc commit` of the prepare stage
   (dvc.lock too), `dvc push` of both to every remote, then `dvc gc --workspace --force` on the cache and with
   `--cloud -r NAME` on every remote (why this scope: `data_versions`); the ledger notes `data_gc`.
Each half is noted once and skipped when the close is run again, so a failure (a remote down) leaves the request
`published` with an `erasure_failed` note, and processing it again completes the close.

Versions and ids: ids index the prepared train split of the version a request was submitted against (the
ledger's `dataset_sha256`); requests submitted after an erasure index the new version. Removing rows re-splits
the rest (`prepare` splits seeded and stratified), so a request still open on the old version is carried over:
its records, located as rows of the raw training data while the old version is still there, are shifted past
the erased rows (rows keep their order), kept in `Artifacts.deletion(id)/rows.txt`, and a `carried_over` note
names the new version and those rows' sha256. Some of them may now be validation or test records: they are
erased all the same when it closes, and unlearned where they are training records. No request is answered from
a θ0 that saw erased records (`check_original`): `dvc repro` first.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from hyperforget.base import records
from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import DataError, HyperForgetError, IntegrityError
from hyperforget.base.io import sha256_file
from hyperforget.config.params import Params
from hyperforget.data import datasets
from hyperforget.erasure.data_versions import collect, raw_version, shift, train_rows, write_without
from hyperforget.erasure.ledger import Ledger
from hyperforget.erasure.ledger_records import Note, RequestRecord
from hyperforget.pipeline.stages.common import data_config

ERASED, CARRIED, COLLECTED, FAILED = "data_erased", "carried_over", "data_gc", "erasure_failed"
ROWS, FORGET = "rows.txt", "forget.txt"  # working files beside the request's ids.txt, removed when it closes


# ---------- requests and their versions ----------


def applies(art: Artifacts, rec: RequestRecord) -> bool:
    """A record request in a DVC project (class requests keep their records: the class stays in the label space,
    and its validation and test records measure the forgetting)."""
    return rec.scope_kind == "samples" and (art.root / ".dvc").is_dir()


def _last(led: Ledger, request_id: str, kind: str) -> Note | None:
    found = led.read_notes(request_id, kind)
    return found[-1] if found else None


def version_of(led: Ledger, rec: RequestRecord) -> str | None:
    """The prepared dataset (sha256) the request's records are located in now: the one it was submitted against,
    or the one its last `carried_over` note names."""
    carried = _last(led, rec.request_id, CARRIED)
    return carried.detail["to_dataset"] if carried else rec.dataset_sha256


def versions_of(led: Ledger, rec: RequestRecord) -> list[str]:
    """Every version the request's records were in while it was open (models trained on any of them hold them)."""
    out = [rec.dataset_sha256, *(n.detail["to_dataset"] for n in led.read_notes(rec.request_id, CARRIED))]
    return [v for i, v in enumerate(out) if v and v not in out[:i]]


def lineage(led: Ledger, dataset: str) -> set[str]:
    """`dataset` and every version an erasure turned into it, directly or through others."""
    edges = [(n.detail.get("dataset_before"), n.detail.get("dataset_after")) for n in led.read_notes(kind=ERASED)]
    found, grew = {dataset}, True
    while grew:
        new = {before for before, after in edges if after in found and before not in found}
        found, grew = found | new, bool(new)
    return found


def carried_rows(art: Artifacts, led: Ledger, rec: RequestRecord) -> list[int] | None:
    """The rows of a carried-over record request (None when it was not carried), checked against its note."""
    note = _last(led, rec.request_id, CARRIED)
    if note is None or rec.scope_kind != "samples":
        return None
    if not note.detail.get("n_rows"):
        return []
    path = art.deletion(rec.request_id) / ROWS
    got = records.read_ids(path).indices if path.exists() else ()
    if records.ids_sha256(got) != note.detail["rows_sha256"]:
        raise IntegrityError(f"{path} does not hold the rows request {rec.request_id} was carried over with "
                             f"(ledger rows sha256 {note.detail['rows_sha256'][:12]}…); it was changed or lost")
    return list(got)


def forget_file(params: Params, art: Artifacts, led: Ledger, rec: RequestRecord) -> Path:
    """A carried-over request's records that are train records of the current version, as a record-ids file."""
    data = datasets.load_dataset(art.prepare)
    at = {int(r): i for i, r in enumerate(train_rows(data_config(params, art), data))}
    indices = sorted(at[r] for r in carried_rows(art, led, rec) or [] if r in at)
    if not indices:
        raise DataError(f"no record of request {rec.request_id} is a training record of the current data (erased "
                        "with another request, or re-split into validation/test): no model trained on this version "
                        "holds them. Retire the versions in its scope: hyperforget request retire NAME VERSION")
    records.write_ids(art.deletion(rec.request_id) / FORGET, indices)
    return art.deletion(rec.request_id) / FORGET


def check_original(led: Ledger, art: Artifacts) -> None:
    """DataError when θ0 is one that was in the workspace at an erasure: it saw the erased records and the old
    split, so nothing may be answered from it (nor measured against the new split)."""
    if not art.model.exists():
        return
    model = sha256_file(art.model)
    for n in led.read_notes(kind=ERASED):
        if n.detail.get("original_sha256") == model:
            raise DataError(f"θ0 ({art.model}) was trained before request {n.request_id}'s records were erased from "
                            "the data: it saw them, and the old split. Run `dvc repro` (θ0, the zoo and the "
                            "hypernetworks on the erased data), then process the request again")


# ---------- the step ----------


def erase(params: Params, art: Artifacts, led: Ledger, rec: RequestRecord,
          indices_of: Callable[[RequestRecord, datasets.Dataset], list[int]]) -> dict:
    """Erase the request's records from the data (noted once) and collect every other version (noted once); see
    the module docstring. `indices_of(request, data)`: a request's train indices from its ids file. Returns
    the certificate's `data` section. One erasure at a time per project (a lock file): two at once would both
    rewrite the version they found."""
    with _locked(art.base / "deletion" / ".erasure.lock"):
        if _last(led, rec.request_id, ERASED) is None:
            _new_version(params, art, led, rec, indices_of)
        if _last(led, rec.request_id, COLLECTED) is None:
            led.note(rec.request_id, COLLECTED, collect(art, Path(data_config(params, art).raw_dir)))
    return certificate_fields(led, rec)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # waits for an erasure in another process to finish
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _new_version(params: Params, art: Artifacts, led: Ledger, rec: RequestRecord,
                 indices_of: Callable[[RequestRecord, datasets.Dataset], list[int]]) -> None:
    cfg = data_config(params, art)
    folder = Path(cfg.raw_dir) / cfg.name
    before = sha256_file(art.dataset)
    if version_of(led, rec) != before:
        raise IntegrityError(f"the prepared dataset ({before[:12]}…) is not the version request {rec.request_id}'s "
                             f"records are located in ({str(version_of(led, rec))[:12]}…); restore that version "
                             "(`dvc checkout`) and close the request again")
    data = datasets.load_dataset(art.prepare)
    rows_of = train_rows(cfg, data)

    def rows(r: RequestRecord) -> list[int] | None:
        carried = carried_rows(art, led, r)
        if carried is not None or r.scope_kind == "classes":
            return carried
        return rows_of[indices_of(r, data)].tolist()

    mine = rows(rec) or []
    others = [(r, rows(r)) for r in led.list() if r.request_id != rec.request_id and r.state != "closed"
              and version_of(led, r) == before]
    original = sha256_file(art.model) if art.model.exists() else None
    raw_before = raw_version(folder)
    write_without(cfg.name, folder, mine)
    download = folder / ".download"  # readers' download cache: the original files, records included
    had_download = download.is_dir()
    if had_download:
        shutil.rmtree(download)
    datasets.save_dataset(datasets.prepare(cfg), art.prepare)
    after = sha256_file(art.dataset)
    for r, theirs in others:
        detail = {"from_dataset": before, "to_dataset": after, "by_request": rec.request_id}
        if theirs is not None:
            moved = shift(theirs, mine)
            path = art.deletion(r.request_id) / ROWS
            if moved:
                records.write_ids(path, moved)
            elif path.exists():
                path.unlink()
            detail |= {"rows_sha256": records.ids_sha256(moved), "n_rows": len(moved),
                       "already_erased": len(set(theirs) & set(mine))}
        led.note(r.request_id, CARRIED, detail)
    led.note(rec.request_id, ERASED, {
        "data": cfg.name, "raw_dir": str(folder.relative_to(art.root)) if folder.is_relative_to(art.root) else None,
        "raw_before": raw_before, "raw_after": raw_version(folder), "dataset_before": before, "dataset_after": after,
        "rows_removed": len(mine), "rows_sha256": records.ids_sha256(mine), "original_sha256": original,
        "download_cache_removed": had_download,
        "carried_over": [r.request_id for r, _ in others]})


def note_failure(led: Ledger, request_id: str, error: BaseException) -> None:
    """Note why closing failed; the request stays `published` (its data may be erased already, so it is never
    answered again) and processing it again resumes the close."""
    reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    with contextlib.suppress(HyperForgetError):  # the ledger itself is unreachable: the error is the one to report
        led.note(request_id, FAILED, {"reason": reason[:4000]})


def drop_working_files(art: Artifacts, request_id: str, ids_file: str) -> None:
    """A closed request's working copies of its ids: its certificate holds the one kept copy."""
    folder = art.deletion(request_id)
    for name in (ids_file, ROWS, FORGET):
        (folder / name).unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def certificate_fields(led: Ledger, rec: RequestRecord) -> dict:
    """The certificate's `data` section: the versions before and after, and what was collected where."""
    erased, collected = _last(led, rec.request_id, ERASED), _last(led, rec.request_id, COLLECTED)
    carried = [{k: n.detail.get(k) for k in ("from_dataset", "to_dataset", "by_request")}
               for n in led.read_notes(rec.request_id, CARRIED)]
    if erased is None:
        why = ("a class request: a class's records stay in the data (its validation and test records measure the "
               "forgetting)") if rec.scope_kind == "classes" else "no DVC project at the root: no data version to erase"
        return {"erased": False, "reason": why, "carried_over": carried}
    d = erased.detail
    return {"erased": True, "data": d["data"], "rows_removed": d["rows_removed"], "rows_sha256": d["rows_sha256"],
            "before": {"raw_sha256": d["raw_before"]["sha256"], "dataset_sha256": d["dataset_before"]},
            "after": {"raw_sha256": d["raw_after"]["sha256"], "raw_files": d["raw_after"]["files"],
                      "dataset_sha256": d["dataset_after"]},
            "carried_over": carried, "collected": collected.detail if collected else None}
