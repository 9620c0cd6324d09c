"""The deletion-request ledger on a real PostgreSQL (pgserver, one server per module, a fresh database per test) set
up as infra/local/ledger_roles.py sets it up: an owner role holds the tables and their triggers, the application
logs in as a role that may only INSERT and SELECT. What a role cannot do is refused by the server; what it can
(the app's INSERT, the owner's DROP TRIGGER and UPDATE) the signed hash chain exposes on the next read."""

from __future__ import annotations

import importlib.util
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import exc as sa_exc

from hyperforget.base.errors import ConfigError, IntegrityError
from hyperforget.erasure import chain
from hyperforget.erasure import ledger_store as store
from hyperforget.erasure.ledger import Ledger
from tests.recipes import concurrent_notes, raw_sql

pytestmark = pytest.mark.integration
T0 = datetime(2025, 3, 1, 9, 0, 0, 123456, tzinfo=UTC)  # microseconds: they must survive the round trip
ROLES = Path(__file__).resolve().parents[2] / "infra" / "local" / "ledger_roles.py"


def _ledger_roles():
    spec = importlib.util.spec_from_file_location("ledger_roles", ROLES)  # infra/ is not a package
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import pgserver  # a dev dependency: a missing server fails the tests, never skips them

    pg = pgserver.get_server(tmp_path_factory.mktemp("pg"))
    yield store.make_url(pg.get_uri())
    pg.cleanup()


@pytest.fixture
def urls(server) -> dict[str, str]:
    """A fresh database with the ledger's roles and tables: {"owner": url, "app": url, "admin": url}."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    admin_url = server.set(database=name).render_as_string(hide_password=False)
    return _ledger_roles().apply_roles(admin_url) | {"admin": admin_url}


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def ledger(urls, key):
    led = Ledger(urls["app"], key=key, clock=Clock())
    yield led
    led.close()




def failed_request(ledger: Ledger, request_id: str = "DPO-C7") -> None:
    ledger.submit(classes=[7], request_id=request_id, requester="dpo@example.com")
    for state in ("scoped", "unlearned"):
        ledger.transition(request_id, state)
    ledger.fail(request_id, "GateFailed: relearn")


def test_the_state_machine_and_timestamps_round_trip_as_the_app_role(ledger):
    clock = ledger._clock
    rec = ledger.submit(classes=[3], requester="dpo@example.com", request_id="req-1", dataset_sha256="d" * 64)
    assert (rec.state, rec.submitted_at, rec.due_at) == ("received", T0, T0 + timedelta(days=30))
    ledger.transition("req-1", "scoped")
    ledger.fail("req-1", "OOM while unlearning")
    with pytest.raises(ConfigError, match=r"is failed.*cannot move to verified.*received, scoped, unlearned$"):
        ledger.transition("req-1", "verified")
    for hours, state in enumerate(["unlearned", "verified", "published", "closed"], start=1):
        clock.now = T0 + timedelta(hours=hours)
        rec = ledger.transition("req-1", state, {"step": hours})
    assert (rec.state, rec.state_at) == ("closed", T0 + timedelta(hours=4))
    ledger.submit(record_ids=[5, 1], request_id="req-2", deadline_days=1)
    ledger.note("req-2", "retired", {"name": "m", "version": "1"})
    ledger.note(None, "trued_up", {"requests": ["req-1"]})
    clock.now = T0 + timedelta(days=2)
    assert [r.request_id for r in ledger.list(overdue=True)] == ["req-2"]
    assert [t.state for t in ledger.history("req-1")][-2:] == ["published", "closed"]
    assert [n.kind for n in ledger.read_notes()] == ["retired", "trued_up"]
    report = ledger.audit()
    assert (report.problems, report.requests, report.rows) == ([], 2, 13)


@pytest.mark.parametrize("sql", [
    "UPDATE requests SET requester = 'mallory'", "DELETE FROM transitions", "TRUNCATE notes",
    "DROP TRIGGER requests_append_only_row ON requests", "ALTER TABLE transitions DISABLE TRIGGER ALL",
    "DROP TABLE notes", "CREATE TABLE evil (x int)", "CREATE TABLE public.evil (x int)",
    "SET session_replication_role = replica", "SELECT 1 FROM requests FOR UPDATE"])
def test_the_app_role_can_only_insert_and_select(ledger, urls, sql):
    failed_request(ledger)
    with pytest.raises(sa_exc.DBAPIError, match=r"permission denied|must be owner"):
        raw_sql(urls["app"], sql)
    assert ledger.get("DPO-C7").requester == "dpo@example.com" and ledger.audit().problems == []


@pytest.mark.parametrize("sql", ["UPDATE transitions SET state = 'closed'", "DELETE FROM requests",
                                 "TRUNCATE notes CASCADE"])
def test_the_append_only_triggers_refuse_the_owner_too(ledger, urls, sql):
    failed_request(ledger)
    with pytest.raises(sa_exc.DBAPIError, match="append-only"):
        raw_sql(urls["owner"], sql)
    assert ledger.get("DPO-C7").state == "failed"


def test_a_forged_insert_by_the_app_role_is_refused_or_detected(ledger, urls):
    failed_request(ledger)
    with pytest.raises(sa_exc.IntegrityError, match="null value"):  # the INSERT, verbatim
        raw_sql(urls["app"], "INSERT INTO transitions(request_id, state, at, detail) VALUES "
            "('DPO-C7', 'closed', now(), '{}')")
    (ledger_id, public, g_hash), = raw_sql(urls["app"], "SELECT ledger_id, public_key, row_hash FROM genesis")
    (tail,), = raw_sql(urls["app"], "SELECT row_hash FROM transitions WHERE request_id = 'DPO-C7' ORDER BY id DESC "
                   "LIMIT 1")
    values = {"request_id": "DPO-C7", "state": "closed", "at": T0 + timedelta(days=1), "detail": "{}"}
    forger = Ed25519PrivateKey.generate()  # no access to the ledger's key: a hash it can compute, a signature not
    sealed = chain.Genesis(ledger_id, public, g_hash).seal(forger, "transitions", tail,
                                                           store.content(store.transitions, values))
    raw_sql(urls["app"], "INSERT INTO transitions(request_id, state, at, detail, prev_hash, row_hash, signature) "
        "VALUES (:request_id, :state, :at, :detail, :prev_hash, :row_hash, :signature)", **values, **sealed)
    (row,), = raw_sql(urls["app"], "SELECT max(id) FROM transitions")
    for read in (lambda: ledger.get("DPO-C7"), ledger.list, lambda: ledger.transition("DPO-C7", "received")):
        with pytest.raises(IntegrityError, match=rf"transitions row {row} \(request 'DPO-C7', closed\).*forged"):
            read()
    assert ledger.audit().problems[0].startswith(f"transitions row {row} (request 'DPO-C7', closed)")


def test_the_owner_dropping_a_trigger_to_edit_a_row_is_detected(ledger, urls):
    failed_request(ledger)
    raw_sql(urls["owner"], "DROP TRIGGER requests_append_only_row ON requests",
        "UPDATE requests SET requester = 'edited' WHERE id = 'DPO-C7'")
    assert raw_sql(urls["app"], "SELECT requester FROM requests") == [("edited",)]  # the edit went through ...
    with pytest.raises(IntegrityError, match=r"requests row 'DPO-C7': its content does not match its row_hash"):
        ledger.get("DPO-C7")  # ... and shows on the next read
    assert ledger.audit().problems[0].startswith("requests row 'DPO-C7'")


def test_concurrent_writers_never_fork_a_history(urls, key):
    """One writer at a time (an advisory lock the app role may take): each append sees the row it follows."""
    first = Ledger(urls["app"], key=key)
    first.submit(classes=[1], request_id="shared")
    first.close()  # an open connection would hold the server's shutdown
    errors = concurrent_notes(urls["app"], key)
    led = Ledger(urls["app"], key=key)
    assert errors == [] and led.audit().problems == []
    assert len(led.read_notes("shared")) == 15 and len(led.read_notes(kind="tick")) == 15
    led.close()
