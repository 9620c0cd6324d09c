"""A request whose process was killed outright (SIGKILL: no handler runs) leaves its MLflow runs RUNNING; the
next run of that request ends them KILLED with the reason, and leaves alone the runs of a process still alive."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hyperforget.base.artifacts import Artifacts
from hyperforget.config.params import Params
from hyperforget.publish import runs, tracking

ROOT = Path(__file__).resolve().parents[2]
PARAMS = Params()  # forget.classes [3]: the runs' `request` tag is classes-3
KILLED_MID_REQUEST = """
import os, signal, sys
from hyperforget.base.artifacts import Artifacts
from hyperforget.config.params import Params
from hyperforget.publish import runs

params, art = Params(), Artifacts(sys.argv[1])
with runs.start_stage_run(params, art, "request/classes-3") as parent, \\
        runs.start_stage_run(params, art, "unlearn/gradtau", parent=parent) as child:
    print(parent.run_id, child.run_id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture
def project(tracked_project):
    return tracked_project, tracking.client(PARAMS, tracked_project)


def killed_request(art: Artifacts) -> list[str]:
    """The run ids of a request whose process was SIGKILLed while both its runs were open."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", KILLED_MID_REQUEST, str(art.root)], cwd=art.root, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr[-2000:]
    return done.stdout.split()


def test_a_killed_requests_runs_are_ended_killed_when_the_request_runs_again(project):
    art, c = project
    parent, child = killed_request(art)
    assert [c.get_run(r).info.status for r in (parent, child)] == ["RUNNING", "RUNNING"]  # what SIGKILL leaves
    with runs.start_stage_run(PARAMS, art, "request/classes-3") as again:
        pass
    for run_id in (parent, child):
        run = c.get_run(run_id)
        assert run.info.status == "KILLED" and run.info.end_time is not None
        assert run.data.tags[runs.ENDED_TAG].startswith(f"process {run.data.tags[runs.PID_TAG]} on ")
        assert "is gone; ended when request/classes-3 ran again" in run.data.tags[runs.ENDED_TAG]
    assert c.get_run(again.run_id).info.status == "FINISHED"


def test_the_runs_of_a_live_process_and_of_other_requests_stay_running(project):
    art, c = project
    with runs.start_stage_run(PARAMS, art, "request/classes-3") as live:  # this process: alive
        other = Params.model_validate({"forget": {"classes": [5]}})
        elsewhere = runs.start_stage_run(other, art, "request/classes-5")  # another request, left open
        open_elsewhere = elsewhere.__enter__()
        remote = c.create_run(c.get_experiment_by_name("hyperforget/digits").experiment_id, tags={
            "request": "classes-3", runs.HOST_TAG: "another-host", runs.PID_TAG: "1"}).info.run_id
        with runs.start_stage_run(PARAMS, art, "request/classes-3"):  # a second request of classes-3 at once
            assert c.get_run(live.run_id).info.status == "RUNNING"
            assert c.get_run(open_elsewhere.run_id).info.status == "RUNNING"
            assert c.get_run(remote).info.status == "RUNNING"  # another host's process cannot be checked
        elsewhere.__exit__(None, None, None)
    assert c.get_run(live.run_id).info.status == "FINISHED"


def test_a_run_recording_no_process_or_a_reused_pid_counts_as_dead():
    assert runs.process_gone({}) == "it records no process (made by an earlier version)"
    mine = runs.process_tags()
    assert runs.process_gone(mine) is None
    if Path("/proc/self/stat").exists():  # Linux: a pid now naming a process that started at another time
        assert "its pid now names another process" in runs.process_gone(mine | {runs.STARTED_TAG: "1"})
        child = subprocess.Popen([sys.executable, "-c", ""])  # exits, and stays a zombie until it is reaped
        stat = Path(f"/proc/{child.pid}/stat")
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
            time.sleep(0.05)
        assert runs.process_gone(mine | {runs.PID_TAG: str(child.pid)}).endswith("is gone (a zombie)")
        child.wait()
