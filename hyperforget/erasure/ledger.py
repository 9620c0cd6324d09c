"""The deletion-request ledger: every request and every step it took, in SQL, append-only.

Why a ledger: a deletion request is an obligation with a deadline. Long after the runs that served it are
gone, someone must answer "what was asked, when, what happened to it, and what is overdue?", and that answer
must not be editable after the fact. So the ledger only ever inserts: the current state of a request is its
latest transition, and triggers refuse UPDATE and DELETE in SQLite and PostgreSQL, not just this API.

Why hashes instead of ids: a request stores the sha256 of its sorted ids (and their count), which names the
record set without keeping a second list of who asked to be forgotten.

Why SQLAlchemy Core: callers get frozen dataclasses, never session-bound ORM objects.
"""

from __future__ import annotations

import hashlib
import json
import operator
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from hyperforget.base.errors import ConfigError, StorageError

PIPELINE = ("received", "scoped", "unlearned", "verified", "published", "closed")
STATES = (*PIPELINE, "failed")
# The one table of legal moves. A retry from `failed` resumes at the step after the last good state or earlier.
ALLOWED: dict[str, tuple[str, ...]] = {
    "received": ("scoped", "failed"),
    "scoped": ("unlearned", "failed"),
    "unlearned": ("verified", "failed"),
    "verified": ("published", "failed"),
    "published": ("closed", "failed"),
    "closed": (),
    "failed": ("received", "scoped", "unlearned"),
}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_KIND = re.compile(r"^[a-z0-9_]{1,32}$")

metadata = sa.MetaData()
requests = sa.Table(
    "requests", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("requester", sa.Text, nullable=False),
    sa.Column("scope_kind", sa.String(16), nullable=False),
    sa.Column("classes", sa.Text),  # canonical JSON list for class requests, NULL for sample requests
    sa.Column("ids_sha256", sa.String(64), nullable=False),
    sa.Column("n_records", sa.Integer),  # NULL for class requests: the count is known once scoped
    sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("dataset_sha256", sa.String(64)),
    sa.CheckConstraint("scope_kind IN ('classes', 'samples')", name="scope_kind_known"),
)
transitions = sa.Table(
    "transitions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), sa.ForeignKey("requests.id"), nullable=False, index=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),  # canonical JSON object; `reason` for failures
    sa.CheckConstraint("state IN (" + ", ".join(f"'{s}'" for s in STATES) + ")", name="state_known"),
)

# Facts about a request outside its state machine (a model version retired from its scope, a true-up that
# covered it), or about no one request (request_id NULL: a true-up run). Append-only like the rest.
notes = sa.Table(
    "notes", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), sa.ForeignKey("requests.id"), index=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),  # canonical JSON object
)

_PG_GUARD = ("CREATE OR REPLACE FUNCTION hyperforget_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
             "BEGIN RAISE EXCEPTION USING MESSAGE = 'the ledger is append-only: ' || TG_OP || ' on ' "
             "|| TG_TABLE_NAME || ' refused'; END $$")


def _append_only(t: sa.Table) -> None:
    """Hook triggers that refuse UPDATE and DELETE (and TRUNCATE) into `t`'s creation; nothing runs until then."""
    for op in ("UPDATE", "DELETE"):
        sa.event.listen(t, "after_create", sa.DDL(
            f"CREATE TRIGGER {t.name}_no_{op.lower()} BEFORE {op} ON {t.name} BEGIN "
            f"SELECT RAISE(ABORT, 'the ledger is append-only: {op} on {t.name} refused'); END"
        ).execute_if(dialect="sqlite"))
    sa.event.listen(t, "after_create", sa.DDL(_PG_GUARD).execute_if(dialect="postgresql"))
    for op, each in (("UPDATE OR DELETE", "ROW"), ("TRUNCATE", "STATEMENT")):
        sa.event.listen(t, "after_create", sa.DDL(
            f"CREATE TRIGGER {t.name}_append_only_{each.lower()} BEFORE {op} ON {t.name} "
            f"FOR EACH {each} EXECUTE FUNCTION hyperforget_append_only()"
        ).execute_if(dialect="postgresql"))


_append_only(requests)
_append_only(transitions)
_append_only(notes)


def utc_now() -> datetime:
    return datetime.now(UTC)


def sqlite_url(path: str | Path) -> str:
    """The default ledger: an embedded SQLite file."""
    return f"sqlite:///{Path(path)}"


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
    return hashlib.sha256(json.dumps(sorted(set(ids)), separators=(",", ":")).encode()).hexdigest()


class Ledger:
    """Deletion requests in SQLite or PostgreSQL. Tables (and their append-only triggers) appear on first use."""

    def __init__(self, url: str, clock: Callable[[], datetime] = utc_now) -> None:
        try:
            self._url = sa.engine.make_url(url)
        except sa_exc.ArgumentError as e:
            raise ConfigError(f"ledger URL {url!r} is not a database URL ({e}); use sqlite:///path/ledger.db "
                              "or postgresql+psycopg://user:password@host:5432/dbname") from e
        if self._url.drivername == "postgresql":  # SQLAlchemy's default driver would be psycopg2
            self._url = self._url.set(drivername="postgresql+psycopg")
        self.url = self._url.render_as_string(hide_password=True)
        self._clock = clock
        self._engine: sa.Engine | None = None

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def submit(self, classes: list[int] | None = None, record_ids: list[int] | None = None,
               requester: str = "unknown", request_id: str | None = None, deadline_days: int = 30,
               dataset_sha256: str | None = None) -> RequestRecord:
        """Record a request (state `received`). The same id with the same scope returns the existing record."""
        kind, ids = _scope(classes, record_ids)
        request_id = _check_id(request_id if request_id is not None else uuid.uuid4().hex)
        if isinstance(deadline_days, bool) or not isinstance(deadline_days, int) or deadline_days < 1:
            raise ConfigError(f"deadline_days must be a whole number of days ≥ 1, got {deadline_days!r}")
        now = self._now()
        row = dict(id=request_id, submitted_at=now, requester=str(requester) or "unknown", scope_kind=kind,
                   classes=_dump(ids) if kind == "classes" else None, ids_sha256=scope_sha256(ids),
                   n_records=len(ids) if kind == "samples" else None,
                   due_at=now + timedelta(days=deadline_days), dataset_sha256=dataset_sha256)
        try:
            with self._tx() as conn:
                if (existing := self._one(conn, request_id, required=False)) is None:
                    conn.execute(requests.insert().values(**row))
                    conn.execute(transitions.insert().values(request_id=request_id, state="received", at=now,
                                                             detail="{}"))
                    return self._one(conn, request_id)
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
            return self._one(conn, request_id)

    def list(self, overdue: bool = False) -> list[RequestRecord]:
        """All requests, oldest first; `overdue`: only those not closed whose due date has passed."""
        query = _current().order_by(requests.c.submitted_at, requests.c.id)
        if overdue:
            query = query.where(requests.c.due_at < self._now(), transitions.c.state != "closed")
        with self._tx() as conn:
            return [_record(r) for r in conn.execute(query)]

    def transition(self, request_id: str, state: str, detail: dict | None = None) -> RequestRecord:
        """Append a move to `state`; moving to the current state is a no-op. Illegal moves raise ConfigError."""
        if state not in ALLOWED:
            raise ConfigError(f"unknown request state {state!r}; states are: {', '.join(STATES)}")
        if state == "failed" and not (isinstance(detail, dict) and str(detail.get("reason") or "").strip()):
            raise ConfigError(f"moving request {request_id!r} to failed needs a reason: use fail(request_id, reason)")
        if detail is not None and not isinstance(detail, dict):
            raise ConfigError(f"detail must be a dict, got {type(detail).__name__}")
        payload = _dump(detail or {}, what=f"detail of the move to {state}")
        with self._tx() as conn:
            conn.execute(sa.select(requests.c.id).where(requests.c.id == request_id).with_for_update())
            current = self._one(conn, request_id)
            if current.state == state:
                return current
            allowed = self._allowed(conn, current)
            if state not in allowed:
                raise ConfigError(f"request {request_id!r} is {current.state}; it cannot move to {state}. "
                                  f"Allowed from {current.state}: {', '.join(allowed) or 'nothing (it is final)'}")
            conn.execute(transitions.insert().values(request_id=request_id, state=state, at=self._now(),
                                                     detail=payload))
            return self._one(conn, request_id)

    def fail(self, request_id: str, reason: str) -> RequestRecord:
        return self.transition(request_id, "failed", {"reason": reason})

    def history(self, request_id: str) -> list[Transition]:
        with self._tx() as conn:
            self._one(conn, request_id)
            rows = conn.execute(sa.select(transitions).where(transitions.c.request_id == request_id)
                                .order_by(transitions.c.id))
            return [Transition(r.request_id, r.state, _utc(r.at), json.loads(r.detail)) for r in rows]

    def note(self, request_id: str | None, kind: str, detail: dict | None = None) -> Note:
        """Append a fact about `request_id` (or, with None, about no one request) that is not a state move:
        e.g. `retired` (a model version taken out of its scope) or `trued_up`. Never changes a request's state."""
        if not isinstance(kind, str) or not _KIND.match(kind):
            raise ConfigError(f"note kind {kind!r} must be 1–32 lowercase letters, digits or '_'")
        if detail is not None and not isinstance(detail, dict):
            raise ConfigError(f"detail must be a dict, got {type(detail).__name__}")
        payload = _dump(detail or {}, what=f"detail of the {kind} note")
        with self._tx() as conn:
            if request_id is not None:
                self._one(conn, request_id)
            at = self._now()
            conn.execute(notes.insert().values(request_id=request_id, kind=kind, at=at, detail=payload))
        return Note(request_id, kind, at, json.loads(payload))

    def read_notes(self, request_id: str | None = None, kind: str | None = None) -> list[Note]:
        """Notes in append order, of `request_id` and/or of `kind` when given (all notes when neither is)."""
        query = sa.select(notes).order_by(notes.c.id)
        if request_id is not None:
            query = query.where(notes.c.request_id == request_id)
        if kind is not None:
            query = query.where(notes.c.kind == kind)
        with self._tx() as conn:
            return [Note(r.request_id, r.kind, _utc(r.at), json.loads(r.detail)) for r in conn.execute(query)]

    def now(self) -> datetime:
        """The ledger's clock (UTC): what its timestamps are taken from."""
        return self._now()

    def _now(self) -> datetime:
        return _utc(self._clock())

    def _allowed(self, conn: sa.Connection, current: RequestRecord) -> tuple[str, ...]:
        allowed = ALLOWED[current.state]
        if current.state != "failed":
            return allowed
        last_good = conn.execute(sa.select(transitions.c.state).where(
            transitions.c.request_id == current.request_id, transitions.c.state != "failed",
        ).order_by(transitions.c.id.desc()).limit(1)).scalar_one()
        resume = PIPELINE.index(last_good) + 1  # never skip the step that had not yet succeeded
        return tuple(s for s in allowed if PIPELINE.index(s) <= resume)

    def _one(self, conn: sa.Connection, request_id: str, required: bool = True) -> RequestRecord | None:
        row = conn.execute(_current().where(requests.c.id == request_id)).one_or_none()
        if row is None and required:
            raise ConfigError(f"no deletion request {request_id!r} in the ledger {self.url}; "
                              "check the id (Ledger.list() shows the known requests)")
        return None if row is None else _record(row)

    @contextmanager
    def _tx(self) -> Iterator[sa.Connection]:
        try:
            with self._ready().begin() as conn:
                yield conn
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as e:
            raise self._unreachable(e) from e

    def _ready(self) -> sa.Engine:
        if self._engine is not None:
            return self._engine
        sqlite = self._url.get_backend_name() == "sqlite"
        if sqlite and self._url.database not in (None, "", ":memory:"):
            Path(self._url.database).parent.mkdir(parents=True, exist_ok=True)
        try:
            # sqlite: wait up to 30 s for another writer (concurrent flow runs share one ledger file)
            engine = sa.create_engine(self._url, connect_args={"timeout": 30} if sqlite else {"connect_timeout": 10})
        except (sa_exc.NoSuchModuleError, ImportError) as e:
            raise ConfigError(f"no database driver for the ledger URL {self.url} ({e}); install it "
                              "(pip install 'psycopg[binary]' for postgresql+psycopg://)") from e
        if sqlite:  # SQLite ignores foreign keys unless asked, per connection
            sa.event.listen(engine, "connect", lambda dbapi_conn, _: dbapi_conn.execute("PRAGMA foreign_keys=ON"))
        try:
            _create_tables(engine)
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as e:
            engine.dispose()
            raise self._unreachable(e) from e
        self._engine = engine
        return engine

    def _unreachable(self, e: sa_exc.DBAPIError) -> StorageError:
        fix = ("check that the folder exists and is writable" if self._url.get_backend_name() == "sqlite" else
               "start the database server or fix host, port, user, password and database name in the URL, "
               "or use a local file instead: sqlite:///path/to/ledger.db")
        return StorageError(f"cannot use the ledger database {self.url}: {' '.join(str(e.orig or e).split())}; {fix}")


def _create_tables(engine: sa.Engine, attempts: int = 3) -> None:
    """Create what is missing; a process that lost the race to create a table (several flow runs opening a new
    ledger at once) sees "already exists" and simply checks again."""
    for i in range(attempts):
        try:
            metadata.create_all(engine)
            return
        except sa_exc.DBAPIError as e:
            if i == attempts - 1 or not any(s in str(e).lower() for s in ("already exists", "duplicate")):
                raise


def _current() -> sa.Select:
    """Requests joined with their latest transition (highest id: append order, whatever the clock said)."""
    last = (sa.select(transitions.c.request_id, sa.func.max(transitions.c.id).label("last_id"))
            .group_by(transitions.c.request_id).subquery())
    return (sa.select(requests, transitions.c.state, transitions.c.at.label("state_at"))
            .join(last, last.c.request_id == requests.c.id).join(transitions, transitions.c.id == last.c.last_id))


def _record(r: sa.Row) -> RequestRecord:
    return RequestRecord(
        request_id=r.id, submitted_at=_utc(r.submitted_at), requester=r.requester, scope_kind=r.scope_kind,
        classes=None if r.classes is None else tuple(json.loads(r.classes)), ids_sha256=r.ids_sha256,
        n_records=r.n_records, due_at=_utc(r.due_at), dataset_sha256=r.dataset_sha256, state=r.state,
        state_at=_utc(r.state_at))


def _scope(classes: list[int] | None, record_ids: list[int] | None) -> tuple[str, list[int]]:
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


def _check_id(request_id: str) -> str:
    if not isinstance(request_id, str) or not _ID.match(request_id):
        raise ConfigError(f"request id {request_id!r} must be 1–64 characters of letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit")
    return request_id


def _dump(obj: Any, what: str = "value") -> str:
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{what} must be plain JSON (str, finite numbers, lists, dicts): {e}") from e


def _utc(t: datetime) -> datetime:
    """Every timestamp in UTC; SQLite hands back naive datetimes, which were written in UTC."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
