"""The deletion-request ledger on SQLite: the state machine, idempotent submission, overdue requests, append-only
storage, clear errors, and the signed hash chain that makes a forged, edited or removed row show (the same on a
real PostgreSQL, with its roles: tests/integration/test_ledger_postgres.py)."""

from __future__ import annotations

import shutil
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import exc as sa_exc
from typer.testing import CliRunner

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import ConfigError, IntegrityError, StorageError
from hyperforget.cli import app
from hyperforget.config.overlays import load_params
from hyperforget.erasure import chain, deletion, project_ledger
from hyperforget.erasure import ledger_store as store
from hyperforget.erasure.certificate import public_key_b64
from hyperforget.erasure.ledger import Ledger
from hyperforget.erasure.ledger_records import scope_sha256
from tests.recipes import concurrent_notes, raw_sql

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


class Clock:
    """An injected clock that moves only when the test says so."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def ledger(url, clock, key):
    led = Ledger(url, key=key, clock=clock)
    yield led
    led.close()




def forge_after_tail(url: str, request_id: str, state: str, key: Ed25519PrivateKey) -> int:
    """Append `state` to a request's history around the API: the right prev_hash and a correctly computed row_hash,
    signed by `key` (the ledger's own key: someone who holds it; any other: a forger). Returns the row id."""
    (ledger_id, public, g_hash), = raw_sql(url, "SELECT ledger_id, public_key, row_hash FROM genesis")
    tail = raw_sql(url, "SELECT row_hash FROM transitions WHERE request_id = :r ORDER BY id DESC LIMIT 1", r=request_id)
    values = {"request_id": request_id, "state": state, "at": T0 + timedelta(days=1), "detail": "{}"}
    sealed = chain.Genesis(ledger_id, public, g_hash).seal(key, "transitions", tail[0][0],
                                                           store.content(store.transitions, values))
    raw_sql(url, "INSERT INTO transitions(request_id, state, at, detail, prev_hash, row_hash, signature) VALUES "
        "(:request_id, :state, :at, :detail, :prev_hash, :row_hash, :signature)",
        **values | {"at": store.iso(values["at"]).replace("T", " ").removesuffix("+00:00")}, **sealed)
    return raw_sql(url, "SELECT max(id) FROM transitions")[0][0]


def failed_request(ledger, request_id: str = "DPO-C7") -> None:
    """A request that failed its gates: received → scoped → unlearned → failed."""
    ledger.submit(classes=[7], request_id=request_id, requester="dpo@example.com")
    for state in ("scoped", "unlearned"):
        ledger.transition(request_id, state)
    ledger.fail(request_id, "GateFailed: relearn")


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


# ---------- the signed hash chain: tampering shows on every read (issue #25) ----------


def test_the_issues_bare_insert_of_a_closed_transition_is_refused(ledger, url):
    failed_request(ledger)
    with pytest.raises(sa_exc.IntegrityError, match="NOT NULL"):
        raw_sql(url, "INSERT INTO transitions(request_id, state, at, detail) VALUES "
            "('DPO-C7', 'closed', '2025-03-02 09:00:00.000000', '{}')")
    assert ledger.get("DPO-C7").state == "failed"


def test_a_forged_closed_row_is_refused_in_one_line_by_every_read_and_write(ledger, url):
    failed_request(ledger)
    ledger.submit(classes=[1], request_id="other")
    row = forge_after_tail(url, "DPO-C7", "closed", Ed25519PrivateKey.generate())
    refusal = rf"does not verify.*transitions row {row} \(request 'DPO-C7', closed\).*forged"
    for read in (lambda: ledger.get("DPO-C7"), ledger.list, lambda: ledger.history("DPO-C7"), ledger.read_notes,
                 lambda: ledger.transition("DPO-C7", "received"), lambda: ledger.note("DPO-C7", "retired"),
                 lambda: Ledger(url).get("DPO-C7")):
        with pytest.raises(IntegrityError, match=refusal) as err:
            read()
        assert "\n" not in str(err.value)
    assert ledger.get("other").state == "received"  # another request's history still verifies on its own


def test_processing_a_forged_closed_request_fails_instead_of_reporting_it_closed(ledger, url, tmp_path):
    failed_request(ledger)
    forge_after_tail(url, "DPO-C7", "closed", Ed25519PrivateKey.generate())
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    params, art = load_params(tmp_path / "params.yaml"), Artifacts(tmp_path)
    with pytest.raises(IntegrityError, match=r"does not verify.*closed"):
        deletion.process(params, art, "DPO-C7", ledger=ledger)


def test_dropping_a_trigger_to_edit_a_request_is_detected(ledger, url):
    failed_request(ledger)
    raw_sql(url, "DROP TRIGGER requests_no_update", "UPDATE requests SET requester = 'edited'")
    with pytest.raises(IntegrityError, match=r"requests row 'DPO-C7': its content does not match its row_hash"):
        ledger.get("DPO-C7")


def test_a_row_deleted_from_the_middle_of_a_history_is_detected(ledger, url):
    failed_request(ledger)
    raw_sql(url, "DROP TRIGGER transitions_no_delete", "DELETE FROM transitions WHERE state = 'scoped'")
    with pytest.raises(IntegrityError, match=r"transitions row \d+ \(request 'DPO-C7', unlearned\): follows no row"):
        ledger.history("DPO-C7")


def test_a_signed_history_with_an_illegal_move_is_refused(ledger, url, key):
    ledger.submit(classes=[7], request_id="DPO-C7")
    forge_after_tail(url, "DPO-C7", "closed", key)  # signed with the ledger's own key, around the API
    with pytest.raises(IntegrityError, match=r"received → closed is not a legal move \(allowed from received: "
                                             r"scoped, failed\)"):
        ledger.get("DPO-C7")


def test_a_deleted_tail_still_verifies_but_changes_the_audit_digest(ledger, url):
    """The documented limit: removing the last rows of a history leaves a shorter valid chain; only an anchor kept
    elsewhere (the digest `audit` prints, a certificate's transitions) shows it."""
    failed_request(ledger)
    before = ledger.audit()
    raw_sql(url, "DROP TRIGGER transitions_no_delete", "DELETE FROM transitions WHERE state = 'failed'")
    after = ledger.audit()
    assert after.problems == [] and ledger.get("DPO-C7").state == "unlearned"
    assert after.digest != before.digest and after.rows == before.rows - 1


def test_a_ledger_signed_by_another_key_is_refused_and_a_public_key_only_reads(ledger, url, key):
    failed_request(ledger)
    with pytest.raises(IntegrityError, match=r"signed by key SHA256:.*not by the expected key"):
        Ledger(url, key=Ed25519PrivateKey.generate()).list()
    auditor = Ledger(url, key=public_key_b64(key))
    assert auditor.get("DPO-C7").state == "failed" and auditor.audit().pinned
    with pytest.raises(ConfigError, match="public key only"):
        auditor.transition("DPO-C7", "received")
    with pytest.raises(ConfigError, match="throwaway key"):
        Ledger(url).transition("DPO-C7", "received")


def test_a_ledger_of_the_old_schema_is_refused_in_one_line(url, key):
    raw_sql(url, "CREATE TABLE requests (id VARCHAR(64) PRIMARY KEY, requester TEXT)",
        "CREATE TABLE transitions (id INTEGER PRIMARY KEY, request_id VARCHAR(64), state VARCHAR(16))")
    with pytest.raises(ConfigError, match=r"created by an older HyperForget.*new database") as err:
        Ledger(url, key=key).list()
    assert "\n" not in str(err.value)


def test_audit_counts_a_clean_ledger_and_names_the_first_bad_row(ledger, url):
    failed_request(ledger)
    ledger.note("DPO-C7", "retired", {"name": "m", "version": "1"})
    ledger.note(None, "trued_up", {"requests": ["DPO-C7"]})
    clean = ledger.audit()
    assert (clean.problems, clean.requests, clean.rows, clean.pinned) == ([], 1, 8, True)
    row = forge_after_tail(url, "DPO-C7", "closed", Ed25519PrivateKey.generate())
    raw_sql(url, "DROP TRIGGER notes_no_update", "UPDATE notes SET detail = '{}' WHERE request_id IS NULL")
    problems = ledger.audit().problems
    assert len(problems) == 2 and problems[0].startswith(f"transitions row {row} (request 'DPO-C7', closed)")
    assert "notes row 2 (request None, trued_up): its content does not match" in problems[1]


def test_concurrent_writers_never_fork_a_history(url, key):
    """One writer at a time (SQLite BEGIN IMMEDIATE): each append sees the row it follows."""
    Ledger(url, key=key).submit(classes=[1], request_id="shared")
    errors = concurrent_notes(url, key, rounds=6)
    led = Ledger(url, key=key)
    assert errors == [] and led.audit().problems == []
    assert len(led.read_notes("shared")) == 18 and len(led.read_notes(kind="tick")) == 18


# ---------- the project's ledger key and `hyperforget request audit` ----------


def _project(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv("HYPERFORGET_SIGNING_KEY", raising=False)
    monkeypatch.setenv(project_ledger.LEDGER_VAR, f"sqlite:///{tmp_path / 'ledger.db'}")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path / "params.yaml"


def _cli(path: Path, *args: str):
    return CliRunner().invoke(app, ["request", *args, "--params", str(path)], terminal_width=200)


def test_the_project_ledger_key_is_created_on_the_first_write_and_required_by_every_read(tmp_path, monkeypatch):
    path = _project(tmp_path, monkeypatch)
    params, art = load_params(path), Artifacts(tmp_path)
    key_file = project_ledger.ledger_key_path(params, art)
    with project_ledger.opened(params, art, None) as led:
        led.list()
        assert not key_file.exists()  # reading an empty ledger creates nothing
        failed_request(led)
    assert key_file.stat().st_mode & 0o777 == 0o600
    key_file.rename(tmp_path / "elsewhere.pem")
    with project_ledger.opened(params, art, None) as led, pytest.raises(IntegrityError, match="is missing"):
        led.get("DPO-C7")


def test_cli_audit_exits_0_on_a_clean_ledger_and_1_naming_the_first_bad_row(tmp_path, monkeypatch):
    path = _project(tmp_path, monkeypatch)
    params, art = load_params(path), Artifacts(tmp_path)
    with project_ledger.opened(params, art, None) as led:
        failed_request(led)
    ok = _cli(path, "audit")
    assert ok.exit_code == 0 and "verifies" in ok.output and "1 requests, 6 rows" in ok.output, ok.output
    row = forge_after_tail(f"sqlite:///{tmp_path / 'ledger.db'}", "DPO-C7", "closed", Ed25519PrivateKey.generate())
    bad = _cli(path, "audit")
    assert bad.exit_code == 1 and f"first bad row: transitions row {row} (request 'DPO-C7', closed)" in bad.output
    process = _cli(path, "process", "DPO-C7")
    assert process.exit_code == 1 and "does not verify" in str(process.exception), process.output
    assert "is closed" not in process.output
