"""Prefect flow `unlearn`: one deletion request → `hyperforget.answer.answer` (unlearn, gate, register,
export ONNX, upload to S3) → a Markdown artifact.

Why this shape: the flow is a shell. The same library call answers the request here, in
`hyperforget unlearn --register` and in the DVC `publish` stage, so all three leave the same records.
The task retries (bounded) because its I/O can fail transiently (an S3 or MLflow blip); a retry is
idempotent: it writes the same files and, keyed by this flow run's id, completes the registry version
its first attempt created instead of adding another. A model that fails its gates is registered
without an alias and never exported, and the flow then fails with the gate report as its state message,
so `prefect deployment run ... --watch` exits non-zero and says why.

The project is the folder holding `params_path`; each flow run writes under
`artifacts/requests/<request>/<method>/runs/<flow-run-id>/`, so concurrent requests never share a file,
and two flow runs of two projects in one process never touch each other's files.
"""

from __future__ import annotations

import re

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import Failed
from pydantic import StrictFloat, StrictInt

from hyperforget.answer import answer
from hyperforget.artifacts import Artifacts
from hyperforget.config import load_params
from hyperforget.errors import ConfigError


@task(name="answer", persist_result=False, retries=2, retry_delay_seconds=[5, 15])
def answer_request(params_path: str, overrides: dict, method: str | None, run: str) -> dict:
    """Returns plain data (nothing is pickled): the answer's record and its Markdown summary."""
    art = Artifacts.for_params(params_path)
    out = answer(load_params(params_path, overrides), art, method, run=run, register=True, request_key=run)
    return out.to_dict() | {"summary": out.summary, "reasons": out.gates.reasons}


def overrides(forget_classes: list[int] | None, forget_fraction: float | None) -> dict:
    if forget_classes is not None and forget_fraction is not None:
        raise ConfigError("give the flow parameter forget_classes or forget_fraction, not both")
    if forget_classes is not None:
        return {"forget.classes": list(forget_classes)}
    return {"forget.fraction": forget_fraction} if forget_fraction is not None else {}


@flow(name="unlearn")
def unlearn(forget_classes: list[StrictInt] | None = None, forget_fraction: StrictFloat | None = None,
            method: str | None = None, params_path: str = "params.yaml"):
    """Forget `forget_classes` (or a random `forget_fraction`) with `method`; publish if the gates pass.
    Parameters are strict: `[true]` or `["3"]` is refused, never read as class 1 or 3."""
    run = str(flow_run.get_id() or "local")
    out = answer_request(params_path, overrides(forget_classes, forget_fraction), method, run)
    reg = out["registered"]
    key = re.sub(r"[^a-z0-9-]+", "-", f"unlearn-{out['request']}-{out['method']}".lower())
    create_markdown_artifact(out["summary"], key=key, description=f"{reg['name']} v{reg['version']}")
    if not out["gates"]["passed"]:
        message = (f"{reg['name']} version {reg['version']} failed its gates: {'; '.join(out['reasons'])}; "
                   "registered without an alias and not exported")
        return Failed(message=message, data=out)
    return out
