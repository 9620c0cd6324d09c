"""MLflow in one place: which server, which experiment, and calls to it that fail fast with the fix.

Why a module: every stage, the registry and the flows must agree on the tracking URI, the
experiment (`<prefix>/<dataset>`), where a local store keeps artifacts, and what a run records
(flattened params, git commit, data hash). Nothing happens at import, and nothing here touches
MLflow's process-global state (the fluent API's tracking URI and active-run stack): every call goes
through an explicit `MlflowClient` for the project's URI, so two requests of two projects can run in
one process. A relative sqlite URI is resolved against the project root (`Artifacts`). The runs themselves
(one per stage execution, and how each ends) are `hyperforget.publish.runs`.

A remote server that does not answer fails fast with a StorageError that says how to start it; MLflow's own
HTTP retries (minutes by default) are capped, and an artifact upload that fails because the S3 store behind
the server is down says so (`diagnose`).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import StorageError
from hyperforget.config.params import Params

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
