"""One MLflow run per stage execution: what it records, and how it ends, also when its process was killed.

Why a module apart from `hyperforget.publish.tracking` (which server, which experiment, calls that fail fast):
a run has a lifecycle of its own. It records flattened params and metrics, the git commit, the data hash and
the process that made it, and it always ends. A run that is left by an exception (or a signal the CLI turns
into one) is ended FAILED, never left RUNNING. A process killed outright (SIGKILL, out of memory, a lost
machine) cannot end its runs, so each run records the process that made it (`process.host`, `process.pid`,
`process.started`) and the next top-level run of the same request (`request` tag) ends those whose process is
gone as KILLED, saying why (`ended.reason`). Only a process on this host can be checked; a RUNNING run of
another host is left as it is.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import IntegrityError, StorageError
from hyperforget.config.overlays import flat_params
from hyperforget.config.params import Params
from hyperforget.publish.tracking import client, data_tags, experiment_id, git_tags, run_id_of, with_retries

HOST_TAG, PID_TAG, STARTED_TAG, ENDED_TAG = "process.host", "process.pid", "process.started", "ended.reason"
log = logging.getLogger(__name__)


class StageRun:
    """One MLflow run being recorded: metrics, artifacts and dicts go to it through the client."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client, self.run_id = client, run_id

    def _call(self, fn: Any) -> Any:
        return with_retries(fn, self.client.tracking_uri)

    def log_metrics(self, metrics: dict, prefix: str = "", step: int | None = None) -> dict[str, float]:
        """Log `metrics` (flattened) to this run; return what was logged."""
        from mlflow.entities import Metric

        flat = flatten_metrics(metrics, prefix)
        now, items = int(time.time() * 1000), list(flat.items())
        for start in range(0, len(items), 1000):
            batch = [Metric(k, v, now, step or 0) for k, v in items[start:start + 1000]]
            self._call(lambda b=batch: self.client.log_batch(self.run_id, metrics=b))
        return flat

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self._call(lambda b=items[start:start + 100]: self.client.log_batch(self.run_id, params=b))

    def log_artifacts(self, paths: Iterable[str | Path], artifact_path: str | None = None) -> None:
        """Log files (and whole folders) to this run under `artifact_path`."""
        for p in map(Path, paths):
            if p.is_dir():
                sub = f"{artifact_path}/{p.name}" if artifact_path else p.name
                self._call(lambda p=p, sub=sub: self.client.log_artifacts(self.run_id, str(p), sub))
            elif p.is_file():
                self._call(lambda p=p: self.client.log_artifact(self.run_id, str(p), artifact_path))
            else:
                raise IntegrityError(f"cannot log {p} to MLflow: it does not exist; re-run the stage that writes it")

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        folder, _, name = artifact_file.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(json.dumps(obj, indent=2, sort_keys=True))
            self.log_artifacts([path], folder or None)


@contextmanager
def start_stage_run(params: Params, art: Artifacts, stage: str, parent: Any = None,
                    tags: dict[str, str] | None = None) -> Iterator[StageRun]:
    """One MLflow run named `stage` in the dataset's experiment, with flattened params and tags, nested
    under `parent` (a StageRun or run id) if given. Ended FINISHED, or FAILED if the block raises
    (including KeyboardInterrupt and the SystemExit the CLI turns SIGTERM into)."""
    c = client(params, art)
    run_tags = {"mlflow.runName": stage, "stage": stage, "request": params.forget.slug(),
                **git_tags(art.root), **data_tags(art.card), **process_tags(), **(tags or {})}
    parent_id = run_id_of(parent)
    if parent_id is not None:
        run_tags["mlflow.parentRunId"] = parent_id
    exp = with_retries(lambda: experiment_id(params, c), c.tracking_uri)
    if parent_id is None:  # a request (or stage) starts again: first end what a killed attempt left RUNNING
        end_dead_runs(c, exp, run_tags["request"], f"{stage} ran again")
    run = with_retries(lambda: c.create_run(exp, run_name=stage, tags=run_tags), c.tracking_uri)
    stage_run = StageRun(c, run.info.run_id)
    try:
        stage_run.log_params(flat_params(params))
        yield stage_run
    except BaseException:
        _end(c, stage_run.run_id, "FAILED")
        raise
    _end(c, stage_run.run_id, "FINISHED")


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of process `pid`: /proc/<pid>/stat fields 3 and 22 (the start in clock ticks after
    boot); None where it cannot be read (no such process, no /proc, hidden by the mount)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0], fields[19]
    except (OSError, IndexError):
        return None


def process_tags() -> dict[str, str]:
    """Which process makes a run: host, pid and its start time (so a reused pid is not taken for the dead one)."""
    stat = _stat(os.getpid())
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), STARTED_TAG: stat[1] if stat else ""}


def process_gone(tags: dict[str, str]) -> str | None:
    """Why the process that made a run (its `process_tags`) is gone, or None when it may be alive (it is, or it
    is on another host, which cannot be checked from here)."""
    host, pid, started = tags.get(HOST_TAG), tags.get(PID_TAG, ""), tags.get(STARTED_TAG)
    if host is None or not (pid.isascii() and pid.isdigit()):
        return "it records no process (made by an earlier version)"
    if host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return f"process {pid} on {host} is gone"
    except (PermissionError, OverflowError):
        pass  # another user's process
    stat = _stat(int(pid))
    if stat and stat[0] in ("Z", "X"):
        return f"process {pid} on {host} is gone (a zombie)"
    if stat and started and stat[1] != started:
        return f"process {pid} on {host} is gone (its pid now names another process)"
    return None


def end_dead_runs(c: Any, experiment: str, request: str, why: str) -> list[str]:
    """End as KILLED each RUNNING run of `request` (`request` tag) in `experiment` whose process is gone, tagged
    with the reason; returns their ids."""
    query, ended, token = f"tags.request = '{request}' and attributes.status = 'RUNNING'", [], None
    while True:
        page = with_retries(lambda t=token: c.search_runs([experiment], query, max_results=1000, page_token=t),
                            c.tracking_uri)
        for run in page:
            gone = process_gone(run.data.tags)
            if gone is not None:
                with_retries(lambda r=run.info.run_id, g=gone: c.set_tag(r, ENDED_TAG, f"{g}; ended when {why}"),
                             c.tracking_uri)
                _end(c, run.info.run_id, "KILLED")
                ended.append(run.info.run_id)
        token = getattr(page, "token", None)
        if not token:
            break
    if ended:
        log.info("ended %d run(s) of %s left RUNNING by a process that is gone: %s", len(ended), request,
                 ", ".join(ended))
    return ended


def _end(c: Any, run_id: str, status: str) -> None:
    """End a run; a server that is down cannot be told, and must not hide the error that got us here."""
    try:
        with_retries(lambda: c.set_terminated(run_id, status), c.tracking_uri, attempts=2, base=0.5)
    except StorageError:
        if status == "FINISHED":
            raise


def flatten_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Numbers only, nested keys dotted, list items indexed: {"per_class_test_acc": [..]} →
    per_class_test_acc.0 … ; booleans become 0/1, strings are skipped."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_metrics(value, f"{name}."))
        elif isinstance(value, list | tuple):
            out.update(flatten_metrics({str(i): v for i, v in enumerate(value)}, f"{name}."))
        elif isinstance(value, bool | int | float) and not (isinstance(value, float) and math.isinf(value)):
            out[name] = float(value)
    return out
