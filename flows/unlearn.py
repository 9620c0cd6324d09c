"""Prefect flow `unlearn`: one deletion request → unlearned model → gates → registry → ONNX in S3.

Why this shape: every task is one library call that returns paths, URIs and metrics (results are
not persisted, so nothing is pickled); only the I/O steps (register, export + upload) retry. A
version that fails its gates is still registered (the evidence is kept, without an alias) but is
never exported, and the flow then fails with the reasons, so `--watch` exits non-zero when nothing
shipped. Every request gets a Markdown artifact; all MLflow runs nest under one `request/<slug>` run.

It runs from the folder holding params_path (the project root), which must hold the prepared data
and the original model (the `build` flow or `dvc repro train`). Each flow run writes its model and report
under `artifacts/requests/<request>/<method>/runs/<flow-run-id>/`, so concurrent requests never share a
file; the registry run holds the same files.
"""

from __future__ import annotations

import re

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.build import project, task_runner
from hyperforget import publish, stages, tracking
from hyperforget.config import Params, load_params
from hyperforget.errors import ConfigError, GateFailed

plain = task(persist_result=False)
io_task = task(persist_result=False, retries=3, retry_delay_seconds=[2, 5, 10])


@plain(name="unlearn")
def unlearn_request(params: Params, method: str | None, parent: str) -> dict:
    """Outputs go to a folder of this flow run's own: concurrent requests never share a file."""
    return stages.unlearn(params, method=method, run_name=str(flow_run.get_id()), parent=parent)


@plain(name="gate")
def gate(request: dict, params: Params) -> dict:
    return publish.gate(request, params).to_dict()


@io_task(name="register")
def register(request: dict, verdict: dict, params: Params, parent: str) -> dict:
    return publish.register(request, verdict, params, parent=parent)


@io_task(name="export_and_upload")
def export_and_upload(name: str, version: str, params: Params) -> dict:
    return publish.export_and_upload(name, version, params)


def overrides(forget_classes: list[int] | None, forget_fraction: float | None) -> dict:
    if forget_classes is not None and forget_fraction is not None:
        raise ConfigError("give forget_classes or forget_fraction, not both")
    if forget_classes is not None:
        return {"forget.classes": list(forget_classes)}
    return {"forget.fraction": forget_fraction} if forget_fraction is not None else {}


@flow(name="unlearn", task_runner=task_runner())
def unlearn(forget_classes: list[int] | None = None, forget_fraction: float | None = None, method: str | None = None,
            params_path: str = "params.yaml") -> dict:
    """Forget `forget_classes` (or a random `forget_fraction`) with `method`; publish if the gates pass."""
    with project(params_path) as path:
        params = load_params(path, overrides(forget_classes, forget_fraction))
        with tracking.start_stage_run(params, f"request/{params.forget.slug()}") as parent:
            request = unlearn_request(params, method, parent.info.run_id)
            verdict = gate(request, params)
            registered = register(request, verdict, params, parent.info.run_id)
            exported = export_and_upload(registered["name"], registered["version"], params) \
                if verdict["passed"] else None
        key = re.sub(r"[^a-z0-9-]+", "-", f"unlearn-{request['request_slug']}-{request['method']}".lower())
        create_markdown_artifact(publish.summary_markdown(request, verdict, registered, exported), key=key,
                                 description=f"{registered['name']} v{registered['version']}")
        if not verdict["passed"]:
            raise GateFailed(f"{registered['name']} version {registered['version']} failed its gates: "
                             f"{'; '.join(verdict['reasons'])}; it was registered without an alias and not exported")
        return {"registered": registered, "exported": exported, "gates": verdict}
