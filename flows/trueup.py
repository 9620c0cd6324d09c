"""Prefect flow `trueup`: approximate now, exact later → `hyperforget.erasure.trueup.trueup` → a Markdown artifact.

Why a flow: the true-up is a batch job (a retrain from scratch without every closed deletion request's
records), run on a schedule (`prefect.yaml`: a cron schedule, off until someone turns it on) or by hand; the
same library call is `hyperforget trueup`. It does nothing when no request closed since the last true-up.
The task retries (bounded) on I/O failures only; a retry reuses the retrained model on disk and, keyed by
the excluded records, the registry version a first attempt created.
"""

from __future__ import annotations

from hyperforget.base.runtime import configure

configure()  # a flow module is its process's entry point: the settings go in before torch loads

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed

from flows.unlearn import transient
from hyperforget.base.artifacts import Artifacts
from hyperforget.config.overlays import load_params
from hyperforget.erasure.trueup import trueup as run_trueup


@task(name="trueup", persist_result=False, retries=2, retry_delay_seconds=[10, 30], retry_condition_fn=transient)
def trueup_task(params_path: str, force: bool, promote: bool) -> dict:
    """Plain data: the registered version, the gate verdict, the requests it covered (or why it skipped)."""
    return run_trueup(load_params(params_path), Artifacts.for_params(params_path), force=force, promote=promote)


@flow(name="trueup")
def trueup(params_path: str = "params.yaml", force: bool = False, promote: bool = True):
    """Retrain without every closed request's records; register, export and (if gated) promote to champion."""
    out = trueup_task(params_path, force, promote)
    if out.get("skipped"):
        create_markdown_artifact(f"# True-up skipped\n\n{out['skipped']}\n", key="trueup")
        return out
    reg, gates = out["registered"], out["gates"]
    lines = [f"# True-up: `{reg['name']}` version {reg['version']}", "",
             f"Retrained without {out['excluded_records']} records of {len(out['all_closed'])} closed requests "
             f"(newly covered: {', '.join(out['requests']) or 'none'}).", "",
             f"## Gates: {'PASSED' if gates['passed'] else 'FAILED'}", "",
             *[f"- {'PASS' if c['passed'] else 'FAIL'} {n}: {c['detail']}" for n, c in gates["checks"].items()], "",
             f"champion: {'version ' + str(reg['version']) if out['champion'] else 'not moved'}"]
    create_markdown_artifact("\n".join(lines) + "\n", key="trueup")
    if not gates["passed"]:
        return Failed(message=f"{reg['name']} version {reg['version']} failed its gates: {'; '.join(gates['reasons'])}",
                      data=out)
    return out
