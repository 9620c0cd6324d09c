#!/usr/bin/env python3
"""Make every process a run starts die with the run, also when the run is killed (Linux; stdlib only).

Three pieces, used by the integration tests (tests/integration/conftest.py) and stack.py's `up` when tests
start the stack (`stack.DIE_WITH_CALLER`):

- `die_with_parent()`: a `preexec_fn` that asks the kernel to SIGKILL the child when the thread that
  started it dies (prctl PR_SET_PDEATHSIG): a server leader goes at once, even on `kill -9` of the run.
  Its own children (uvicorn workers, a flow run) do not inherit that, hence:
- a run token: the run puts `TOKEN_VAR=<token>` in its environment, so every process it starts after that,
  and their children, carry it (`/proc/<pid>/environ`), whatever their session, group or parent now;
- a watchdog (`start_watchdog`, this file run as a script): a process outside the run's process group
  that blocks on a pipe from the run. When the pipe closes (the run finished its teardown and closed it,
  or the run died: the kernel closes it either way) it stops every process carrying the token and every
  descendant of those and of the run: SIGTERM, then SIGKILL after a grace period.

Processes are identified by (pid, start time), so a pid reused by an unrelated process is never signalled.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

TOKEN_VAR = "HYPERFORGET_RUN_TOKEN"
PR_SET_PDEATHSIG = 1
PROC = Path("/proc")


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A preexec_fn tying the child's life to the calling thread's (Linux), else None. libc is loaded here,
    in the parent, so the child only makes one system call between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    libc, parent = ctypes.CDLL(None, use_errno=True), os.getpid()

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


def signal_me_when_parent_dies(sig: int) -> bool:
    """Ask for `sig` when our parent (the thread that started us) dies (Linux); False where the platform
    cannot."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)
    return True


def stat(pid: int) -> tuple[int, int, int, str] | None:
    """(ppid, process group, start time, state) of a live process, else None (gone or a zombie)."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) ": comm may hold spaces and parentheses
    state, ppid, pgid, start = fields[0], int(fields[1]), int(fields[2]), fields[19]
    return None if state in "ZX" else (ppid, pgid, int(start), state)


def table() -> dict[int, tuple[int, int, int, str]]:
    """Every live process: pid → (ppid, pgid, start time, state)."""
    out = {}
    for entry in PROC.iterdir() if PROC.is_dir() else ():
        if entry.name.isdigit() and (s := stat(int(entry.name))) is not None:
            out[int(entry.name)] = s
    return out


def carriers(token: str, procs: Iterable[int]) -> set[int]:
    """The processes whose environment at start held TOKEN_VAR=token."""
    needle = f"{TOKEN_VAR}={token}".encode()
    found = set()
    for pid in procs:
        with contextlib.suppress(OSError):
            if needle in (PROC / str(pid) / "environ").read_bytes().split(b"\0"):
                found.add(pid)
    return found


def descendants(roots: Iterable[int], tab: dict[int, tuple[int, int, int, str]]) -> set[int]:
    """The roots' children, grandchildren, ... (not the roots themselves)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_rest) in tab.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def members(token: str | None, roots: Iterable[int] = (), spare: Iterable[int] = ()) -> dict[int, int]:
    """pid → start time of the run's processes: those carrying the token, the roots' descendants and the
    descendants of those, and the members of any process group one of them leads; never `spare`."""
    tab, spare = table(), set(spare)
    found = (carriers(token, tab) if token else set()) | descendants(roots, tab)
    found |= descendants(found, tab)
    leaders = {pid for pid in found if tab.get(pid, (0, 0))[1] == pid}
    found |= {pid for pid, s in tab.items() if s[1] in leaders}
    return {pid: tab[pid][2] for pid in found - spare if pid in tab}


def alive(procs: dict[int, int]) -> dict[int, int]:
    """The processes of `procs` (pid → start time) still running: same pid, same start time, not a zombie."""
    return {pid: start for pid, start in procs.items() if (s := stat(pid)) is not None and s[2] == start}


def stop(procs: dict[int, int], grace: float = 5.0) -> dict[int, int]:
    """SIGTERM each, SIGKILL what is left after `grace` s; returns those that outlived SIGKILL (none)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in alive(procs):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while alive(procs) and time.monotonic() < deadline:
            time.sleep(0.1)
    return alive(procs)


def reap(token: str | None, roots: Iterable[int] = (), spare: Iterable[int] = (), grace: float = 5.0) -> list[int]:
    """Stop every process of the run (see `members`), twice over in case one forked meanwhile; returns the
    pids stopped."""
    stopped: list[int] = []
    spare = {os.getpid(), *spare}
    for _ in range(3):
        procs = members(token, roots, spare)
        if not procs:
            break
        stop(procs, grace)
        stopped += sorted(procs)
    return stopped


def _ancestors(pid: int) -> set[int]:
    out = set()
    while pid > 1 and pid not in out and (s := stat(pid)) is not None:
        out.add(pid)
        pid = s[0]
    return out


def start_watchdog(token: str, log: Path | None = None) -> subprocess.Popen:
    """Start the watchdog of the calling process (see the module docstring). Close its stdin (`release`) at
    the end of the run to reap what is left and wait for it; if the run dies, the kernel closes it."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 (the child holds it; closed below)
    try:
        return subprocess.Popen([sys.executable, __file__, "watch", token, str(os.getpid())],
                                stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        if log:
            out.close()


def release(watchdog: subprocess.Popen, timeout: float = 60.0) -> None:
    """End of the run: the watchdog reaps the run's leftovers; wait until it has."""
    with contextlib.suppress(BrokenPipeError, OSError):
        watchdog.stdin.close()
    try:
        watchdog.wait(timeout)
    except subprocess.TimeoutExpired:
        watchdog.kill()
        watchdog.wait()


def _watch(token: str, parent: int) -> int:
    """Block until the parent closes our stdin or dies, then reap its processes (not its ancestors)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the run's to handle
    spare = _ancestors(parent)
    while sys.stdin.buffer.read(65536):
        pass
    roots = [parent] if stat(parent) is not None else []  # a finished run's children with another environment
    stopped = reap(token, roots, spare)
    if stopped:
        print(f"watchdog of {parent}: stopped {len(stopped)} leftover processes {stopped}", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "watch":
        sys.exit(_watch(sys.argv[2], int(sys.argv[3])))
    sys.exit(f"usage: {sys.argv[0]} watch TOKEN PARENT_PID")
