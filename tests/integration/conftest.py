"""Fixtures that start real servers from infra/local/stack.py on a free port base and stop them.

`full_stack` (S3 + MLflow + Prefect with a worker, ~20 s) is session-scoped: it starts once in its own
temp dir, exports its variables for the session and is stopped (every process group, no orphans) when
the session ends, even if a test fails. `s3_stack` is the same stack (one set of variables per session);
a module that kills servers starts its own and restores the variables after it (test_outages).

Every process the session starts dies with it, however it ends (`run_dies_with_the_session`, autouse):
SIGTERM runs the teardowns as Ctrl-C does; on SIGKILL each server leader dies with the session (prctl
parent-death signal) and a watchdog outside the session's process group stops the rest (infra/local/procs.py).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]


def load_stack_module():
    """Import infra/local/stack.py by path (infra/ is not a package)."""
    name = "hyperforget_local_stack"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "infra" / "local" / "stack.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


stack = load_stack_module()
procs = stack.procs


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM → KeyboardInterrupt: pytest then runs every teardown, as on Ctrl-C (by default Python dies on
    SIGTERM at once and leaves the servers to init); a second SIGTERM must not cut the teardowns short."""
    signal.signal(signal.SIGTERM, lambda *_: None)  # not SIG_IGN: children would inherit an ignored SIGTERM
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session", autouse=True)
def run_dies_with_the_session(request: pytest.FixtureRequest,
                              tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's token (procs.TOKEN_VAR, in every child's environment) and the means by which none of
    its processes outlives it: a SIGTERM handler, parent-death signals, a watchdog that reaps at the end."""
    token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    watchdog = procs.start_watchdog(token, tmp_path_factory.getbasetemp() / f"watchdog-{os.getpid()}.log")
    previous = signal.signal(signal.SIGTERM, _interrupt)
    if hasattr(request.config, "workerinput"):  # an xdist worker: a dead controller (SIGTERM, SIGKILL) ends us too
        procs.signal_me_when_parent_dies(signal.SIGTERM)
    stack.DIE_WITH_CALLER = True
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(procs.TOKEN_VAR, token)
            yield token
    finally:
        stack.DIE_WITH_CALLER = False
        procs.release(watchdog)  # it stops what is left: leftovers of a test, or of a teardown cut short
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="session")
def local_stack():
    """The infra/local/stack.py module (up, down, status, free_port_base, service_ports)."""
    return stack


def _run_stack(tmp_path_factory: pytest.TempPathFactory, services: list[str], name: str) -> Iterator[dict]:
    state_dir = tmp_path_factory.mktemp(name)
    with pytest.MonkeyPatch.context() as mp:
        # fixed local dev credentials, never whatever AWS keys the developer's shell holds
        mp.setenv("AWS_ACCESS_KEY_ID", stack.DEFAULT_CREDENTIALS[0])
        mp.setenv("AWS_SECRET_ACCESS_KEY", stack.DEFAULT_CREDENTIALS[1])
        try:
            env = stack.up(services, state_dir, stack.free_port_base())
            for key, value in env.items():
                mp.setenv(key, value)
            yield {**env, "STACK_DIR": str(state_dir)}
        finally:
            stack.down(state_dir)


@pytest.fixture(scope="session")
def s3_stack(full_stack: dict) -> dict:
    """S3 (SeaweedFS) on 127.0.0.1 with bucket HYPERFORGET_S3_BUCKET: the full stack's. A second,
    S3-only stack would export its own endpoint for the rest of the session, and the tests that run
    requests on the full stack would then read another S3 than its MLflow server and worker write to."""
    return full_stack


@pytest.fixture(scope="session")
def full_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """S3 + MLflow (artifacts in S3) + Prefect server, `hyperforget` process pool and a worker."""
    yield from _run_stack(tmp_path_factory, ["s3", "mlflow", "prefect"], "full-stack")


def write_small_params(folder: Path) -> Path:
    """params.yaml of a throw-away project folder: the default pipeline (digits, every stage, both
    hypernetworks) shrunk to seconds: 10 epochs, a 2-trajectory zoo of the single classes (no class sets), 20
    hypernet steps, ∇τ compared, a reference pool of 3 retrains per class and 6 membership shadows."""
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["train"]["epochs"] = 10
    raw["evaluation"].update(retrain_seeds=3, methods=["gradtau"])  # 3: the fewest verification takes
    raw["pool"].update(class_retrains=3, shadows=6)  # the fewest: 2 + 1 held out per class; each record out of 3
    raw["zoo"].update(trajectories=2, steps=20, save_every=10, retrain_seeds=1, holdout_sets=1, class_sets=0)
    raw["hypernet"].update(steps=20, checkpoint_every=20)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def small_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small project (see write_small_params) shared by one test module's tests."""
    return write_small_params(tmp_path_factory.mktemp("project"))


@pytest.fixture
def fresh_small_project(tmp_path: Path) -> Path:
    """A small project of the test's own."""
    return write_small_params(tmp_path / "project")
