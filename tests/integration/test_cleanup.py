"""A test run killed from outside (SIGTERM as CI sends it, SIGKILL, SIGTERM to an xdist controller) leaves
none of its processes running: not the servers of the full stack, not their workers (uvicorn), not the
child a test was waiting on, nor that child's own child.

Each case runs pytest in a session of its own on a tiny test module that uses the real `full_stack`
fixture and then blocks in `subprocess.run` on a child that starts a grandchild (as a test waits on
`hyperforget unlearn`). Once the grandchild runs, it records every descendant of that pytest from /proc,
kills pytest and polls, a bounded number of times, until none of them is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not sys.platform.startswith("linux"),
                                                          reason="reads the process table from /proc")]

REPO_ROOT = Path(__file__).resolve().parents[2]
CHILD = ("import subprocess, sys, time; subprocess.Popen(['sleep', '600']); open(sys.argv[1], 'w').close(); "
         "time.sleep(600)")
INNER = f'''
import json, subprocess, sys
from pathlib import Path


def test_blocks_with_servers_and_a_child(full_stack, local_stack):
    out = Path(__file__).parent
    (out / "stack.json").write_text(json.dumps(local_stack.status(full_stack["STACK_DIR"])))
    subprocess.run([sys.executable, "-c", {CHILD!r}, str(out / "ready")], timeout=600)
'''


def _poll(done, attempts: int, pause: float = 0.5) -> bool:
    for _ in range(attempts):
        if done():
            return True
        time.sleep(pause)
    return done()


def _describe(pids) -> str:
    def cmd(pid: int) -> str:
        with contextlib.suppress(OSError):
            return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:160]
        return "?"

    return "\n".join(f"  {pid}: {cmd(pid)}" for pid in sorted(pids))


@pytest.mark.parametrize(("sig", "xdist"), [(signal.SIGTERM, False), (signal.SIGKILL, False), (signal.SIGTERM, True)],
                         ids=["sigterm", "sigkill", "sigterm-xdist-controller"])
def test_a_killed_test_run_leaves_none_of_its_processes_running(tmp_path, sig, xdist, local_stack):
    procs = local_stack.procs  # infra/local/procs.py: the /proc readers (members, alive)
    module = tmp_path / "test_inner.py"
    module.write_text(INNER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HYPERFORGET_STACK"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.integration.conftest",
            "--basetemp", str(tmp_path / "inner"), *(["-n", "1"] if xdist else []), str(module)]
    log = tmp_path / "inner.log"
    with open(log, "wb") as out:
        run = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True)
    tree: dict[int, int] = {}
    try:
        started = _poll(lambda: (tmp_path / "ready").exists() or run.poll() is not None, attempts=600)
        assert started and run.poll() is None, f"the inner run never got to its child:\n{log.read_text()[-3000:]}"
        leaders = {pid for pid in json.loads((tmp_path / "stack.json").read_text()).values() if pid}
        tree = procs.members(None, [run.pid])  # every descendant of pytest (pid → start time), not pytest
        assert leaders <= set(tree), f"stack leaders {leaders} not among pytest's descendants"
        assert any("sleep 600" in line for line in _describe(tree).splitlines()), "no grandchild `sleep` recorded"
        assert len(tree) >= len(leaders) + 3, f"no server worker recorded:\n{_describe(tree)}"  # + child, sleep

        os.kill(run.pid, sig)
        try:
            run.wait(timeout=300)  # a bound on the wait, not an assertion on the time
        except subprocess.TimeoutExpired:
            pytest.fail(f"pytest still running after {sig.name}:\n{log.read_text()[-3000:]}")
        _poll(lambda: not procs.alive(tree), attempts=120)
        left = procs.alive(tree)
        assert not left, (f"{len(left)} of the run's {len(tree)} processes outlived {sig.name} to pytest:\n"
                          f"{_describe(left)}\n--- inner log:\n{log.read_text()[-2000:]}")
        if sig == signal.SIGTERM and not xdist:
            assert run.returncode == pytest.ExitCode.INTERRUPTED, log.read_text()[-3000:]  # teardowns ran
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        procs.stop(procs.alive(tree), grace=1.0)  # whatever this test found left, so it leaks nothing itself
