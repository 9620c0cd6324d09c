"""MLflow in one place: which server, which experiment, one run per stage, flattened metrics.

Why a module: every stage, the registry and the flows must agree on the tracking URI, the
experiment (`<prefix>/<dataset>`), where a local store keeps artifacts, and what a run records
(flattened params, git commit, data hash). Nothing happens at import, and nothing here touches
MLflow's process-global state (the fluent API's tracking URI and active-run stack): every call goes
through an explicit `MlflowClient` for the project's URI, so two requests of two projects can run in
one process. A relative sqlite URI is resolved against the project root (`Artifacts`).

A run that is left by an exception (or a signal the CLI turns into one) is ended FAILED, never left
RUNNING. A process killed outright (SIGKILL, out of memory, a lost machine) cannot end its runs, so each run
records the process that made it (`process.host`, `process.pid`, `process.started`) and the next top-level
run of the same request (`request` tag) ends those whose process is gone as KILLED, saying why
(`ended.reason`). Only a process on this host can be checked; a RUNNING run of another host is left as it is.

A remote server that does not answer fails fast with a StorageError that says how to start it; MLflow's own
HTTP retries (minutes by default) are capped, and an artifact upload that fails because the S3 store behind
the server is down says so (`diagnose`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import IntegrityError, StorageError
from hyperforget.config.params import Params, flat_params

# Set only where the caller has not: bound MLflow's HTTP retries (default 7 with factor 2), never
# phone home from a machine without internet, no progress bars for a handful of small files.
_MLFLOW_ENV_DEFAULTS = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
_NOT_RETRIED = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS")  # answers, not outages
_FIX = "is the MLflow server running? `make stack-up` (then `source .stack/env`)"
HOST_TAG, PID_TAG, STARTED_TAG, ENDED_TAG = "process.host", "process.pid", "process.started", "ended.reason"
log = logging.getLogger(__name__)


def tracking_uri(params: Params, art: Artifacts) -> str:
    """MLFLOW_TRACKING_URI if set, else params.tracking.uri, a relative sqlite path made absolute under the
    project root (so the store does not depend on the working directory)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(art.resolve(uri.removeprefix("sqlite:///")))
    return uri


def artifact_location(uri: str, params: Params) -> str | None:
    """For a local sqlite store, artifacts go beside the database (`<db dir>/mlartifacts`);
    a server chooses its own (e.g. proxied S3), so None."""
    if not uri.startswith("sqlite:///"):
        return None
    root = Path(params.tracking.artifact_root)
    if not root.is_absolute():
        root = Path(uri.removeprefix("sqlite:///")).resolve().parent / root
    return root.as_uri()


def check_server(uri: str, attempts: int = 3, timeout: float = 3.0) -> None:
    """GET <uri>/health with a short backoff; StorageError naming the URI and the fix if it never answers."""
    if not uri.startswith(("http://", "https://")):
        return
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # servers are on loopback
    err: Exception | None = None
    for i in range(attempts):
        try:
            with opener.open(f"{uri.rstrip('/')}/health", timeout=timeout) as r:
                if r.status == 200:
                    return
                err = RuntimeError(f"HTTP {r.status}")
        except (urllib.error.URLError, OSError) as e:
            err = e
        if i < attempts - 1:
            time.sleep(0.5 * 2**i)
    raise StorageError(f"cannot reach the MLflow tracking server at {uri} after {attempts} attempts ({err}); {_FIX}")


def client(params: Params, art: Artifacts) -> Any:
    """An MlflowClient for the project's URI, after checking a remote server answers."""
    for key, value in _MLFLOW_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    uri = tracking_uri(params, art)
    check_server(uri)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_name(params: Params) -> str:
    return f"{params.tracking.experiment_prefix}/{params.data.name}"


def experiment_id(params: Params, mlflow_client: Any) -> str:
    """Id of `<prefix>/<dataset>`, created on first use (a concurrent creator may win the race)."""
    from mlflow.exceptions import MlflowException

    name = experiment_name(params)
    exp = mlflow_client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return mlflow_client.create_experiment(name, artifact_location(mlflow_client.tracking_uri, params))
    except MlflowException:
        exp = mlflow_client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def git_tags(cwd: str | Path = ".") -> dict[str, str]:
    """`git.commit` and `git.dirty` of the working tree, or {} outside a repo / before a first commit."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        return {"git.commit": git("rev-parse", "HEAD"),
                "git.dirty": str(bool(git("status", "--porcelain", "--untracked-files=no"))).lower()}
    except (OSError, subprocess.SubprocessError):
        return {}


def data_tags(card_path: Path) -> dict[str, str]:
    """`data.name` and `data.sha256` from the dataset card, if `prepare` has written one."""
    try:
        card = json.loads(Path(card_path).read_text())
        return {"data.name": str(card["name"]), "data.sha256": str(card["sha256"])}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def run_id_of(parent: Any) -> str | None:
    return getattr(parent, "run_id", parent)


def _s3_outage(uri: str, error: Exception) -> StorageError | None:
    """The error to raise when the S3 store behind the MLflow server does not answer, else None."""
    from hyperforget.publish import s3 as storage

    endpoint = os.environ.get(storage.ENDPOINT_VAR)
    if endpoint and not storage.reachable(endpoint):
        return StorageError(f"the S3 store at {endpoint} is down, so the MLflow server at {uri} cannot store "
                            f"artifacts ({type(error).__name__}); start it with `make stack-up` (then "
                            "`source .stack/env`) and retry: the request resumes where it stopped")
    return None


def diagnose(uri: str, error: Exception) -> StorageError:
    """Why a tracking call failed, said as the fix: the MLflow server, or the S3 store behind it."""
    s3 = _s3_outage(uri, error)
    if s3 is not None:
        return s3
    try:
        check_server(uri, attempts=1)
    except StorageError as down:
        return down
    return StorageError(f"the MLflow server at {uri} refused a request: {str(error).splitlines()[0][:300]}")


def with_retries(fn: Any, uri: str, attempts: int = 3, base: float = 1.0) -> Any:
    """Call `fn`, retrying a failed tracking call with bounded backoff (1 s, 2 s); then say which server
    is down (`diagnose`). Only for idempotent calls (logging the same artifact twice is harmless)."""
    from mlflow.exceptions import MlflowException
    from requests.exceptions import RequestException

    for i in range(attempts):
        try:
            return fn()
        except (MlflowException, RequestException, OSError) as e:
            if isinstance(e, MlflowException) and e.error_code in _NOT_RETRIED:
                # an answer, unless S3 is down: MLflow's artifact proxy then lists nothing and says "not found"
                s3 = _s3_outage(uri, e)
                if s3 is not None:
                    raise s3 from e
                raise
            if i == attempts - 1:
                raise diagnose(uri, e) from e
            time.sleep(base * 2**i)
    raise AssertionError("unreachable")


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
