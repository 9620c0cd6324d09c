"""prefect.yaml as `prefect deploy --all` reads it: each deployment runs a flow of this repository, under the
name the runbook and the integration tests use, on the work pool the local stack's worker serves. (Running a
deployment on a worker: tests/integration/test_deployment.py and test_request_lifecycle.py.)"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import yaml
from prefect import Flow

ROOT = Path(__file__).resolve().parents[2]


def _stack_work_pool() -> str:
    spec = importlib.util.spec_from_file_location("stack_for_deployments_test", ROOT / "infra" / "local" / "stack.py")
    stack = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stack)  # defines functions and constants; starts nothing
    return stack.WORK_POOL


def test_every_deployment_runs_a_flow_of_this_repository_on_the_stacks_work_pool():
    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    names, pool = set(), _stack_work_pool()
    for d in deployments:
        path, attribute = d["entrypoint"].split(":")
        assert (ROOT / path).is_file(), d["entrypoint"]
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), attribute)
        assert isinstance(flow, Flow), d["entrypoint"]
        names.add(f"{flow.name}/{d['name']}")
        assert d["work_pool"]["name"] == pool, d["entrypoint"]
    assert names == {"unlearn/default", "trueup/default", "build/default"}
