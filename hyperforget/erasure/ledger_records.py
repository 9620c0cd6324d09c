"""The ledger's records as callers see them, what a valid one holds, and how verified rows read back as them.

Why a module apart from the `Ledger` API (`hyperforget.erasure.ledger`): callers get frozen dataclasses
(`RequestRecord`, `Transition`, `Note`, `Audit`), never session-bound rows, and what turns rows into them is
pure: the chain (`hyperforget.erasure.chain`) checks them, the storage (`hyperforget.erasure.ledger_store`)
supplies them, and no key, engine or clock is involved. So is checking what a request may record (its id,
its scope, a detail that must be plain JSON).

Why hashes instead of ids: a request stores the sha256 of its sorted ids (and their count), which names the
record set without keeping a second list of who asked to be forgotten.
"""

from __future__ import annotations

import json
import operator
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from hyperforget.base.errors import ConfigError
from hyperforget.base.io import sha256_json
from hyperforget.erasure import chain as chain_mod
from hyperforget.erasure import ledger_store as store
from hyperforget.erasure.chain import Genesis
from hyperforget.erasure.ledger_store import genesis, notes, requests, transitions

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class RequestRecord:
    """A deletion request and its current state (the latest transition)."""

    request_id: str
    submitted_at: datetime
    requester: str
    scope_kind: str  # 'classes' | 'samples'
    classes: tuple[int, ...] | None
    ids_sha256: str
    n_records: int | None
    due_at: datetime
    dataset_sha256: str | None
    state: str
    state_at: datetime


@dataclass(frozen=True)
class Note:
    request_id: str | None
    kind: str
    at: datetime
    detail: dict[str, Any]


@dataclass(frozen=True)
class Transition:
    request_id: str
    state: str
    at: datetime
    detail: dict[str, Any]

    @property
    def reason(self) -> str | None:
        return self.detail.get("reason")


def scope_sha256(ids: list[int]) -> str:
    """sha256 of the sorted, de-duplicated ids as a canonical JSON list: it names the set, not its order."""
    return sha256_json(sorted(set(ids)), separators=(",", ":"))


@dataclass(frozen=True)
class Audit:
    """What `Ledger.audit` found: every problem (first bad row first; none: the ledger verifies) and a digest of
    every history's last row, to keep elsewhere: only such an anchor shows a deleted tail."""

    url: str
    public_key: str | None  # the key the rows are signed with (recorded in the genesis row)
    pinned: bool  # checked against a key the caller holds, not only the one the ledger records
    requests: int
    rows: int
    digest: str
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class History:
    """One request's verified history: the request, its transitions and notes in append order, its last hash."""

    record: RequestRecord
    transitions: list[Transition]
    notes: list[tuple[int, Note]]
    tail: str


def read_genesis(conn: sa.Connection) -> tuple[Genesis | None, list[str]]:
    row = conn.execute(sa.select(genesis)).one_or_none()
    if row is None:
        rows = any(conn.execute(sa.select(t.c.id).limit(1)).first() for t in (requests, transitions, notes))
        return None, ["genesis row: missing, yet the ledger holds rows (it was deleted)"] if rows else []
    g = Genesis(row.ledger_id, row.public_key, row.row_hash)
    problem = chain_mod.genesis_problem(g, row.format, store.iso(row.created_at), row.row_hash, row.signature)
    return g, [problem] if problem else []


def history(g: Genesis, req: sa.Row, ts: list[sa.Row], ns: list[sa.Row]) -> tuple[History | None, list[str]]:
    stored = {r.row_hash: r for r in [*ts, *ns]}
    rows = [store.chain_row(transitions, r) for r in ts] + [store.chain_row(notes, r) for r in ns]
    chain, problems = chain_mod.walk(g, store.chain_row(requests, req), rows)
    if problems:
        return None, problems
    moves = [_transition(stored[c.row_hash]) for c in chain if c.table == "transitions"]
    last = moves[-1]
    record = RequestRecord(
        request_id=req.id, submitted_at=store.utc(req.submitted_at), requester=req.requester,
        scope_kind=req.scope_kind, classes=None if req.classes is None else tuple(json.loads(req.classes)),
        ids_sha256=req.ids_sha256, n_records=req.n_records, due_at=store.utc(req.due_at),
        dataset_sha256=req.dataset_sha256, state=last.state, state_at=last.at)
    numbered = [(stored[c.row_hash].id, note(stored[c.row_hash])) for c in chain if c.table == "notes"]
    return History(record, moves, numbered, chain[-1].row_hash), []


def loose(conn: sa.Connection, g: Genesis) -> tuple[list[sa.Row], list[str]]:
    """The notes about no request, in chain order, and the problems with their chain."""
    rows = conn.execute(sa.select(notes).where(notes.c.request_id.is_(None)).order_by(notes.c.id)).all()
    stored = {r.row_hash: r for r in rows}
    chain, problems = chain_mod.walk(g, None, [store.chain_row(notes, r) for r in rows])
    return [stored[c.row_hash] for c in chain], problems


def _transition(r: sa.Row) -> Transition:
    return Transition(r.request_id, r.state, store.utc(r.at), json.loads(r.detail))


def note(r: sa.Row) -> Note:
    return Note(r.request_id, r.kind, store.utc(r.at), json.loads(r.detail))


def scope(classes: list[int] | None, record_ids: list[int] | None) -> tuple[str, list[int]]:
    if (classes is None) == (record_ids is None):
        raise ConfigError("a deletion request needs exactly one of classes=[...] or record_ids=[...]")
    kind, values = ("classes", classes) if classes is not None else ("samples", record_ids)
    try:
        ids = sorted({operator.index(v) for v in values})
        ok = bool(ids) and ids[0] >= 0 and not any(isinstance(v, bool) for v in values)
    except TypeError:
        ok = False
    if not ok:
        raise ConfigError(f"{kind} must be a non-empty list of non-negative integers, got {values!r}")
    return kind, ids


def check_id(request_id: str) -> str:
    if not isinstance(request_id, str) or not _ID.match(request_id):
        raise ConfigError(f"request id {request_id!r} must be 1–64 characters of letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit")
    return request_id


def dump(obj: Any, what: str = "value") -> str:
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{what} must be plain JSON (str, finite numbers, lists, dicts): {e}") from e
