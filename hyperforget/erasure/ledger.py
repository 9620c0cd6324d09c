"""The deletion-request ledger: every request and every step it took, in SQL, append-only, signed and chained.

Why a ledger: a deletion request is an obligation with a deadline. Long after the runs that served it are
gone, someone must answer "what was asked, when, what happened to it, and what is overdue?", and that answer
must not be editable after the fact. So the ledger only ever inserts: the current state of a request is the
last transition of its history, and triggers refuse UPDATE and DELETE in SQLite and PostgreSQL, not just this API.

Why signed and chained (`hyperforget.erasure.chain`): triggers stop mistakes, not someone who can write the
database. Every row carries the hash of the row before it and an Ed25519 signature by the ledger key, and
every read checks the history it returns (hashes, signatures, links, legal moves) and refuses, in one line, one
that does not verify; `audit` checks the whole ledger. On PostgreSQL the application should log in as a role
that may only INSERT and SELECT (infra/local/ledger_roles.sql).

Why SQLAlchemy Core (`hyperforget.erasure.ledger_store`: tables, triggers, transactions): callers get frozen
dataclasses (`hyperforget.erasure.ledger_records`), never session-bound ORM objects.
"""

from __future__ import annotations

import json
import operator
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import exc as sa_exc

from hyperforget.base.errors import ConfigError, IntegrityError
from hyperforget.erasure import certificate
from hyperforget.erasure import chain as chain_mod
from hyperforget.erasure import ledger_records as records_mod
from hyperforget.erasure import ledger_store as store
from hyperforget.erasure.chain import ALLOWED, MISSING, STATES, Genesis, Keys
from hyperforget.erasure.chain import PIPELINE as PIPELINE  # re-exported: deletion walks it
from hyperforget.erasure.ledger_records import Audit, History, Note, RequestRecord, Transition, scope_sha256
from hyperforget.erasure.ledger_store import genesis, notes, requests, transitions

_KIND = re.compile(r"^[a-z0-9_]{1,32}$")


def utc_now() -> datetime:
    return datetime.now(UTC)


class Ledger:
    """Deletion requests in SQLite or PostgreSQL. Tables (and their append-only triggers) appear on first use.

    `key` decides who signs and whom readers trust:
    - a Path: the project's ledger key ($HYPERFORGET_SIGNING_KEY when set, else this PEM file, created 0600 on the
      first write); reads require it, and a missing key file is refused once the ledger holds rows;
    - an Ed25519 private key: signs, and reads require it;
    - an Ed25519 public key, or its base64: reads only (an auditor's copy), and they require it;
    - None: reads trust the key the ledger records (signer not pinned), and a new ledger is signed by a
      throwaway key held in memory (tests), which no other process can extend.
    """

    def __init__(self, url: str, key: Ed25519PrivateKey | Ed25519PublicKey | str | Path | None = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self._url = store.make_url(url)
        self.url = store.shown(self._url)
        self._clock = clock
        self._engine: sa.Engine | None = None
        self._keys = Keys(key)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def submit(self, classes: list[int] | None = None, record_ids: list[int] | None = None,
               requester: str = "unknown", request_id: str | None = None, deadline_days: int = 30,
               dataset_sha256: str | None = None) -> RequestRecord:
        """Record a request (state `received`). The same id with the same scope returns the existing record."""
        kind, ids = records_mod.scope(classes, record_ids)
        request_id = records_mod.check_id(request_id if request_id is not None else uuid.uuid4().hex)
        if isinstance(deadline_days, bool) or not isinstance(deadline_days, int) or deadline_days < 1:
            raise ConfigError(f"deadline_days must be a whole number of days ≥ 1, got {deadline_days!r}")
        now = self._now()
        row = dict(id=request_id, submitted_at=now, requester=str(requester) or "unknown", scope_kind=kind,
                   classes=records_mod.dump(ids) if kind == "classes" else None, ids_sha256=scope_sha256(ids),
                   n_records=len(ids) if kind == "samples" else None,
                   due_at=now + timedelta(days=deadline_days), dataset_sha256=dataset_sha256)
        try:
            with self._tx(write=True) as conn:
                g = self._genesis(conn, write=True, create=True)
                if (found := self._load(conn, g, request_id, required=False)) is None:
                    head = self._append(conn, g, requests, row, g.hash)
                    self._append(conn, g, transitions, dict(request_id=request_id, state="received", at=now,
                                                            detail="{}"), head)
                    return self._load(conn, g, request_id).record
                existing = found.record
        except sa_exc.IntegrityError:  # a concurrent submit of the same id inserted first
            existing = self.get(request_id)
        if (existing.scope_kind, existing.ids_sha256) != (kind, row["ids_sha256"]) or (
                dataset_sha256 and existing.dataset_sha256 and dataset_sha256 != existing.dataset_sha256):
            raise ConfigError(
                f"request {request_id!r} already exists in {self.url} with a different scope ({existing.scope_kind}, "
                f"ids sha256 {existing.ids_sha256[:12]}…, dataset {existing.dataset_sha256}); submit the new scope "
                "under a new request id")
        return existing

    def get(self, request_id: str) -> RequestRecord:
        with self._tx() as conn:
            return self._load(conn, self._genesis(conn), request_id).record

    def list(self, overdue: bool = False) -> list[RequestRecord]:
        """All requests, oldest first; `overdue`: only those not closed whose due date has passed."""
        with self._tx() as conn:
            recs = [h.record for h in self._verified_all(conn)[0]]
        if overdue:
            now = self._now()
            recs = [r for r in recs if r.due_at < now and r.state != "closed"]
        return recs

    def transition(self, request_id: str, state: str, detail: dict | None = None) -> RequestRecord:
        """Append a move to `state`; moving to the current state is a no-op. Illegal moves raise ConfigError."""
        if state not in ALLOWED:
            raise ConfigError(f"unknown request state {state!r}; states are: {', '.join(STATES)}")
        if state == "failed" and not (isinstance(detail, dict) and str(detail.get("reason") or "").strip()):
            raise ConfigError(f"moving request {request_id!r} to failed needs a reason: use fail(request_id, reason)")
        if detail is not None and not isinstance(detail, dict):
            raise ConfigError(f"detail must be a dict, got {type(detail).__name__}")
        payload = records_mod.dump(detail or {}, what=f"detail of the move to {state}")
        with self._tx(write=True) as conn:
            g = self._genesis(conn, write=True)
            h = self._load(conn, g, request_id)
            current = h.record
            if current.state == state:
                return current
            allowed = chain_mod.allowed_next([t.state for t in h.transitions])
            if state not in allowed:
                raise ConfigError(f"request {request_id!r} is {current.state}; it cannot move to {state}. "
                                  f"Allowed from {current.state}: {', '.join(allowed) or 'nothing (it is final)'}")
            self._append(conn, g, transitions, dict(request_id=request_id, state=state, at=self._now(),
                                                    detail=payload), h.tail)
            return self._load(conn, g, request_id).record

    def fail(self, request_id: str, reason: str) -> RequestRecord:
        return self.transition(request_id, "failed", {"reason": reason})

    def history(self, request_id: str) -> list[Transition]:
        with self._tx() as conn:
            return self._load(conn, self._genesis(conn), request_id).transitions

    def note(self, request_id: str | None, kind: str, detail: dict | None = None) -> Note:
        """Append a fact about `request_id` (or, with None, about no one request) that is not a state move:
        e.g. `retired` (a model version taken out of its scope) or `trued_up`. Never changes a request's state."""
        if not isinstance(kind, str) or not _KIND.match(kind):
            raise ConfigError(f"note kind {kind!r} must be 1–32 lowercase letters, digits or '_'")
        if detail is not None and not isinstance(detail, dict):
            raise ConfigError(f"detail must be a dict, got {type(detail).__name__}")
        payload = records_mod.dump(detail or {}, what=f"detail of the {kind} note")
        with self._tx(write=True) as conn:
            g = self._genesis(conn, write=True, create=request_id is None)
            if request_id is not None:
                prev = self._load(conn, g, request_id).tail
            else:
                loose, problems = records_mod.loose(conn, g)
                if problems:
                    raise IntegrityError(self._refusal(problems[0]))
                prev = loose[-1].row_hash if loose else g.hash
            at = self._now()
            self._append(conn, g, notes, dict(request_id=request_id, kind=kind, at=at, detail=payload), prev)
        return Note(request_id, kind, at, json.loads(payload))

    def read_notes(self, request_id: str | None = None, kind: str | None = None) -> list[Note]:
        """Notes in append order, of `request_id` and/or of `kind` when given (all notes when neither is)."""
        with self._tx() as conn:
            if request_id is not None:
                found = self._load(conn, self._genesis(conn), request_id, required=False)
                numbered = found.notes if found else []
            else:
                histories, loose = self._verified_all(conn)
                numbered = sorted([n for h in histories for n in h.notes] + loose, key=operator.itemgetter(0))
        return [n for _, n in numbered if kind is None or n.kind == kind]

    def audit(self) -> Audit:
        """Check the whole ledger, collecting every problem instead of refusing at the first: the genesis row and
        its key, every history (hashes, signatures, links, order, legal moves), the notes about no request and
        rows that name no request. `problems[0]` is the first bad row."""
        with self._tx() as conn:
            g, problems = records_mod.read_genesis(conn)
            problems += [wrong] if g and (wrong := self._key_problem(g)) else []
            reqs, ts, ns = store.all_rows(conn)
            histories, loose_rows = [], []
            if g is not None:
                for r in reqs:
                    h, found = records_mod.history(g, r, ts.pop(r.id, []), ns.pop(r.id, []))
                    problems += found
                    histories += [h] if h else []
                loose_rows, found = records_mod.loose(conn, g)
                problems += found
            problems += [f"{table} row {r.id} (request {rid!r}): names a request that is not in the ledger"
                         for table, left in (("transitions", ts), ("notes", ns)) for rid, rows in left.items()
                         for r in rows if rid is not None]
            n_rows = conn.execute(sa.select(sa.func.count()).select_from(genesis)).scalar_one() + sum(
                conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one() for t in (requests, transitions,
                                                                                             notes))
        heads = {h.record.request_id: h.tail for h in histories} | {"": loose_rows[-1].row_hash if loose_rows else ""}
        pin = self._keys.pinned()
        return Audit(self.url, g.public_key if g else None, pin not in (None, MISSING), len(reqs), n_rows,
                     chain_mod.digest(heads), problems)

    def now(self) -> datetime:
        """The ledger's clock (UTC): what its timestamps are taken from."""
        return self._now()

    def _now(self) -> datetime:
        return store.utc(self._clock())

    # ---------- the genesis row and its key ----------

    def _genesis(self, conn: sa.Connection, write: bool = False, create: bool = False) -> Genesis | None:
        """The verified genesis row, signed by the key this Ledger trusts (made with this Ledger's key when
        `create` and the ledger is new); None for a ledger with no rows."""
        g, problems = records_mod.read_genesis(conn)
        if problems:
            raise IntegrityError(self._refusal(problems[0]))
        if g is not None and (wrong := self._key_problem(g)):
            raise IntegrityError(f"the ledger {self.url} does not verify: {wrong}")
        if g is None and create:
            key, now = self._signer(), self._now()
            g, signature = chain_mod.new_genesis(key, uuid.uuid4().hex, store.iso(now))
            conn.execute(genesis.insert().values(singleton=1, ledger_id=g.ledger_id, format=chain_mod.FORMAT,
                                                 public_key=g.public_key, created_at=now, row_hash=g.hash,
                                                 signature=signature))
        elif g is not None and write and (ours := certificate.public_key_b64(self._signer())) != g.public_key:
            raise ConfigError(f"the ledger {self.url} is signed by key {certificate.fingerprint(g.public_key)}, and "
                              f"this Ledger holds another ({certificate.fingerprint(ours)}, a throwaway key): open it "
                              "with the ledger's key to write to it")
        return g

    def _key_problem(self, g: Genesis) -> str | None:
        """Why the key that signed the ledger is not the one this Ledger requires, or None."""
        pin = self._keys.pinned()
        return self._keys.wrong(g, pin) if pin is not None and pin != g.public_key else None

    # ---------- reading and checking ----------

    def _load(self, conn: sa.Connection, g: Genesis | None, request_id: str, required: bool = True
              ) -> History | None:
        """One request's history, verified (IntegrityError naming the first bad row otherwise)."""
        row = conn.execute(sa.select(requests).where(requests.c.id == request_id)).one_or_none()
        if row is None or g is None:
            if required:
                raise ConfigError(f"no deletion request {request_id!r} in the ledger {self.url}; "
                                  "check the id (`hyperforget request list` shows the known requests)")
            return None
        ts = conn.execute(sa.select(transitions).where(transitions.c.request_id == request_id)
                          .order_by(transitions.c.id)).all()
        ns = conn.execute(sa.select(notes).where(notes.c.request_id == request_id).order_by(notes.c.id)).all()
        h, problems = records_mod.history(g, row, ts, ns)
        if problems:
            raise IntegrityError(self._refusal(problems[0], request_id))
        return h

    def _verified_all(self, conn: sa.Connection) -> tuple[list[History], list[tuple[int, Note]]]:
        """Every history (oldest request first) and the notes about no request, all verified."""
        g = self._genesis(conn)
        if g is None:
            return [], []
        reqs, ts, ns = store.all_rows(conn)
        histories = []
        for r in reqs:
            h, problems = records_mod.history(g, r, ts.get(r.id, []), ns.get(r.id, []))
            if problems:
                raise IntegrityError(self._refusal(problems[0], r.id))
            histories.append(h)
        loose, problems = records_mod.loose(conn, g)
        if problems:
            raise IntegrityError(self._refusal(problems[0]))
        return histories, [(r.id, records_mod.note(r)) for r in loose]

    def _refusal(self, problem: str, request_id: str | None = None) -> str:
        about = f", so request {request_id!r} cannot be trusted" if request_id else ""
        return (f"the ledger {self.url} does not verify{about}: {problem}; `hyperforget request audit` lists every "
                "bad row: restore the ledger from a backup")

    # ---------- writing ----------

    def _append(self, conn: sa.Connection, g: Genesis, table: sa.Table, values: dict, prev: str) -> str:
        """Insert `values` into `table` after `prev`, hashed and signed; returns its row_hash."""
        sealed = g.seal(self._signer(), table.name, prev, store.content(table, values))
        conn.execute(table.insert().values(**values, **sealed))
        return sealed["row_hash"]

    @contextmanager
    def _tx(self, write: bool = False) -> Iterator[sa.Connection]:
        if self._engine is None:
            self._engine = store.open_engine(self._url)
        with store.transaction(self._engine, write) as conn:
            yield conn

    def _signer(self) -> Ed25519PrivateKey:
        return self._keys.signer(self.url)
