"""The `build` flow on the Dask task runner, as on a cluster: a `dask scheduler` and two `dask worker`
processes on 127.0.0.1 (HYPERFORGET_DASK_ADDRESS), every stage, the zoo and reference pool units as tasks on those
workers, each stage tracked in MLflow, and a second run that reuses everything (against the `full_stack` servers);
the pool the workers built is byte for byte the one the `pool` stage builds in one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.io import read_json, sha256_file
from hyperforget.config.overlays import load_params
from hyperforget.config.params import Params
from hyperforget.pipeline import stages as stages_mod
from hyperforget.publish import tracking

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_TWICE = """
import json, sys
from flows.build import build
print(json.dumps([build(sys.argv[1]), build(sys.argv[1])]))
"""


@pytest.fixture
def dask_cluster(tmp_path):
    """A scheduler and two single-threaded worker processes, as `dask scheduler` / `dask worker ADDRESS` start them
    on a cluster; their environment carries the session's run token, so they die with the test run."""
    from distributed import Client

    dask = Path(sys.executable).parent / "dask"
    port = local_stack_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}  # the workers import flows/ and hyperforget as the flow does
    logs = [open(tmp_path / f"dask-{n}.log", "w") for n in ("scheduler", "worker-1", "worker-2")]  # noqa: SIM115
    cmds = [[str(dask), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            *([str(dask), "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
               "--host", "127.0.0.1"] for _ in range(2))]
    started = []
    try:
        for cmd, log in zip(cmds, logs, strict=True):
            started.append(subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            yield address, client
    finally:
        for proc in reversed(started):
            proc.terminate()
        for proc in started:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.close()


def local_stack_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smallest(params_path: Path) -> Path:
    """The small project shrunk to what the build's shape needs (what the stages compute is pinned in unit tests):
    θ0 3 epochs, each zoo trajectory 4 steps keeping 2, each hypernetwork 4 steps, a pool of 3 retrains per class
    and 6 shadows (the fewest per-record LiRA takes)."""
    raw = yaml.safe_load(params_path.read_text())
    raw["train"]["epochs"] = 3
    raw["zoo"].update(steps=4, save_every=2)
    raw["hypernet"].update(steps=4, checkpoint_every=4)
    raw["pool"].update(class_retrains=3, shadows=6)
    params_path.write_text(yaml.safe_dump(raw))
    return params_path


def pool_bytes(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir()) if f.is_file()}


def test_build_flow_fans_zoo_and_pool_units_out_to_dask_workers_and_reruns_from_cache(
        full_stack, fresh_small_project, dask_cluster, tmp_path):
    address, client = dask_cluster
    smallest(fresh_small_project)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "HYPERFORGET_TASK_RUNNER": "dask",
           "HYPERFORGET_DASK_ADDRESS": address, "MLFLOW_DISABLE_TELEMETRY": "true"}
    started_ms = int(time.time() * 1000)  # selects this test's runs, asserts nothing about time
    r = subprocess.run([sys.executable, "-c", BUILD_TWICE, str(fresh_small_project)], cwd=REPO_ROOT, env=env,
                       capture_output=True, text=True, timeout=540)
    assert r.returncode == 0, r.stderr[-4000:]
    first, second = json.loads(r.stdout.strip().splitlines()[-1])

    artifacts = fresh_small_project.parent / "artifacts"
    assert first["zoo"]["resumed_units"] == 0 and first["zoo"]["counts"] == {"original": 1, "trajectory": 40,
                                                                            "retrain": 10}
    assert read_json(artifacts / "zoo" / "zoo.json")["complete"]
    assert set(first["hypernet"]) == {"dihyfo1", "dihyfo2"}
    assert first["compare"]["json"] == str(artifacts / "compare" / "comparison.json")
    assert "gradtau" in read_json(artifacts / "compare" / "comparison.json")["methods"]

    assert second["zoo"]["resumed_units"] == 11  # nothing rebuilt: every unit's shards verified on disk
    assert second["zoo"]["sha256"] == first["zoo"]["sha256"]
    assert second["hypernet"] == first["hypernet"] and second["compare"] == first["compare"]

    pool = artifacts / "pool"  # 10 class units (3 retrains each) and one chunk of 6 shadows
    assert first["pool"]["built_units"] == 11 and first["pool"]["files"] == 11
    assert first["pool"]["sha256"] == sha256_file(pool / "pool.json")
    assert second["pool"]["built_units"] == 0 and second["pool"]["sha256"] == first["pool"]["sha256"]
    assert first["pool"]["references"]["classes"] == 10  # what each class request reads beside the pool, measured
    assert len(list((artifacts / "requests").glob("*/pool_reference.json"))) == 10

    c = tracking.client(Params(), Artifacts(artifacts.parent))  # MLFLOW_TRACKING_URI: the stack's server
    exp = c.get_experiment_by_name("hyperforget/digits")
    runs = c.search_runs([exp.experiment_id], f"attributes.start_time >= {started_ms}")
    stages = sorted(run.data.tags["stage"] for run in runs)  # cached stages log nothing the second time
    assert stages == ["compare", "hypernet/dihyfo1", "hypernet/dihyfo2", "pool", "pool", "prepare", "train", "zoo",
                      "zoo"]

    done = client.run_on_scheduler(lambda dask_scheduler: {
        name: sum(tp.state_counts.values()) for name, tp in dask_scheduler.task_prefixes.items()})
    per_worker = client.run(lambda dask_worker: len(dask_worker.state.log))
    pool_per_worker = client.run(lambda dask_worker: len({e[0] for e in dask_worker.state.log if isinstance(e, tuple)
                                                          and str(e[0]).startswith("pool_unit")}))
    assert any("zoo_unit" in name and n >= 11 for name, n in done.items()), (done, per_worker)  # on this cluster
    assert any("pool_unit" in name and n >= 11 for name, n in done.items()), (done, pool_per_worker)
    assert len(per_worker) == 2 and all(n > 0 for n in per_worker.values()), per_worker  # both workers took tasks
    assert all(n > 0 for n in pool_per_worker.values()), pool_per_worker  # pool units on both of them

    # the same stage in one process (as `hyperforget pool` / `dvc repro pool` runs it) on a copy of the project
    copy = Artifacts(tmp_path / "copy")
    for folder in (copy.prepare, copy.train):
        shutil.copytree(artifacts / folder.name, folder)
    shutil.copy(fresh_small_project, copy.params)
    alone = stages_mod.pool(load_params(copy.params), copy)
    assert alone["built_units"] == 11 and alone["sha256"] == first["pool"]["sha256"]
    want = pool_bytes(copy.pool)
    assert {"pool.json", "plan.json"} <= set(want) and sum(n.endswith(".safetensors") for n in want) == 11
    assert pool_bytes(pool) == want  # every unit's safetensors, its sidecar, plan.json and pool.json
