"""Deletion requests as records: submit → process (scoped → unlearned → verified → published → closed) → certificate.

Why a request is more than a `forget:` section: an erasure request is an obligation with a due date, and
someone must later show that it arrived, which models it concerned, what was done and when. So every request
lives in the ledger (`hyperforget.erasure.ledger`, SQL, append-only) and `process` records each step there, with what
the step found, before moving on:
- scoped: every registered version whose `lineage.dataset` tag is the sha256 of the prepared dataset the
  request names records of (all of them hold those records), and the original θ0 they derive from;
- unlearned → verified → published: one `answer.answer(register=True, request_key=<request id>)`, so a retry
  (a failed run, the flow's task retry, a resubmitted id) completes the same registry version, never a second;
- closed: only once each version in scope has a successor (a gated version of this request unlearned from the
  same original) or was retired (`retire`); then, for a record request in a DVC project, its records are
  erased from the data (`data_erasure.erase`: a new data version, the old ones collected from the DVC cache
  and remotes), and a signed certificate naming the new version is issued (`evidence.issue`).
A failure at any step appends `failed` with the reason and re-raises; `process` on a failed request starts it
again from `received` (the ledger keeps both attempts). A failure while closing a request whose data is being
erased leaves it `published` with an `erasure_failed` note instead (its records may be gone from the data, so it
is never answered again); processing it again resumes the close.

Why the record ids are kept, once: the ledger stores only their sha256, but the unlearning (and the true-up,
while the records are still in the data) need the records themselves. An open request's ids are in
`Artifacts.deletion(id)/ids.txt`, checked against that sha256 whenever read; closing moves them into its
certificate (the one copy a verifier checks the certificate's ids_sha256 against). A record-level request
cannot be answered by DiHyFo (its zoo and prompts are per class), so it falls back to
`requests.fallback_method`, and the `unlearned` step says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from hyperforget.base import records
from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import ConfigError, DataError, GateFailed, HyperForgetError, IntegrityError, StorageError
from hyperforget.base.io import read_json, sha256_file, write_text
from hyperforget.config.options import VARIANTS
from hyperforget.config.params import ForgetConfig, Params
from hyperforget.data.datasets import Dataset, forget_split, load_dataset
from hyperforget.erasure import data_erasure, evidence
from hyperforget.erasure import ledger as ledger_mod
from hyperforget.erasure.evidence import plain
from hyperforget.erasure.ledger import PIPELINE, Ledger, RequestRecord
from hyperforget.pipeline import answer as answer_mod
from hyperforget.publish import registry, tracking
from hyperforget.publish import s3 as storage
from hyperforget.unlearn import METHODS

LEDGER_VAR = "HYPERFORGET_LEDGER_URL"
REQUEST_TAG = "deletion.request"  # on the version a request published
RETIRED_TAG = "deletion.retired"  # on a version retired from a request's scope (the request id)
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


@dataclass
class Outcome:
    """Where a request stands after `process`/`retire`: plain data (the flow returns `to_dict()`)."""

    request_id: str
    state: str
    answer: dict | None = None  # answer.Answer.to_dict() of this run, or the published step's record
    pending: list[dict] = field(default_factory=list)  # versions in scope with no successor, not retired
    certificate: dict | None = None  # paths, sha256 and where it was stored
    summary: str = ""
    new_public_key: str | None = None  # set when the signing key was created by this call

    def to_dict(self) -> dict:
        return asdict(self)


# ---------- submit ----------


def _data(art: Artifacts) -> Dataset:
    return load_dataset(art.prepare)


def scope_of(params: Params, data: Dataset, classes: list[int] | None = None,
             samples: str | Path | list[int] | None = None) -> tuple[str, list[int]]:
    """('classes', classes) or ('samples', sorted train indices), checked against `data`; with neither given,
    params' `forget:` request (a random `fraction` becomes the record ids it draws)."""
    if classes is not None and samples is not None:
        raise ConfigError("a deletion request names classes or records (samples), not both")
    if classes is None and samples is None:
        f = params.forget
        classes, samples = f.classes, f.samples
        if classes is None and samples is None:
            samples = forget_split(data, f).forget_idx.tolist()
    if classes is not None:
        try:
            cfg = ForgetConfig(classes=list(classes))
        except ValueError as e:
            raise ConfigError(f"classes {classes!r}: {e}") from None
        if len(set(cfg.classes)) >= data.num_classes:
            raise DataError(f"classes {sorted(cfg.classes)} are every class of {data.name}: nothing would be left")
        forget_split(data, cfg)  # DataError for a class the data set does not have
        return "classes", sorted(cfg.classes)
    if isinstance(samples, str | Path):
        return "samples", records.resolve(records.read_ids(samples), data)
    values = list(samples)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
        raise DataError(f"record ids must be a non-empty list of non-negative integers, got {values[:5]!r}…")
    return "samples", records.resolve(records.RecordIds(tuple(sorted(set(values))), (), "record ids"), data)


def submit(params: Params, art: Artifacts, classes: list[int] | None = None,
           samples: str | Path | list[int] | None = None, requester: str = "unknown", request_id: str | None = None,
           ledger: Ledger | None = None) -> RequestRecord:
    """Record a deletion request (state `received`, due in `requests.deadline_days`) for the prepared dataset.
    The same id with the same scope returns the existing request (idempotent); with another scope, ConfigError."""
    data = _data(art)
    kind, ids = scope_of(params, data, classes, samples)
    with opened(params, art, ledger) as led:
        rec = led.submit(classes=ids if kind == "classes" else None, record_ids=ids if kind == "samples" else None,
                         requester=requester, request_id=request_id, deadline_days=params.requests.deadline_days,
                         dataset_sha256=sha256_file(art.dataset))
    if kind == "samples" and rec.state != "closed":  # accepted, and not closed: its certificate holds the ids
        records.write_ids(art.deletion(rec.request_id) / IDS_FILE, ids)
    return rec


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


# ---------- process ----------


def choose_method(params: Params, method: str | None = None) -> tuple[str, dict | None]:
    """The method that answers params' request, and the fallback record when the asked one cannot."""
    chosen = method or params.unlearn.method
    if chosen not in METHODS:
        raise ConfigError(f"method {chosen!r}: choose one of {', '.join(METHODS)}")
    if params.forget.classes is None and chosen in VARIANTS:
        fallback = params.requests.fallback_method
        return fallback, {"from": chosen, "to": fallback, "reason": f"{chosen} refuses record-level requests "
                          "(DiHyFo's zoo and prompts are per class): answered by requests.fallback_method"}
    return chosen, None


def request_params(params: Params, art: Artifacts, rec: RequestRecord, led: Ledger | None = None) -> Params:
    """params with `forget:` set to the request as recorded, after checking the data it names is unchanged (or,
    given the ledger, is the version an erasure carried the request over to: `data_erasure`)."""
    digest = sha256_file(art.dataset) if art.dataset.exists() else None
    if digest is None:
        raise DataError(f"{art.dataset} not found; run `hyperforget prepare` first")
    expected = data_erasure.version_of(led, rec) if led is not None else rec.dataset_sha256
    if expected and expected != digest:
        raise DataError(f"the prepared dataset changed since request {rec.request_id} was submitted (sha256 "
                        f"{digest[:12]}…, submitted against {expected[:12]}…): its record ids may now name "
                        "other records. Restore that dataset, or submit the request again as a new id")
    if rec.scope_kind == "classes":
        forget = ForgetConfig(classes=list(rec.classes), seed=params.forget.seed)
    elif led is not None and data_erasure.carried_rows(art, led, rec) is not None:
        forget = ForgetConfig(samples=str(data_erasure.forget_file(params, art, led, rec)), seed=params.forget.seed)
    else:
        record_indices(art, rec, _data(art))  # checks the ids file against the ledger
        forget = ForgetConfig(samples=str(art.deletion(rec.request_id) / IDS_FILE), seed=params.forget.seed)
    return params.model_copy(update={"forget": forget})


def scope_models(params: Params, art: Artifacts, rec: RequestRecord, led: Ledger | None = None) -> dict:
    """The `scoped` step: every registered version trained on this dataset, or on any version an erasure carried
    the request over from (except those of this request and retired ones), the original they derive from and
    the number of records to delete."""
    dataset = sha256_file(art.dataset)
    lineages = [*(data_erasure.versions_of(led, rec) if led is not None else []), dataset]
    client = tracking.client(params, art)
    versions = [v for i, d in enumerate(lineages) if d not in lineages[:i]
                for v in registry.versions_with_tag("lineage.dataset", d, client)]
    mine = f"{rec.request_id}:"
    models = [{"name": v.name, "version": str(v.version), "original": v.tags.get("lineage.original"),
               "weights_sha256": v.tags.get("sha256.weights"), "run_id": v.run_id,
               "gates_passed": v.tags.get("gates.passed") == "true", "aliases": sorted(v.aliases or [])}
              for v in versions if not v.tags.get(registry.KEY_TAG, "").startswith(mine)
              and v.tags.get(REQUEST_TAG) != rec.request_id and not v.tags.get(RETIRED_TAG)]
    n = rec.n_records
    if n is None:  # a class request: its records are the classes' members in the train split
        counts = read_json(art.card)["class_counts"]["train"]
        n = sum(int(counts.get(str(c), 0)) for c in rec.classes)
    return {"dataset_sha256": dataset, "original_sha256": sha256_file(art.model), "n_records": n, "models": models}


def preflight(params: Params, art: Artifacts) -> None:
    """Fail before any unlearning when a server the answer must reach is down: S3 (when configured) and a
    remote MLflow server. The request is then `failed` with this reason and resumes when processed again."""
    endpoint = os.environ.get(storage.ENDPOINT_VAR)
    if endpoint and not storage.reachable(endpoint):
        raise StorageError(f"the S3 store at {endpoint} is down, so no answer could be published; start it "
                           "(`make stack-up`, then `source .stack/env`) and process the request again: it resumes")
    tracking.client(params, art)  # StorageError naming the MLflow server when a remote one does not answer


def _move(led: Ledger, request_id: str, state: str, detail: dict) -> None:
    """Append `state` unless the request is already at or past it (a resumed request re-walks its steps)."""
    current = led.get(request_id).state
    if current in PIPELINE and PIPELINE.index(state) <= PIPELINE.index(current):
        return
    led.transition(request_id, state, plain(detail))


def _fail(led: Ledger, request_id: str, error: BaseException) -> None:
    reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    try:
        if led.get(request_id).state not in ("failed", "closed"):
            led.fail(request_id, reason[:4000])
    except HyperForgetError:
        pass  # the ledger itself is unreachable: the original error is the one to report


def process(params: Params, art: Artifacts, request_id: str, method: str | None = None,
            ledger: Ledger | None = None) -> Outcome:
    """Take a request through its steps (see the module docstring); safe to call again at any point."""
    with opened(params, art, ledger) as led:
        rec = led.get(request_id)
        if rec.state in ("closed", "published"):  # nothing to unlearn again: close it if it can be
            return close(params, art, request_id, ledger=led)
        if rec.state == "failed":
            led.transition(request_id, "received", {"retry_after": led.history(request_id)[-1].reason})
        try:
            p = request_params(params, art, rec, led)
            data_erasure.check_original(led, art)
            preflight(p, art)
            _move(led, request_id, "scoped", scope_models(p, art, rec, led))
            chosen, fallback = choose_method(p, method)
            out = answer_mod.answer(p, art, chosen, run=request_id, register=True, request_key=request_id)
            req = out.request
            _move(led, request_id, "unlearned", {
                "method": chosen, "requested_method": method or params.unlearn.method, "fallback": fallback,
                "options": p.method_options(chosen).model_dump(), "request_slug": req["request_slug"],
                "weights_sha256": req["sha256"], "report": req["report"], "reference": req["reference"],
                "model_path": str(Path(req["model_path"]).relative_to(art.root)),
                "report_path": str(Path(req["report_path"]).relative_to(art.root)),
                "verification": req.get("verification")})
            if not out.passed:
                raise GateFailed(f"the {chosen} model for request {request_id} failed its gates: "
                                 f"{'; '.join(out.gates.reasons)} (registered as {out.registered['name']} version "
                                 f"{out.registered['version']} without an alias; answer it with another method: "
                                 f"hyperforget request process {request_id} --method M)")
            _move(led, request_id, "verified", {"gates": out.gates.to_dict()})
            registry.set_tags(out.registered["name"], out.registered["version"], {REQUEST_TAG: request_id},
                              tracking.client(p, art))
            _move(led, request_id, "published", {"registered": out.registered, "exported": out.exported})
        except BaseException as e:
            _fail(led, request_id, e)
            raise
        outcome = close(params, art, request_id, ledger=led)
        outcome.answer, outcome.summary = out.to_dict(), out.summary + "\n" + outcome.summary
        return outcome


def details(led: Ledger, request_id: str) -> dict[str, dict]:
    """The detail of each state's latest transition (a retried request's last attempt)."""
    return {t.state: t.detail for t in led.history(request_id)}


def coverage(led: Ledger, request_id: str) -> tuple[list[dict], list[dict]]:
    """(resolved, pending): each version in scope with its successor or retirement, and those with neither."""
    d = details(led, request_id)
    scoped, unlearned, published = d.get("scoped", {}), d.get("unlearned", {}), d.get("published", {})
    retired = {(n.detail["name"], str(n.detail["version"])): n for n in led.read_notes(request_id, "retired")}
    successor = (published.get("registered") or {}) if "published" in d else {}
    resolved, pending = [], []
    for m in scoped.get("models", []):
        if successor and m.get("original") == scoped.get("original_sha256"):
            resolved.append(m | {"resolution": "successor", "successor": {
                "name": successor["name"], "version": successor["version"],
                "weights_sha256": unlearned.get("weights_sha256")}})
        elif (m["name"], m["version"]) in retired:
            note = retired[(m["name"], m["version"])]
            resolved.append(m | {"resolution": "retired", "retired_at": note.at.isoformat(),
                                 "reason": note.detail.get("reason", "")})
        else:
            pending.append(m)
    return resolved, pending


def close(params: Params, art: Artifacts, request_id: str, ledger: Ledger | None = None) -> Outcome:
    """Close a published request whose scope is resolved: issue, sign and store its certificate, then `closed`.
    A request with versions still pending stays `published` (the outcome lists them)."""
    with opened(params, art, ledger) as led:
        rec = led.get(request_id)
        if rec.state == "closed":
            cert = details(led, request_id)["closed"]
            data_erasure.drop_working_files(art, request_id, IDS_FILE)
            return Outcome(request_id, "closed", certificate=cert,
                           summary=f"request {request_id} is closed; certificate {cert.get('path')}")
        if rec.state != "published":
            return Outcome(request_id, rec.state, summary=f"request {request_id} is {rec.state}: process it first")
        resolved, pending = coverage(led, request_id)
        if pending:
            names = ", ".join(f"{m['name']} v{m['version']}" for m in pending)
            return Outcome(request_id, "published", pending=pending, summary=(
                f"request {request_id} stays open: {names} also hold the records (trained on the same data, from "
                "another original) and have no unlearned successor; retire each once it is out of service: "
                f"hyperforget request retire NAME VERSION --request {request_id}"))
        erasing = data_erasure.applies(art, rec)
        try:
            if erasing:  # the records leave the data before the certificate names the version without them
                data_erasure.erase(params, art, led, rec, lambda r, data: record_indices(art, r, data))
            issued = evidence.issue(params, art, led, rec, resolved)
            led.transition(request_id, "closed", plain({k: v for k, v in issued.items() if k != "new_public_key"}))
        except BaseException as e:
            if erasing:  # stays published: its data may be erased already, so it must never be answered again
                data_erasure.note_failure(led, request_id, e)
            else:
                _fail(led, request_id, e)
            raise
        data_erasure.drop_working_files(art, request_id, IDS_FILE)
        return Outcome(request_id, "closed", certificate=issued, new_public_key=issued.get("new_public_key"),
                       summary=f"request {request_id} closed; certificate {issued['path']}")


def retire(params: Params, art: Artifacts, request_id: str, name: str, version: str, reason: str = "",
           ledger: Ledger | None = None) -> Outcome:
    """Take a version in a request's scope out of service (its aliases removed, tagged retired) and record it;
    closes the request when that was the last version pending."""
    with opened(params, art, ledger) as led:
        rec = led.get(request_id)
        if rec.state == "closed":
            raise ConfigError(f"request {request_id} is already closed; nothing in its scope can be retired for it")
        models = details(led, request_id).get("scoped", {}).get("models")
        if models is None:
            raise ConfigError(f"request {request_id} is {rec.state} and has not been scoped yet: run "
                              f"`hyperforget request process {request_id}` first")
        if not any(m["name"] == name and m["version"] == str(version) for m in models):
            shown = ", ".join(f"{m['name']} {m['version']}" for m in models) or "none"
            raise ConfigError(f"{name} version {version} is not in the scope of request {request_id} (in scope: "
                              f"{shown})")
        client = tracking.client(params, art)
        mv = client.get_model_version(name, str(version))
        for alias in mv.aliases or []:
            client.delete_registered_model_alias(name, alias)
        registry.set_tags(name, version, {RETIRED_TAG: request_id}, client)
        led.note(request_id, "retired", {"name": name, "version": str(version), "reason": reason,
                                         "aliases_removed": sorted(mv.aliases or [])})
        return close(params, art, request_id, ledger=led)


# ---------- reading ----------


def show(params: Params, art: Artifacts, request_id: str, ledger: Ledger | None = None) -> dict:
    """The request, every transition and every note, as plain data."""
    with opened(params, art, ledger) as led:
        rec = led.get(request_id)
        return plain({"request": asdict(rec), "transitions": [asdict(t) for t in led.history(request_id)],
                      "notes": [asdict(n) for n in led.read_notes(request_id)]})


def audit(params: Params, art: Artifacts, public_key: str | None = None) -> ledger_mod.Audit:
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


def write_record_hashes(params: Params, art: Artifacts, out: Path) -> Path:
    """`index sha256:<hex>` for every train record (`records.RECORD_HASH`), so a record's id can be looked up."""
    data = _data(art)
    lines = (f"{i} {records.HASH_PREFIX}{h}\n" for i, h in enumerate(records.record_hashes(data.x_train, data.y_train)))
    return write_text(Path(out), "".join(lines))


def handle(params: Params, art: Artifacts, request_id: str, method: str | None = None, requester: str = "unknown",
           scope_given: bool = False, ledger: Ledger | None = None) -> Outcome:
    """What the unlearn flow runs: submit params' request under `request_id` unless that id is known (with
    `scope_given`, a known id must have params' scope: ConfigError otherwise), then `process` it."""
    with opened(params, art, ledger) as led:
        try:
            known = led.get(request_id) is not None
        except ConfigError:  # not in the ledger yet
            known = False
        if scope_given or not known:
            submit(params, art, requester=requester, request_id=request_id, ledger=led)
        return process(params, art, request_id, method, ledger=led)

