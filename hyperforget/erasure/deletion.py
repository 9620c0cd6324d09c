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

Why the test's power is measured before the method runs: whether θ0 passes the request's test depends on the
reference, θ0 and the options alone (`answer.request_power`). Where it passes (no power, common for records on
MNIST), no approximate answer could be certified, so the request is answered exactly (a retrain) at once; the
approximate method is not run (on LeNet-5 it cost 2–3× the retrain before being discarded).

Why a failed approximate answer is followed by the exact one (`requests.exact_on_gate_failure`, on by default): a
deletion request is an obligation with a deadline, and an answer the gates tell apart from a retrain certifies
nothing. So the failure is recorded (`unlearned` with its verdict, then `failed` with the reasons; its version stays
in the registry without an alias, as evidence) and the same run answers with a retrain without the data, gated like
any answer; its `unlearned` step names the fallback and why. Off, the request ends failed and waits for an operator
(`hyperforget request process ID --method M`).

This module holds the lifecycle up to publishing (submit, scope, process, handle); closing and retiring are
`hyperforget.erasure.closing`, and the project's ledger with what reading it answers (show, list, audit) is
`hyperforget.erasure.project_ledger`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from hyperforget.base import records
from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import ConfigError, DataError, GateFailed, StorageError
from hyperforget.base.io import read_json, sha256_file, write_text
from hyperforget.config.options import CLASS_ONLY, EXACT_METHODS
from hyperforget.config.params import ForgetConfig, Params
from hyperforget.data.datasets import Dataset, forget_split, load_dataset
from hyperforget.erasure import data_erasure
from hyperforget.erasure.closing import RETIRED_TAG, Outcome, close, fail
from hyperforget.erasure.evidence import plain
from hyperforget.erasure.ledger import PIPELINE, Ledger
from hyperforget.erasure.ledger_records import RequestRecord
from hyperforget.erasure.project_ledger import IDS_FILE, opened, record_indices
from hyperforget.pipeline import answer as answer_mod
from hyperforget.publish import registry, tracking
from hyperforget.publish import s3 as storage
from hyperforget.unlearn import METHODS

REQUEST_TAG = "deletion.request"  # on the version a request published


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
        counts = torch.bincount(data.y_train, minlength=data.num_classes).tolist()
        return "classes", class_scope(classes, data.name, data.num_classes, dict(enumerate(counts)))
    if isinstance(samples, str | Path):
        return "samples", records.resolve(records.read_ids(samples), data)
    values = list(samples)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
        raise DataError(f"record ids must be a non-empty list of non-negative integers, got {values[:5]!r}…")
    return "samples", records.resolve(records.RecordIds(tuple(sorted(set(values))), (), "record ids"), data)


def class_scope(classes: list[int], name: str, num_classes: int, train_counts: dict) -> list[int]:
    """The sorted classes of a class request, checked against a data set's classes and train counts per class
    (keyed by class, int or str as a dataset card holds them); ConfigError or DataError saying what is wrong."""
    try:
        cfg = ForgetConfig(classes=list(classes))
    except ValueError as e:
        raise ConfigError(f"classes {classes!r}: {e}") from None
    if len(set(cfg.classes)) >= num_classes:
        raise DataError(f"classes {sorted(cfg.classes)} are every class of {name}: nothing would be left")
    bad = [c for c in cfg.classes if c >= num_classes]
    if bad:
        raise DataError(f"forget classes {bad} do not exist in {name} (classes 0..{num_classes - 1})")
    if not any(int(train_counts.get(c, train_counts.get(str(c), 0))) for c in cfg.classes):
        raise DataError(f"the forget request {cfg.slug()} selects no training samples")
    return sorted(cfg.classes)


def _card_scope(art: Artifacts, classes: list[int], dataset_sha256: str) -> list[int] | None:
    """A class request checked against the dataset card when the card describes the prepared file (its sha256):
    the classes and their counts are all a class request needs, and MNIST-60k's tensors take 0.3 s to load."""
    card = read_json(art.card) if art.card.exists() else {}
    if card.get("sha256") != dataset_sha256:
        return None
    return class_scope(classes, card["name"], card["num_classes"], card["class_counts"]["train"])


def submit(params: Params, art: Artifacts, classes: list[int] | None = None,
           samples: str | Path | list[int] | None = None, requester: str = "unknown", request_id: str | None = None,
           ledger: Ledger | None = None) -> RequestRecord:
    """Record a deletion request (state `received`, due in `requests.deadline_days`) for the prepared dataset.
    The same id with the same scope returns the existing request (idempotent); with another scope, ConfigError."""
    if not art.dataset.exists():
        raise DataError(f"{art.dataset} not found; run `hyperforget prepare` (or `dvc repro prepare`) first")
    digest = sha256_file(art.dataset)
    ids = _card_scope(art, classes, digest) if classes is not None and samples is None else None
    kind = "classes"
    if ids is None:
        kind, ids = scope_of(params, _data(art), classes, samples)
    with opened(params, art, ledger) as led:
        rec = led.submit(classes=ids if kind == "classes" else None, record_ids=ids if kind == "samples" else None,
                         requester=requester, request_id=request_id, deadline_days=params.requests.deadline_days,
                         dataset_sha256=digest)
    if kind == "samples" and rec.state != "closed":  # accepted, and not closed: its certificate holds the ids
        records.write_ids(art.deletion(rec.request_id) / IDS_FILE, ids)
    return rec


def write_record_hashes(params: Params, art: Artifacts, out: Path) -> Path:
    """`index sha256:<hex>` for every train record (`records.RECORD_HASH`), so a record's id can be looked up."""
    data = _data(art)
    lines = (f"{i} {records.HASH_PREFIX}{h}\n" for i, h in enumerate(records.record_hashes(data.x_train, data.y_train)))
    return write_text(Path(out), "".join(lines))


# ---------- process ----------


def choose_method(params: Params, method: str | None = None) -> tuple[str, dict | None]:
    """The method that answers params' request, and the fallback record when the asked one cannot."""
    chosen = method or params.unlearn.method
    if chosen not in METHODS:
        raise ConfigError(f"method {chosen!r}: choose one of {', '.join(METHODS)}")
    if params.forget.classes is None and chosen in CLASS_ONLY:
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
            prepared = answer_mod.prepare(p, art)
            if chosen not in EXACT_METHODS and not answer_mod.request_power(p, art, prepared)["has_power"]:
                fallback = {"from": chosen, "to": EXACT_METHODS[0], "reason": "no power: θ0 passes the same gates "
                            "on this request, so an approximate answer cannot be certified; answered exactly (a "
                            f"retrain without the data), {chosen} not run"}
                chosen = EXACT_METHODS[0]
            out = answer_mod.answer(p, art, chosen, run=request_id, register=True, request_key=request_id,
                                    prepared=prepared)
            _move(led, request_id, "unlearned", _unlearned(p, art, out, chosen, method, fallback))
            if not out.passed and chosen not in EXACT_METHODS and p.requests.exact_on_gate_failure:
                failed = _gate_failure(out, chosen, request_id)
                fail(led, request_id, failed)
                fallback = {"from": chosen, "to": EXACT_METHODS[0], "reason": f"{failed}; answered exactly (a "
                            "retrain without the data) in the same run: requests.exact_on_gate_failure"}
                chosen = EXACT_METHODS[0]
                out = answer_mod.answer(p, art, chosen, run=request_id, register=True, request_key=request_id,
                                        prepared=prepared)
                _move(led, request_id, "unlearned", _unlearned(p, art, out, chosen, method, fallback))
            if not out.passed:
                raise _gate_failure(out, chosen, request_id)
            _move(led, request_id, "verified", {"gates": out.gates.to_dict()})
            registry.set_tags(out.registered["name"], out.registered["version"], {REQUEST_TAG: request_id},
                              tracking.client(p, art))
            _move(led, request_id, "published", {"registered": out.registered, "exported": out.exported})
        except BaseException as e:
            fail(led, request_id, e)
            raise
        outcome = close(params, art, request_id, ledger=led)
        outcome.answer, outcome.summary = out.to_dict(), out.summary + "\n" + outcome.summary
        return outcome


def _unlearned(p: Params, art: Artifacts, out: answer_mod.Answer, chosen: str, method: str | None,
               fallback: dict | None) -> dict:
    """What the `unlearned` step records: the method and why it was chosen, the weights and what they scored."""
    req = out.request
    return {"method": chosen, "requested_method": method or p.unlearn.method, "fallback": fallback,
            "options": p.method_options(chosen).model_dump(), "request_slug": req["request_slug"],
            "weights_sha256": req["sha256"], "report": req["report"], "reference": req["reference"],
            "model_path": str(Path(req["model_path"]).relative_to(art.root)),
            "report_path": str(Path(req["report_path"]).relative_to(art.root)),
            "verification": req.get("verification"), "power": req.get("power"),
            "reference_source": req.get("reference_source")}


def _gate_failure(out: answer_mod.Answer, chosen: str, request_id: str) -> GateFailed:
    return GateFailed(f"the {chosen} model for request {request_id} failed its gates: {'; '.join(out.gates.reasons)} "
                      f"(registered as {out.registered['name']} version {out.registered['version']} without an "
                      f"alias; answer it with another method: hyperforget request process {request_id} --method M)")


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
