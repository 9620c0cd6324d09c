"""Approximate now, exact later: retrain from scratch without every record of every closed deletion request.

Why: a request is answered in seconds by an approximate method (gated against retrains, but approximate);
the exact answer, a model that never saw the records, is a retrain, affordable in a batch now and then. The
true-up retrains θ0's recipe (`train:`, through the `retrain` method) on the prepared train split as it is now,
which is the erased data once record requests were erased from it (`data_erasure`: their records are not
there to leave out), minus every record still in it of every closed request: the members of each closed class
request, and the ids of each record request closed on this very version without erasure (all of them, not only
those since the last true-up, because the data still holds the earlier ones). Requests closed on a version an
erasure turned into this one count too (`data_erasure.lineage`); a record request closed without erasure on
another version cannot be located here and is listed as `not_covered`. It runs only when some closed request
has not been trued up yet (or with `force`).

How it is judged: the retrain is the exact reference itself, so forgetting holds by construction (the records
were never seen) and there is nothing to compare it with but the original. Its gate is utility: retained-class
test accuracy at least θ0's minus `gates.max_retain_drop` (`gates.check_gates` with θ0's report as the
reference). Forget accuracy and the MIA on the deleted records are reported, not gated: on a few records a
model that never saw them still classifies them as well as unseen data, often better than θ0 did. When some
closed request named classes, the forgotten classes' test accuracy must be at most `gates.max_forget_acc`
(a model that never saw a class cannot predict it). Registered as `<dataset>-<arch>-trueup`, exported like
any version, and `champion` moves to it only when it passed. The ledger records the run (a note
without a request) and, on each request it newly covers, a `trued_up` note naming the version.
"""

from __future__ import annotations

import torch

from hyperforget.base import records
from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import DataError
from hyperforget.base.io import read_json, sha256_file, sha256_json, write_json
from hyperforget.config.params import Params
from hyperforget.data.datasets import ForgetSplit, load_dataset
from hyperforget.erasure import data_erasure, project_ledger
from hyperforget.erasure.evidence import plain
from hyperforget.erasure.ledger import Ledger
from hyperforget.models.metrics import Evaluator, accuracy, per_class_accuracy, summarise
from hyperforget.models.nets import load_model, predict, save_model
from hyperforget.publish import release as publish
from hyperforget.publish import runs
from hyperforget.unlearn import run_method
from hyperforget.unlearn.method import UnlearnInputs
from hyperforget.verify.gates import GateResult, check_gates

RUN_NOTE, REQUEST_NOTE = "trueup", "trued_up"


def model_name(params: Params) -> str:
    return f"{params.data.name}-{params.model.arch}-trueup"


def pending(params: Params, art: Artifacts, led: Ledger) -> tuple[list, list]:
    """(every closed request a retrain on the prepared dataset answers, those not trued up yet): see the module
    docstring."""
    dataset = sha256_file(art.dataset)
    versions = data_erasure.lineage(led, dataset)
    erased = {n.request_id for n in led.read_notes(kind=data_erasure.ERASED)
              if n.detail.get("dataset_after") in versions}
    closed = [r for r in led.list() if r.state == "closed" and (r.request_id in erased or r.dataset_sha256 == dataset
                                                                or (r.scope_kind == "classes" and
                                                                    r.dataset_sha256 in versions))]
    covered = {n.request_id for n in led.read_notes(kind=REQUEST_NOTE)}
    return closed, [r for r in closed if r.request_id not in covered]


def not_covered(led: Ledger, versions: set[str], closed: list) -> list[str]:
    """Record requests closed without erasure on an earlier version: their ids do not index this one."""
    seen = {r.request_id for r in closed}
    return [r.request_id for r in led.list() if r.state == "closed" and r.request_id not in seen
            and r.scope_kind == "samples" and r.dataset_sha256 in versions]


def trueup(params: Params, art: Artifacts, force: bool = False, promote: bool = True,
           ledger: Ledger | None = None) -> dict:
    """Retrain without every closed request's records, gate, register, export and (if passed) promote; see the
    module docstring. Returns plain data; `skipped` says why nothing ran."""
    with project_ledger.opened(params, art, ledger) as led:
        closed, new = pending(params, art, led)
        if not closed or not (new or force):
            why = "no request is closed on this dataset" if not closed else "no request closed since the last true-up"
            return {"skipped": why, "requests": []}
        data = load_dataset(art.prepare)
        dataset = sha256_file(art.dataset)
        original, spec = load_model(art.model)
        erased = {n.request_id for n in led.read_notes(kind=data_erasure.ERASED)}
        still_in = [r for r in closed if r.request_id not in erased]  # erased records are not in the data at all
        forget = sorted({i for r in still_in for i in project_ledger.record_indices(art, r, data)})
        if len(forget) >= len(data.y_train):
            raise DataError("the closed requests together delete every training record: nothing is left to retrain on")
        keep = torch.ones(len(data.y_train), dtype=torch.bool)
        keep[forget] = False
        classes = sorted({c for r in closed if r.classes for c in r.classes})
        split = ForgetSplit(torch.tensor(forget, dtype=torch.long), keep.nonzero().squeeze(1),
                            tuple(classes) if classes else None)
        key = sha256_json([dataset, records.ids_sha256(forget)])
        out = art.trueup / key[:16]
        result = _retrain(params, art, out, key, original, spec, data, split)
        gate = judge(result, params, bool(classes))
        with runs.start_stage_run(params, art, "trueup", tags={"request": "trueup"}) as parent:
            registered = publish.register(result, gate, params, art, parent=parent, key=f"trueup-{key[:24]}",
                                          name=model_name(params))
            parent.log_metrics({"gates.passed": gate.passed, "excluded_records": len(forget)})
        exported = champion = None
        if gate.passed:
            exported = publish.export_and_upload(registered["name"], registered["version"], params, art)
            if promote:
                champion = publish.promote(registered["name"], registered["version"], params, art)
        ids = [r.request_id for r in new]
        summary = plain({"registered": registered, "exported": exported, "champion": champion,
                         "gates": gate.to_dict(), "excluded_records": len(forget),
                         "excluded_sha256": records.ids_sha256(forget), "dataset_sha256": dataset,
                         "erased": sorted(r.request_id for r in closed if r.request_id in erased),
                         "not_covered": not_covered(led, data_erasure.lineage(led, dataset), closed),
                         "requests": ids, "all_closed": [r.request_id for r in closed], "report": result["report"]})
        led.note(None, RUN_NOTE, {k: summary[k] for k in ("registered", "champion", "excluded_records",
                                                           "excluded_sha256", "dataset_sha256", "erased",
                                                           "requests")} | {"passed": gate.passed})
        if gate.passed:
            for rid in ids:
                led.note(rid, REQUEST_NOTE, {"name": registered["name"], "version": registered["version"],
                                             "champion": champion is not None})
        return summary


def judge(result: dict, params: Params, classes: bool) -> GateResult:
    """Utility against θ0, and no forgotten class predicted (see the module docstring). Verification against
    retrains is not run: this model IS a retrain without the records, what verification compares with."""
    checks = {"retained_test_acc": check_gates(result["report"], result["reference"], params.gates).checks[
        "retained_test_acc"]}
    if classes:
        value, limit = result["report"].get("test_forgotten_acc"), params.gates.max_forget_acc
        ok = isinstance(value, float) and value <= limit
        checks["forgotten_classes_test_acc"] = {"value": value, "op": "≤", "limit": limit, "passed": ok, "detail": (
            f"forgotten classes' test acc {value if value is None else f'{value:.4f}'} {'≤' if ok else '>'} "
            f"{limit:.4f} (gates.max_forget_acc)")}
    checks["exact"] = {"value": 1.0, "op": "", "limit": 1.0, "passed": True, "detail": (
        "exact by construction: retrained from scratch on the train split without the records")}
    reasons = [f"{name}: {c['detail']}" for name, c in checks.items() if not c["passed"]]
    return GateResult(not reasons, reasons, checks)


def _retrain(params: Params, art: Artifacts, out, key: str, original, spec, data, split: ForgetSplit) -> dict:
    """The exact model and its report, θ0's report as the reference; reused when `out` holds this key's model."""
    path, report_path = out / "model.safetensors", out / "report.json"
    if report_path.exists() and path.exists():
        cached = read_json(report_path)
        if cached.get("key") == key and cached.get("sha256") == sha256_file(path):
            return cached | {"model_path": str(path), "report_path": str(report_path)}
    opts = params.method_options("retrain", seeds=1)
    res = run_method("retrain", UnlearnInputs(original, spec, data, split, params.seed, art, params.gates), opts)
    if len(split.forget_idx):
        evaluator = Evaluator.for_original(original, data, split, params.evaluation.mia_splits, params.seed)
        report = evaluator.report
    else:  # every request's records were erased from the data: nothing left out, nothing to measure on D_f
        def report(model) -> dict:
            logits = predict(model, data.x_test)
            acc = accuracy(logits, data.y_test)
            return {"test_acc": acc, "test_retained_acc": acc,
                    "per_class_test_acc": per_class_accuracy(logits, data.y_test, data.num_classes)}
    digest = save_model(path, res.model, spec)
    record = {"key": key, "method": "retrain", "sha256": digest, "report": report(res.model),
              "reference": summarise([report(original)]), "options": res.options,
              "lineage": {"trueup": key}, "request_slug": "trueup"}
    write_json(report_path, record)
    return record | {"model_path": str(path), "report_path": str(report_path)}
