"""The deletion-request ledger on SQLite and on a real PostgreSQL (pgserver, ~1.5 s to start once per module):
the state machine, idempotent submission, overdue requests, append-only storage and clear errors."""

from __future__ import annotations

import socket
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from hyperforget.base.errors import ConfigError, StorageError
from hyperforget.erasure.ledger import Ledger, scope_sha256

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


class Clock:
    """An injected clock that moves only when the test says so."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    import pgserver  # a dev dependency: a missing server fails the tests, never skips them

    server = pgserver.get_server(tmp_path_factory.mktemp("pg"))
    yield sa.engine.make_url(server.get_uri()).set(drivername="postgresql+psycopg")
    server.cleanup()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    """A fresh, empty database per test: a SQLite file, or a new schema on the shared PostgreSQL server (a schema
    is ~10x cheaper than CREATE DATABASE, and search_path makes it the only one the ledger sees)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    server_url = request.getfixturevalue("postgres")
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {name}"))
    admin.dispose()
    return server_url.update_query_dict({"options": f"-csearch_path={name}"}).render_as_string(hide_password=False)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(url, clock):
    led = Ledger(url, clock=clock)
    yield led
    led.close()


def test_happy_path_walks_every_state_with_clock_timestamps(ledger, clock):
    rec = ledger.submit(classes=[3], requester="dpo@example.com", request_id="req-1", dataset_sha256="d" * 64)
    assert (rec.state, rec.submitted_at, rec.due_at) == ("received", T0, T0 + timedelta(days=30))
    states = ["scoped", "unlearned", "verified", "published", "closed"]
    for step, state in enumerate(states, start=1):
        clock.advance(hours=1)
        rec = ledger.transition("req-1", state, {"step": step})
        assert (rec.state, rec.state_at, rec.submitted_at) == (state, T0 + timedelta(hours=step), T0)
    history = ledger.history("req-1")
    assert [(t.state, t.at) for t in history] == [(s, T0 + timedelta(hours=i)) for i, s in
                                                  enumerate(["received", *states])]
    assert history[2].detail == {"step": 2}
    got = ledger.get("req-1")
    assert (got.requester, got.scope_kind, got.classes, got.dataset_sha256) == ("dpo@example.com", "classes", (3,),
                                                                                 "d" * 64)
    assert got.ids_sha256 == scope_sha256([3]) and got.n_records is None


def test_illegal_transition_names_current_requested_and_allowed_states(ledger):
    ledger.submit(record_ids=[5, 1], request_id="req-2")
    with pytest.raises(ConfigError, match=r"req-2.*is received.*cannot move to verified.*Allowed from received: "
                                          r"scoped, failed"):
        ledger.transition("req-2", "verified")
    assert [t.state for t in ledger.history("req-2")] == ["received"]


def test_moving_to_the_current_state_adds_no_row(ledger):
    ledger.submit(classes=[1], request_id="req-3")
    ledger.transition("req-3", "scoped")
    ledger.transition("req-3", "scoped", {"again": True})
    assert [t.state for t in ledger.history("req-3")] == ["received", "scoped"]


def test_resubmitting_the_same_scope_in_another_order_returns_the_original(ledger, clock):
    first = ledger.submit(record_ids=[9, 2, 7], request_id="req-4", requester="alice")
    clock.advance(days=2)
    again = ledger.submit(record_ids=[7, 9, 2, 2], request_id="req-4", requester="bob")
    assert again == first and again.n_records == 3 and again.submitted_at == T0
    assert len(ledger.history("req-4")) == 1 and len(ledger.list()) == 1


def test_resubmitting_an_id_with_a_different_scope_is_refused(ledger):
    ledger.submit(record_ids=[1, 2, 3], request_id="req-5")
    with pytest.raises(ConfigError, match=r"req-5.*different scope.*new request id"):
        ledger.submit(record_ids=[1, 2, 4], request_id="req-5")
    with pytest.raises(ConfigError, match="different scope"):
        ledger.submit(classes=[1, 2, 3], request_id="req-5")


def test_ids_hash_names_the_set_not_the_order():
    assert scope_sha256([3, 1, 2]) == scope_sha256([1, 2, 3]) != scope_sha256([1, 2])


def test_overdue_lists_only_unclosed_requests_past_their_due_date(ledger, clock):
    ledger.submit(classes=[0], request_id="short", deadline_days=1)
    clock.advance(minutes=1)
    ledger.submit(classes=[1], request_id="long", deadline_days=30)
    clock.advance(minutes=1)
    ledger.submit(classes=[2], request_id="done", deadline_days=1)
    for state in ["scoped", "unlearned", "verified", "published", "closed"]:
        ledger.transition("done", state)
    assert ledger.list(overdue=True) == []
    clock.advance(days=1)  # `short` was due a minute ago, `done` is closed
    assert [r.request_id for r in ledger.list(overdue=True)] == ["short"]
    assert [r.request_id for r in ledger.list()] == ["short", "long", "done"]
    clock.advance(days=30)
    assert [r.request_id for r in ledger.list(overdue=True)] == ["short", "long"]


def test_failed_request_is_retried_to_closed(ledger):
    ledger.submit(classes=[4], request_id="req-6")
    ledger.transition("req-6", "scoped")
    rec = ledger.fail("req-6", "OOM while unlearning")
    assert rec.state == "failed" and ledger.history("req-6")[-1].reason == "OOM while unlearning"
    with pytest.raises(ConfigError, match=r"is failed.*cannot move to verified.*received, scoped, unlearned"):
        ledger.transition("req-6", "verified")
    for state in ["unlearned", "verified", "published", "closed"]:
        rec = ledger.transition("req-6", state)
    assert rec.state == "closed"
    assert [t.state for t in ledger.history("req-6")] == ["received", "scoped", "failed", "unlearned", "verified",
                                                          "published", "closed"]
    with pytest.raises(ConfigError, match="nothing"):
        ledger.fail("req-6", "too late")


def test_retry_cannot_skip_the_step_that_never_succeeded(ledger):
    ledger.submit(classes=[4], request_id="req-7")
    ledger.fail("req-7", "scoping crashed")
    with pytest.raises(ConfigError, match=r"Allowed from failed: received, scoped$"):
        ledger.transition("req-7", "unlearned")


def test_failing_needs_a_reason(ledger):
    ledger.submit(classes=[4], request_id="req-8")
    with pytest.raises(ConfigError, match="needs a reason"):
        ledger.transition("req-8", "failed")


@pytest.mark.parametrize("sql", ["UPDATE transitions SET state = 'closed'", "DELETE FROM transitions",
                                 "UPDATE requests SET requester = 'mallory'", "DELETE FROM requests"])
def test_raw_sql_cannot_update_or_delete_ledger_rows(ledger, url, sql):
    ledger.submit(classes=[3], request_id="req-9", requester="alice")
    engine = sa.create_engine(url)
    try:
        with pytest.raises(sa_exc.DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(sa.text(sql))
    finally:
        engine.dispose()
    rec = ledger.get("req-9")
    assert (rec.state, rec.requester, len(ledger.history("req-9"))) == ("received", "alice", 1)


def test_unknown_request_id_is_named_in_the_error(ledger):
    for call in (ledger.get, ledger.history, lambda rid: ledger.transition(rid, "scoped")):
        with pytest.raises(ConfigError, match="no deletion request 'nope'"):
            call("nope")


@pytest.mark.parametrize("kwargs", [{}, {"classes": [1], "record_ids": [2]}, {"classes": []},
                                    {"record_ids": [-1]}, {"record_ids": [True]}, {"classes": ["3"]}])
def test_scope_must_be_exactly_one_list_of_non_negative_ints(tmp_path, kwargs):
    with pytest.raises(ConfigError, match=r"exactly one|non-negative integers"):
        Ledger(f"sqlite:///{tmp_path / 'l.db'}").submit(**kwargs)


def test_unreachable_database_raises_storage_error_with_masked_url():
    with socket.socket() as s:  # a port nobody listens on: bind, read the number, close
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    led = Ledger(f"postgresql+psycopg://hf:s3cret@127.0.0.1:{port}/ledger")
    with pytest.raises(StorageError, match=rf"hf:\*\*\*@127.0.0.1:{port}/ledger.*start the database") as err:
        led.list()
    assert "s3cret" not in str(err.value)
