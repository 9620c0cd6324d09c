"""MLflow in one place: which server, which experiment, one run per stage, flattened metrics.

Why a module: every stage, the registry and the flows must agree on the tracking URI, the
experiment (`<prefix>/<dataset>`), where a local store keeps artifacts, and what a run records
(flattened params, git commit, data hash). Nothing happens at import: the URI is read and set only
when a run or client is asked for, and mlflow itself is imported then.

A remote server that does not answer fails fast with a StorageError that says how to start it,
after a short bounded retry; MLflow's own HTTP retries (minutes by default) are capped too.
"""

from __future__ import annotations

import math
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hyperforget.config import Params, TrackingConfig, flat_params
from hyperforget.errors import IntegrityError, StorageError

# Set only where the caller has not: bound MLflow's HTTP retries (default 7 with factor 2), never
# phone home from a machine without internet, no progress bars for a handful of small files.
_MLFLOW_ENV_DEFAULTS = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
_FIX = "is the MLflow server running? `make stack-up` (then `source .stack/env`)"


def tracking_uri(params: Params | None = None) -> str:
    """MLFLOW_TRACKING_URI if set, else params.tracking.uri (default `sqlite:///mlruns.db`)."""
    cfg = params.tracking if params is not None else TrackingConfig()
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.uri


def artifact_location(uri: str, params: Params | None = None) -> str | None:
    """For a local sqlite store, artifacts go beside the database (`<db dir>/mlartifacts`);
    a server chooses its own (e.g. proxied S3), so None."""
    if not uri.startswith("sqlite:///"):
        return None
    root = Path((params.tracking if params is not None else TrackingConfig()).artifact_root)
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


def client(params: Params | None = None) -> Any:
    """An MlflowClient for the configured URI, after checking a remote server answers."""
    for key, value in _MLFLOW_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    uri = tracking_uri(params)
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
        return mlflow_client.create_experiment(name, artifact_location(tracking_uri(params), params))
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


def data_tags(card_path: str | Path | None = None) -> dict[str, str]:
    """`data.name` and `data.sha256` from the dataset card, if `prepare` has written one."""
    import json

    if card_path is None:
        from hyperforget.stages import paths

        card_path = paths()["card"]
    try:
        card = json.loads(Path(card_path).read_text())
        return {"data.name": str(card["name"]), "data.sha256": str(card["sha256"])}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def run_id_of(parent: Any) -> str | None:
    return getattr(getattr(parent, "info", None), "run_id", parent)


@contextmanager
def start_stage_run(params: Params, stage: str, parent: Any = None, tags: dict[str, str] | None = None
                    ) -> Iterator[Any]:
    """One MLflow run named `stage` in the dataset's experiment, logging flattened params and tags.

    `parent` (a run or run id) nests this run under it; with no parent, a run already active in this
    thread becomes the parent. Yields mlflow's ActiveRun.
    """
    import mlflow

    c = client(params)
    mlflow.set_tracking_uri(tracking_uri(params))
    parent_id = run_id_of(parent)
    run_tags = {"stage": stage, "request": params.forget.slug(), **git_tags(), **data_tags(), **(tags or {})}
    nested = parent_id is not None or mlflow.active_run() is not None
    with mlflow.start_run(experiment_id=experiment_id(params, c), run_name=stage, nested=nested,
                          parent_run_id=parent_id, tags=run_tags) as run:
        mlflow.log_params({k: str(v) for k, v in flat_params(params).items()})
        yield run


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


def log_metrics(metrics: dict, prefix: str = "", step: int | None = None) -> dict[str, float]:
    """Log `metrics` (flattened) to the active run; return what was logged."""
    import mlflow

    flat = flatten_metrics(metrics, prefix)
    if flat:
        mlflow.log_metrics(flat, step=step)
    return flat


def log_artifacts(paths: Iterable[str | Path], artifact_path: str | None = None) -> None:
    """Log files (and whole folders) to the active run under `artifact_path`."""
    import mlflow

    for p in map(Path, paths):
        if p.is_dir():
            mlflow.log_artifacts(str(p), f"{artifact_path}/{p.name}" if artifact_path else p.name)
        elif p.is_file():
            mlflow.log_artifact(str(p), artifact_path)
        else:
            raise IntegrityError(f"cannot log {p} to MLflow: it does not exist; re-run the stage that writes it")
