#!/usr/bin/env python3
"""Start, stop and inspect the local stack (S3, MLflow, Prefect) on 127.0.0.1.

Stdlib only, so it runs before the project is installed:

    python infra/local/stack.py up [--services s3,mlflow,prefect] [--dir .stack] [--port-base 19000]
    python infra/local/stack.py status | down

Every service runs in its own session (process group) with a pid file under <dir>/run and a log
under <dir>/logs; `down` signals the whole group, so no child (uvicorn, workers) outlives it.
`up` writes <dir>/env (sourceable) and <dir>/env.json. Ports derive from one base (see PORTS).
A developer's `up` daemonises on purpose; tests set DIE_WITH_CALLER so each service dies with them (procs.py).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("s3", "mlflow", "prefect")  # "prefect" also runs a process worker ("worker")
# Offsets from --port-base. weed also binds each of its HTTP ports + 10000 for gRPC.
PORTS = {"master": 0, "volume": 1, "filer": 2, "s3": 3, "admin": 4, "mlflow": 5, "prefect": 6}
GRPC_OFFSET = 10000
DEFAULT_PORT_BASE = 19000
DEFAULT_CREDENTIALS = ("hyperforget", "hyperforget-secret")  # local dev only, never a real secret
TIMEOUTS = {"s3": 60.0, "mlflow": 120.0, "prefect": 180.0, "worker": 90.0}
WORK_POOL = "hyperforget"
_PROCS: dict[int, subprocess.Popen] = {}  # children started by this interpreter (reaped in down)
_STARTED: dict[str, float] = {}  # service -> monotonic spawn time, for the health timings
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# Tests set this: each service leader then gets SIGKILL when the thread that started it dies (prctl), and the
# tests' watchdog (procs.py) takes its children; `stack.py up` leaves it off, its services outlive it.
DIE_WITH_CALLER = False


def _load_procs():
    """procs.py beside this file, by path (infra/ is not a package; this file may run as a script)."""
    name = "hyperforget_local_procs"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("procs.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


procs = _load_procs()


class StackError(RuntimeError):
    """A service failed to start or the stack state is inconsistent; the message says where to look."""


def ports(port_base: int) -> dict[str, int]:
    return {name: port_base + off for name, off in PORTS.items()}


def service_ports(svc: str, port_base: int) -> list[int]:
    """The ports one service binds (weed: its HTTP ports and their gRPC twins)."""
    p = ports(port_base)
    if svc != "s3":
        return [p[svc]]
    weed = [p[k] for k in ("master", "volume", "filer", "s3", "admin")]
    return weed + [x + GRPC_OFFSET for x in weed]


def all_ports(port_base: int) -> list[int]:
    return sorted(x for s in SERVICES for x in service_ports(s, port_base))


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # like the servers: ignore TIME_WAIT
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_base(start: int = 20000, stop: int = 22760, shuffle: bool = True) -> int:
    """A base in [start, stop) whose derived ports are all free (for tests). The default range keeps
    weed's gRPC ports below Linux's ephemeral range; shuffling keeps concurrent sessions apart."""
    bases = list(range(start, stop, 10))
    if shuffle:
        random.shuffle(bases)
    for base in bases:
        if all(port_free(p) for p in all_ports(base)):
            return base
    raise StackError(f"no free port base in [{start}, {stop})")


def _binary(name: str) -> str:
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise StackError(f"`{name}` not found beside {sys.executable} nor on PATH; install the project's venv")
    return found


def _paths(state_dir: Path, svc: str) -> tuple[Path, Path]:
    return state_dir / "run" / f"{svc}.pid", state_dir / "logs" / f"{svc}.log"


def _alive(pgid: int) -> bool:
    """True while any process of the group we started (leader or child) survives; reaps zombies."""
    proc = _PROCS.get(pgid)
    if proc is not None and proc.poll() is not None:
        del _PROCS[pgid]
    elif proc is None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pgid, os.WNOHANG)
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _pid(state_dir: Path, svc: str) -> int | None:
    """Process group id of the running service, else None (a stale pid file is removed)."""
    pid_file = _paths(state_dir, svc)[0]
    try:
        pid = int(pid_file.read_text().strip())
        if _alive(pid):
            return pid
    except (FileNotFoundError, ValueError):
        pass
    pid_file.unlink(missing_ok=True)
    return None


def _reap(state_dir: Path, svc: str, pgid: int, ports_: list[int], timeout: float = 15.0) -> None:
    """Kill what is left of a service's process group (a leader killed by hand leaves workers dying) and
    wait until the group is gone and its ports are free. Why: a restart racing a dying group binds to a
    port still held, exits, and was reported as "exited during startup"."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while (_alive(pgid) or not all(port_free(x) for x in ports_)) and time.monotonic() < deadline:
        time.sleep(0.2)
    _paths(state_dir, svc)[0].unlink(missing_ok=True)


def _answers(url: str, tries: int = 4, pause: float = 0.5) -> bool:
    for i in range(tries):
        if _http_ok(url):
            return True
        if i < tries - 1:
            time.sleep(pause)
    return False


def _health_url(svc: str, p: dict[str, int]) -> str:
    return {"s3": f"http://127.0.0.1:{p['s3']}/healthz", "mlflow": f"http://127.0.0.1:{p['mlflow']}/health",
            "prefect": f"http://127.0.0.1:{p['prefect']}/api/health"}[svc]


def _http_ok(url: str, data: bytes | None = None) -> bool:
    req = urllib.request.Request(url, data=data, headers={"Accept": "application/json",
                                                          "Content-Type": "application/json"})
    try:
        with _NO_PROXY.open(req, timeout=3) as r:
            return 200 <= r.status < 300 and (data is None or bool(json.loads(r.read() or b"[]")))
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _tail(log: Path, n: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return "(no log)"


def _wait(state_dir: Path, svc: str, *checks: tuple[str, bytes | None]) -> None:
    """Poll until every check passes; fail fast if the process dies; print seconds since spawn."""
    t0, log = time.monotonic(), _paths(state_dir, svc)[1]
    while time.monotonic() - t0 < TIMEOUTS[svc]:
        if all(_http_ok(url, data) for url, data in checks):
            since = f"{time.monotonic() - _STARTED.pop(svc):5.1f} s after start" if svc in _STARTED else "(running)"
            print(f"{svc:8s} healthy {since}", file=sys.stderr)
            return
        if _pid(state_dir, svc) is None:
            raise StackError(f"{svc} exited during startup; see {log}:\n{_tail(log)}")
        time.sleep(0.5)
    raise StackError(f"{svc} not healthy after {TIMEOUTS[svc]:.0f} s ({checks[0][0]}); see {log} "
                     f"(`stack.py down` stops what was started):\n{_tail(log)}")


def _spawn(state_dir: Path, svc: str, argv: list[str], env: dict[str, str], cwd: Path) -> None:
    pid_file, log = _paths(state_dir, svc)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n=== {time.strftime('%F %T')} {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=cwd, start_new_session=True,
                                preexec_fn=procs.die_with_parent() if DIE_WITH_CALLER else None)
    _PROCS[proc.pid] = proc
    _STARTED[svc] = time.monotonic()
    pid_file.write_text(f"{proc.pid}\n")


def stack_env(port_base: int, services: list[str], access_key: str, secret_key: str, bucket: str) -> dict:
    """The variables clients need; only for the services requested."""
    p, env = ports(port_base), {"HYPERFORGET_STACK_PORT_BASE": str(port_base)}
    if "s3" in services:
        s3 = f"http://127.0.0.1:{p['s3']}"
        env |= {"HYPERFORGET_S3_ENDPOINT": s3, "MLFLOW_S3_ENDPOINT_URL": s3, "HYPERFORGET_S3_BUCKET": bucket,
                "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key,
                "AWS_DEFAULT_REGION": "us-east-1"}
    if "mlflow" in services:
        env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{p['mlflow']}"
    if "prefect" in services:
        env["PREFECT_API_URL"] = f"http://127.0.0.1:{p['prefect']}/api"
    return env


def _argv(svc: str, d: Path, p: dict[str, int], bucket: str) -> list[str]:
    if svc == "s3":
        return [_binary("weed"), "mini", f"-dir={d / 's3'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={p['master']}", f"-volume.port={p['volume']}", f"-filer.port={p['filer']}",
                f"-s3.port={p['s3']}", f"-admin.port={p['admin']}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-webdav=false", "-admin.ui=false", "-master.telemetry=false", f"-bucket={bucket}"]
    if svc == "mlflow":
        return [_binary("mlflow"), "server", "--backend-store-uri", f"sqlite:///{d / 'mlflow.db'}",
                "--artifacts-destination", f"s3://{bucket}/mlartifacts", "--host", "127.0.0.1",
                "--port", str(p["mlflow"]), "--workers", "1"]
    return [_binary("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(p["prefect"])]


def _start_worker(d: Path, env: dict) -> None:
    log = _paths(d, "worker")[1]
    log.parent.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([_binary("prefect"), "work-pool", "create", WORK_POOL, "--type", "process"],
                       env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    with open(log, "a") as f:
        f.write(r.stdout + r.stderr)
    if r.returncode != 0 and "already exists" not in (r.stdout + r.stderr):
        raise StackError(f"`prefect work-pool create {WORK_POOL}` failed; see {log}:\n{_tail(log)}")
    argv = [_binary("prefect"), "worker", "start", "--pool", WORK_POOL, "--name", f"{WORK_POOL}-local"]
    _spawn(d, "worker", argv, env, REPO_ROOT)


def up(services=SERVICES, state_dir: str | Path = ".stack", port_base: int | None = None) -> dict[str, str]:
    """Start the requested services (mlflow implies s3); leave running ones alone; return the env."""
    d = Path(state_dir).resolve()
    unknown = set(services) - set(SERVICES)
    if unknown:
        raise StackError(f"unknown services {sorted(unknown)}; choose from {', '.join(SERVICES)}")
    services = [s for s in SERVICES if s in set(services) | ({"s3"} if "mlflow" in services else set())]
    old = json.loads((d / "env.json").read_text()) if (d / "env.json").exists() else {}
    base = int(port_base or os.environ.get("HYPERFORGET_STACK_PORT_BASE") or DEFAULT_PORT_BASE)
    running = {s for s in (*SERVICES, "worker") if _pid(d, s)}
    if old:  # a service whose group is alive but does not answer is dying or hung: reap it, then start afresh
        old_ports = ports(int(old["HYPERFORGET_STACK_PORT_BASE"]))
        for svc in sorted(running - {"worker"}):
            if not _answers(_health_url(svc, old_ports)):
                _reap(d, svc, _pid(d, svc) or 0, service_ports(svc, int(old["HYPERFORGET_STACK_PORT_BASE"])))
                running.discard(svc)
    if not 1024 <= base <= 65535 - GRPC_OFFSET - max(PORTS.values()):
        raise StackError(f"port base {base} out of range: its ports and their +{GRPC_OFFSET} twins must fit in "
                         "1024..65535")
    if running and old and int(old["HYPERFORGET_STACK_PORT_BASE"]) != base:
        raise StackError(f"{sorted(running)} already run from {d} on port base {old['HYPERFORGET_STACK_PORT_BASE']}; "
                         f"run `stack.py down --dir {d}` first or use another --dir")
    keys = (os.environ.get("AWS_ACCESS_KEY_ID") or DEFAULT_CREDENTIALS[0],
            os.environ.get("AWS_SECRET_ACCESS_KEY") or DEFAULT_CREDENTIALS[1])
    if "s3" in running and "AWS_ACCESS_KEY_ID" in old:  # keep the credentials weed was started with
        keys = (old["AWS_ACCESS_KEY_ID"], old["AWS_SECRET_ACCESS_KEY"])
    bucket = old.get("HYPERFORGET_S3_BUCKET") if "s3" in running else None
    bucket = bucket or os.environ.get("HYPERFORGET_S3_BUCKET") or "hyperforget"
    env = stack_env(base, sorted(set(services) | running - {"worker"}), *keys, bucket)
    child = {**os.environ, **env, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
             "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "PREFECT_HOME": str(d / "prefect"),
             "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONUNBUFFERED": "1",
             "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # GenAI job runner: 7 idle processes, ~1 GB
    p = ports(base)
    busy = [x for s in services if s not in running for x in service_ports(s, base) if not port_free(x)]
    if busy:
        raise StackError(f"ports {busy} on 127.0.0.1 are in use; pick another --port-base (or stop what uses them)")
    for svc in services:  # s3 first and healthy (MLflow needs it), then MLflow and Prefect together
        if svc not in running:
            (d / svc).mkdir(parents=True, exist_ok=True)
            _spawn(d, svc, _argv(svc, d, p, bucket), child, d / svc)
        if svc == "s3":  # healthy, and the bucket exists (the filer lists it)
            _wait(d, "s3", (f"http://127.0.0.1:{p['s3']}/healthz", None),
                  (f"http://127.0.0.1:{p['filer']}/buckets/{bucket}/", None))
    if "mlflow" in services:
        _wait(d, "mlflow", (f"{env['MLFLOW_TRACKING_URI']}/health", None))
    if "prefect" in services:
        _wait(d, "prefect", (f"{env['PREFECT_API_URL']}/health", None))
        beat = {}  # a fresh worker must heartbeat after its start (old records persist in the db)
        if "worker" not in running:
            beat = {"workers": {"last_heartbeat_time": {"after_": datetime.now(UTC).isoformat()}}}
            _start_worker(d, child)
        filt = f"{env['PREFECT_API_URL']}/work_pools/{WORK_POOL}/workers/filter"
        _wait(d, "worker", (filt, json.dumps(beat).encode()))
    lines = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
    _atomic_write(d / "env", lines)
    _atomic_write(d / "env.json", json.dumps(env, indent=2, sort_keys=True) + "\n")
    return env


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")  # 0600: it holds the S3 secret
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(text)
    os.replace(tmp, path)


def down(state_dir: str | Path = ".stack", grace: float = 15.0) -> list[str]:
    """SIGTERM every process group we started, SIGKILL after `grace` s; remove pid files."""
    d = Path(state_dir).resolve()
    groups = {svc: pid for svc in ("worker", "prefect", "mlflow", "s3") if (pid := _pid(d, svc))}
    tree = procs.members(None, groups.values())  # and children that left the group (a flow run's own session)
    for pid in groups.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_alive(g) for g in groups.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in groups.values():
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.1)
    procs.stop(procs.alive(tree), grace=5.0)
    for svc in groups:
        _paths(d, svc)[0].unlink(missing_ok=True)
    old = json.loads((d / "env.json").read_text()) if (d / "env.json").exists() else {}
    if "HYPERFORGET_STACK_PORT_BASE" in old:  # weed leaves its unix sockets in /tmp
        for port in all_ports(int(old["HYPERFORGET_STACK_PORT_BASE"])):
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)
    return list(groups)


def status(state_dir: str | Path = ".stack") -> dict[str, int | None]:
    d = Path(state_dir).resolve()
    return {svc: _pid(d, svc) for svc in (*SERVICES, "worker")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["up", "down", "status"])
    ap.add_argument("--services", default=",".join(SERVICES), help="comma-separated: s3,mlflow,prefect")
    ap.add_argument("--dir", default=".stack", help="state dir: pid files, logs, data, env (default .stack)")
    ap.add_argument("--port-base", type=int, default=None,
                    help=f"first port (env HYPERFORGET_STACK_PORT_BASE, default {DEFAULT_PORT_BASE})")
    a = ap.parse_args(argv)
    try:
        if a.command == "up":
            up([s.strip() for s in a.services.split(",") if s.strip()], a.dir, a.port_base)
            print(f"stack up; run: source {Path(a.dir) / 'env'}")
        elif a.command == "down":
            print(f"stopped: {', '.join(down(a.dir)) or 'nothing was running'}")
        else:
            for svc, pid in status(a.dir).items():
                print(f"{svc:8s} {f'up (pid {pid})' if pid else 'down'}")
    except StackError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
