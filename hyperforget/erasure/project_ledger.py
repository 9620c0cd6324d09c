"""The project's ledger of deletion requests: which database and key, opened (and closed) per call, and what
reading it answers (a request as plain data, the details of its steps, its record ids, the list, the audit).

Why a module: every step of a request (`hyperforget.erasure.deletion`, `hyperforget.erasure.closing`), the
true-up and the CLI must open the same ledger with the same key ($HYPERFORGET_LEDGER_URL, else
`requests.ledger_url`; the ledger key beside `requests.signing_key`) and read a request's record ids the same
way: from `Artifacts.deletion(id)/ids.txt` while it is open, from its certificate once it is closed, checked
against the sha256 the ledger holds whenever read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from hyperforget.base import records
from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import DataError, IntegrityError
from hyperforget.config.params import Params
from hyperforget.data.datasets import Dataset
from hyperforget.erasure import evidence
from hyperforget.erasure import ledger as ledger_mod
from hyperforget.erasure.evidence import plain
from hyperforget.erasure.ledger import Ledger
from hyperforget.erasure.ledger_records import Audit, RequestRecord

LEDGER_VAR = "HYPERFORGET_LEDGER_URL"
IDS_FILE = "ids.txt"
LEDGER_KEY_FILE = "ledger_key.pem"  # beside requests.signing_key, unless $HYPERFORGET_SIGNING_KEY is set


def now() -> datetime:
    """The ledger's clock (tests replace it)."""
    return ledger_mod.utc_now()


def ledger_url(params: Params, art: Artifacts) -> str:
    """HYPERFORGET_LEDGER_URL if set, else `requests.ledger_url`; a relative sqlite path is under the root."""
    url = os.environ.get(LEDGER_VAR) or params.requests.ledger_url
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and url != "sqlite:///:memory:":
        url = "sqlite:///" + str(art.resolve(url.removeprefix("sqlite:///")))
    return url


def ledger_key_path(params: Params, art: Artifacts) -> Path:
    """The file of the key that signs the ledger's rows (created 0600 on the first write); $HYPERFORGET_SIGNING_KEY,
    when set, is the key of both the ledger and the certificates."""
    return art.resolve(params.requests.signing_key).with_name(LEDGER_KEY_FILE)


def open_ledger(params: Params, art: Artifacts, clock: Callable[[], datetime] | None = None) -> Ledger:
    """The project's ledger, signed and read with the project's ledger key (every read verifies what it returns)."""
    return Ledger(ledger_url(params, art), key=ledger_key_path(params, art), clock=clock or (lambda: now()))


@contextmanager
def opened(params: Params, art: Artifacts, ledger: Ledger | None) -> Iterator[Ledger]:
    """The caller's ledger, or one opened (and closed) for this call."""
    if ledger is not None:
        yield ledger
        return
    own = open_ledger(params, art)
    try:
        yield own
    finally:
        own.close()


def record_indices(art: Artifacts, rec: RequestRecord, data: Dataset) -> list[int]:
    """The train indices a request deletes: its class members, or its ids file checked against the ledger (the
    working copy while it is open, the certificate's once it is closed)."""
    if rec.scope_kind == "classes":
        return (sum(data.y_train == c for c in rec.classes) > 0).nonzero().squeeze(1).tolist()
    path = art.deletion(rec.request_id) / IDS_FILE
    if not path.exists() and rec.state == "closed":
        path = art.certificate(rec.request_id) / evidence.IDS
    if not path.exists():
        raise DataError(f"request {rec.request_id} has no record ids at {path}; submit it again with the same id "
                        f"and file: hyperforget request submit --id {rec.request_id} --samples FILE")
    ids = records.read_ids(path)
    if ids.hashes or records.ids_sha256(ids.indices) != rec.ids_sha256:
        raise IntegrityError(f"{path} does not hold the record ids request {rec.request_id} was submitted with "
                             f"(ledger ids sha256 {rec.ids_sha256[:12]}…); it was changed: submit it again")
    return list(ids.indices)


def details(led: Ledger, request_id: str) -> dict[str, dict]:
    """The detail of each state's latest transition (a retried request's last attempt)."""
    return {t.state: t.detail for t in led.history(request_id)}


def show(params: Params, art: Artifacts, request_id: str, ledger: Ledger | None = None) -> dict:
    """The request, every transition and every note, as plain data."""
    with opened(params, art, ledger) as led:
        rec = led.get(request_id)
        return plain({"request": asdict(rec), "transitions": [asdict(t) for t in led.history(request_id)],
                      "notes": [asdict(n) for n in led.read_notes(request_id)]})


def audit(params: Params, art: Artifacts, public_key: str | None = None) -> Audit:
    """Verify the whole ledger against the project's ledger key, or against `public_key` (base64) when given."""
    led = Ledger(ledger_url(params, art), key=public_key if public_key else ledger_key_path(params, art))
    try:
        return led.audit()
    finally:
        led.close()


def list_requests(params: Params, art: Artifacts, overdue: bool = False,
                  ledger: Ledger | None = None) -> list[RequestRecord]:
    with opened(params, art, ledger) as led:
        return led.list(overdue=overdue)
