"""How a request's attempt ends: closed with a certificate once its scope is resolved, retired versions, or failed.

Why a module apart from the lifecycle up to publishing (`hyperforget.erasure.deletion`): a published request is
closed only once each registered version in its scope has a successor (a gated version of this request,
unlearned from the same original) or was retired (`retire`: its aliases removed, tagged, noted in the
ledger), which may happen long after it was answered. Closing a record request in a DVC project first erases
its records from the data (`data_erasure.erase`), then issues and signs the certificate (`evidence.issue`); a
failure there leaves it `published` with an `erasure_failed` note (its data may be gone already), any other
failure of a step appends `failed` with the reason (`fail`), and the original error is the one raised.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import ConfigError, HyperForgetError
from hyperforget.config.params import Params
from hyperforget.erasure import data_erasure, evidence
from hyperforget.erasure.evidence import plain
from hyperforget.erasure.ledger import Ledger
from hyperforget.erasure.project_ledger import IDS_FILE, details, opened, record_indices
from hyperforget.publish import registry, tracking

RETIRED_TAG = "deletion.retired"  # on a version retired from a request's scope (the request id)


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


def fail(led: Ledger, request_id: str, error: BaseException) -> None:
    """Record `error` as the request's failure; on a request already `failed` in this attempt (its fast answer
    failed its gates and the exact answer then failed too), as a `failure` note, so the ledger names every cause."""
    reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    try:
        state = led.get(request_id).state
        if state == "failed":
            led.note(request_id, "failure", {"reason": reason[:4000]})
        elif state != "closed":
            led.fail(request_id, reason[:4000])
    except HyperForgetError:
        pass  # the ledger itself is unreachable: the original error is the one to report


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
                fail(led, request_id, e)
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
