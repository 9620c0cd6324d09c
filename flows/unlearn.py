"""Prefect flow `unlearn`: one deletion request, through the ledger → `hyperforget.erasure.deletion.handle` (submit
unless known, then scoped → unlearned → verified → published → closed with a signed certificate, each step
recorded; the answering itself is `hyperforget.pipeline.answer.answer`: unlearn, gate, register, export, upload) →
a Markdown artifact.

Why this shape: the flow is a shell. The same library call answers the request here, in
`hyperforget unlearn --register` and in the DVC `publish` stage, so all three leave the same records.
The request is `request_id`, or a new one named after this flow run (`run-<flow run id>`) built from the
forget parameters (none: params' `forget:`; a random fraction becomes the record ids it draws). The task
retries (bounded) because its I/O can fail transiently (an S3 or MLflow blip), never on a user error; a
failed attempt leaves the request `failed` with the reason in the ledger, and a retry (the task's, or a new
flow run with the same `request_id`) starts it again and, keyed by the request id, completes the registry
version the first attempt created instead of adding another. A model that fails its gates is registered
without an alias and never exported, and the flow then fails with the gate report as its state message,
so `prefect deployment run ... --watch` exits non-zero. Any other refusal (bad input, or an S3 or MLflow outage
that outlasted the retries) fails the flow the same way: its state message is the one-line reason, which is
also logged, emitted as a `hyperforget.request.failed` event (the watch prints events, and only the state's
name at the end; it shows logs only where the server streams them) and written as the request's Markdown
artifact. `prefect flow-run inspect ID` shows the message, `prefect flow-run logs ID` the log, and
`hyperforget request show REQUEST` the ledger's `failed` step with the same reason.

The project is the folder holding `params_path`; each flow run writes under
`artifacts/requests/<request>/<method>/runs/<request-id>/`, so concurrent requests never share a file,
and two flow runs of two projects in one process never touch each other's files.
"""

from __future__ import annotations

from hyperforget.base.runtime import configure

configure()  # a flow module is its process's entry point: the settings go in before torch loads

import re

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from prefect.runtime import flow_run
from prefect.states import Failed
from pydantic import StrictFloat, StrictInt
from rich.markup import escape

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import ConfigError, GateFailed, HyperForgetError, StorageError
from hyperforget.config.overlays import load_params, parse_overrides
from hyperforget.erasure import deletion


def transient(task, task_run, state) -> bool:
    """Retry I/O failures (a server blip), never a user error: bad input or a failed gate fails the same again."""
    try:
        state.result()
    except StorageError:
        return True
    except HyperForgetError:
        return False
    except Exception:
        return True
    return True


@task(name="request", persist_result=False, retries=2, retry_delay_seconds=[5, 15], retry_condition_fn=transient)
def process_request(params_path: str, scope: dict, settings: dict, request_id: str, method: str | None,
                    requester: str) -> dict:
    """Returns plain data (nothing is pickled): where the request stands, the answer's record and summary."""
    art = Artifacts.for_params(params_path)
    try:
        out = deletion.handle(load_params(params_path, scope | settings), art, request_id, method, requester,
                              scope_given=bool(scope))
    except GateFailed as e:  # recorded `failed` in the ledger; the flow fails with the reasons, without retrying
        return {"request_id": request_id, "state": "failed", "gate_failure": str(e), "summary": str(e)}
    record = out.to_dict()
    return (record.pop("answer") or {}) | record  # the answer's record (gates, registered, exported) + the request


FAILED_EVENT = "hyperforget.request.failed"


def failure_reason(request_id: str, error: BaseException) -> str:
    """One line: the request, the kind of error and its message (a multi-line message joined)."""
    return f"request {request_id} failed: {type(error).__name__}: {' '.join(str(error).split())}"


def failed(request_id: str, reason: str, error: BaseException) -> Failed:
    """The flow's final state for a refused request: `reason` (one line) as its message, logged and emitted as
    an event, which `prefect deployment run --watch` prints (it shows events, not state messages). The state
    holds `error`, so the run's result raises it (a dict there would raise a TypeError about the dict)."""
    get_run_logger().error(reason)
    emit_event(FAILED_EVENT, resource={"prefect.resource.id": f"hyperforget.request.{request_id}",
                                       "prefect.resource.name": escape(reason)},  # the watch renders it as markup
               payload={"request_id": request_id, "reason": reason})
    return Failed(message=reason, data=error)


def overrides(forget_classes: list[int] | None, forget_fraction: float | None) -> dict:
    if forget_classes is not None and forget_fraction is not None:
        raise ConfigError("give the flow parameter forget_classes or forget_fraction, not both")
    if forget_classes is not None:
        return {"forget.classes": list(forget_classes)}
    return {"forget.fraction": forget_fraction} if forget_fraction is not None else {}


def setting_overrides(settings: list[str] | None) -> dict:
    """The flow's `settings` (`KEY=VALUE` items, as the CLI's `--set`) → overrides. The scope is not a setting: a
    known request must keep the scope it was submitted with, which only forget_classes / forget_fraction declare."""
    extra = parse_overrides(settings or [])
    scope = sorted(k for k in extra if k == "forget" or k.startswith("forget."))
    if scope:
        raise ConfigError(f"settings {scope}: give the request's scope as the flow parameter forget_classes or "
                          "forget_fraction, not as a setting")
    return extra


@flow(name="unlearn")
def unlearn(forget_classes: list[StrictInt] | None = None, forget_fraction: StrictFloat | None = None,
            method: str | None = None, params_path: str = "params.yaml", request_id: str | None = None,
            requester: str = "prefect", settings: list[str] | None = None):
    """Answer deletion request `request_id` (or a new one: forget `forget_classes`, or a random
    `forget_fraction`) with `method`; publish and close it if the gates pass. `settings` overrides params as the
    CLI's `--set` does, e.g. `--param settings='["evaluation.reference=per_request"]'` (what a class set needs).
    Parameters are strict: `[true]` or `["3"]` is refused, never read as class 1 or 3."""
    rid = request_id or f"run-{flow_run.get_id() or 'local'}"
    key = re.sub(r"[^a-z0-9-]+", "-", f"request-{rid}".lower())[:100]
    try:
        out = process_request(params_path, overrides(forget_classes, forget_fraction), setting_overrides(settings),
                              rid, method, requester)
    except HyperForgetError as e:  # after the task's retries: the flow fails with the reason, in one line
        reason = failure_reason(rid, e)
        state = failed(rid, reason, e)
        create_markdown_artifact(f"# Deletion request `{rid}`: failed\n\n{reason}\n", key=key,
                                 description=f"deletion request {rid}: failed")
        return state
    if out.get("new_public_key"):
        get_run_logger().warning("created the certificate signing key; its public key: %s", out["new_public_key"])
    gate = out.get("gate_failure")
    state = failed(rid, gate, GateFailed(gate)) if gate else None
    create_markdown_artifact(out["summary"], key=key, description=f"deletion request {rid}: {out['state']}")
    return state or out
