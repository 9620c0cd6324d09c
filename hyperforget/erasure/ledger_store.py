"""The ledger's storage: its SQL tables and append-only triggers, engines and transactions, and rows as the chain
sees them (`hyperforget.erasure.chain`). `hyperforget.erasure.ledger` is the API over it.

Why one writer at a time: every append reads the end of a history and extends it, so two writers must not both
extend the same end; SQLite takes its write lock at BEGIN IMMEDIATE, PostgreSQL an advisory lock (any role may
take one: the application's role needs no UPDATE privilege, which SELECT ... FOR UPDATE would).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from hyperforget.base.errors import ConfigError, StorageError
from hyperforget.erasure.chain import STATES, Row

_WRITE = "hyperforget_ledger_write"  # execution option: this transaction appends (SQLite: BEGIN IMMEDIATE)
_PG_LOCK = int.from_bytes(hashlib.sha256(b"hyperforget-ledger").digest()[:8], "big") >> 1


def _chain_columns(unique_prev: bool) -> list[sa.Column]:
    """prev_hash (the row before it in its history), row_hash and the Ed25519 signature of row_hash."""
    return [sa.Column("prev_hash", sa.String(64), nullable=False, unique=unique_prev),
            sa.Column("row_hash", sa.String(64), nullable=False, unique=True),
            sa.Column("signature", sa.String(128), nullable=False)]


metadata = sa.MetaData()
# The ledger's first row: its format, a random id and the public key every row is signed with (pinned by readers
# that hold the project's key); every history's chain starts at its hash.
genesis = sa.Table(
    "genesis", metadata,
    sa.Column("singleton", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("ledger_id", sa.String(32), nullable=False),
    sa.Column("format", sa.String(32), nullable=False),
    sa.Column("public_key", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("row_hash", sa.String(64), nullable=False),
    sa.Column("signature", sa.String(128), nullable=False),
    sa.CheckConstraint("singleton = 1", name="one_genesis"),
)
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
    *_chain_columns(unique_prev=False),  # every request row follows the genesis
    sa.CheckConstraint("scope_kind IN ('classes', 'samples')", name="scope_kind_known"),
)
transitions = sa.Table(
    "transitions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), sa.ForeignKey("requests.id"), nullable=False, index=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),  # canonical JSON object; `reason` for failures
    *_chain_columns(unique_prev=True),  # a history never forks
    sa.CheckConstraint("state IN (" + ", ".join(f"'{s}'" for s in STATES) + ")", name="state_known"),
)

# Facts about a request outside its state machine (a model version retired from its scope, a true-up that
# covered it), or about no one request (request_id NULL: a true-up run). Append-only and chained like the rest.
notes = sa.Table(
    "notes", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), sa.ForeignKey("requests.id"), index=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),  # canonical JSON object
    *_chain_columns(unique_prev=True),
)
# what each row's hash covers (every column but the surrogate id and the chain columns)
HASHED = {"requests": ("id", "submitted_at", "requester", "scope_kind", "classes", "ids_sha256", "n_records",
                        "due_at", "dataset_sha256"),
           "transitions": ("request_id", "state", "at", "detail"), "notes": ("request_id", "kind", "at", "detail")}

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


for _t in metadata.sorted_tables:
    _append_only(_t)


def make_url(url: str) -> sa.URL:
    try:
        parsed = sa.engine.make_url(url)
    except sa_exc.ArgumentError as e:
        raise ConfigError(f"ledger URL {url!r} is not a database URL ({e}); use sqlite:///path/ledger.db "
                          "or postgresql+psycopg://user:password@host:5432/dbname") from e
    if parsed.drivername == "postgresql":  # SQLAlchemy's default driver would be psycopg2
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def open_engine(url: sa.URL) -> sa.Engine:
    """An engine for the ledger at `url`, its tables created if missing; ConfigError for a ledger of the old
    schema, StorageError when the database cannot be reached."""
    sqlite = url.get_backend_name() == "sqlite"
    if sqlite and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    try:
        # sqlite: wait up to 30 s for another writer (concurrent flow runs share one ledger file)
        engine = sa.create_engine(url, connect_args={"timeout": 30} if sqlite else {"connect_timeout": 10})
    except (sa_exc.NoSuchModuleError, ImportError) as e:
        raise ConfigError(f"no database driver for the ledger URL {shown(url)} ({e}); install it "
                          "(pip install 'psycopg[binary]' for postgresql+psycopg://)") from e
    if sqlite:
        sa.event.listen(engine, "connect", _sqlite_connect)
        sa.event.listen(engine, "begin", _sqlite_begin)
    try:
        _refuse_old_schema(engine, shown(url))
        _create_tables(engine)
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as e:
        engine.dispose()
        raise unreachable(url, e) from e
    except ConfigError:
        engine.dispose()
        raise
    return engine


@contextmanager
def transaction(engine: sa.Engine, write: bool = False) -> Iterator[sa.Connection]:
    """A transaction; `write`: one writer at a time, so every append sees the history it extends."""
    try:
        with engine.connect() as conn:
            if write:
                conn.execution_options(**{_WRITE: True})
            with conn.begin():
                if write and engine.dialect.name == "postgresql":
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK)))
                yield conn
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as e:
        raise unreachable(engine.url, e) from e


def shown(url: sa.URL) -> str:
    return url.render_as_string(hide_password=True)


def unreachable(url: sa.URL, e: sa_exc.DBAPIError) -> StorageError:
    fix = ("check that the folder exists and is writable" if url.get_backend_name() == "sqlite" else
           "start the database server or fix host, port, user, password and database name in the URL, "
           "or use a local file instead: sqlite:///path/to/ledger.db")
    return StorageError(f"cannot use the ledger database {shown(url)}: {' '.join(str(e.orig or e).split())}; {fix}")


def create_tables(url: str) -> None:
    """Create the ledger's tables and triggers at `url`: run it as the role that is to own them (on PostgreSQL the
    application then logs in as one that may only INSERT and SELECT; infra/local/ledger_roles.py)."""
    open_engine(make_url(url)).dispose()


def _sqlite_connect(dbapi_conn: Any, _: Any) -> None:
    dbapi_conn.isolation_level = None  # the driver's own BEGIN is deferred; _sqlite_begin emits ours
    dbapi_conn.execute("PRAGMA foreign_keys=ON")  # SQLite ignores foreign keys unless asked, per connection


def _sqlite_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")


def _refuse_old_schema(engine: sa.Engine, url: str) -> None:
    inspector = sa.inspect(engine)
    if inspector.has_table("transitions") and "row_hash" not in {c["name"] for c in
                                                                 inspector.get_columns("transitions")}:
        raise ConfigError(f"the ledger {url} was created by an older HyperForget, without signed hash chains, so its "
                          "history cannot be verified; keep it as a record (e.g. rename ledger.db to ledger-v1.db), "
                          "point requests.ledger_url or HYPERFORGET_LEDGER_URL at a new database and submit the open "
                          "requests again")


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


def all_rows(conn: sa.Connection) -> tuple[list[sa.Row], dict[str | None, list[sa.Row]],
                                            dict[str | None, list[sa.Row]]]:
    """Every request (oldest first) and every transition and note, by request id, in id order."""
    reqs = conn.execute(sa.select(requests).order_by(requests.c.submitted_at, requests.c.id)).all()
    by_request: list[dict[str | None, list[sa.Row]]] = []
    for t in (transitions, notes):
        grouped: dict[str | None, list[sa.Row]] = {}
        for r in conn.execute(sa.select(t).order_by(t.c.id)):
            grouped.setdefault(r.request_id, []).append(r)
        by_request.append(grouped)
    by_request[1].pop(None, None)  # the notes about no request form their own chain
    return reqs, by_request[0], by_request[1]


def content(table: sa.Table, values: Any) -> dict:
    """What a row's hash covers: its columns but the id and the chain's own, datetimes as ISO-8601 UTC."""
    m = values._mapping if isinstance(values, sa.Row) else values
    return {c: iso(m[c]) if isinstance(m[c], datetime) else m[c] for c in HASHED[table.name]}


def chain_row(table: sa.Table, r: sa.Row) -> Row:
    return Row(table.name, r.id, r.id if table is requests else r.request_id, r.prev_hash, r.row_hash, r.signature,
               content(table, r))


def iso(t: datetime) -> str:
    return utc(t).isoformat(timespec="microseconds")


def utc(t: datetime) -> datetime:
    """Every timestamp in UTC; SQLite hands back naive datetimes, which were written in UTC."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
