"""Does the dvc.lock a fresh clone's pipeline wrote match the committed one, up to what training's floats decide?

A fresh clone has no outputs, so `make run` runs every stage and writes their hashes into dvc.lock. Training
is reproducible bit for bit on one machine (the CI's second `dvc repro` checks that), not across CPUs: torch and
its BLAS pick their kernels by the CPU (an AMD EPYC without AVX-512 runs torch's AVX2 ones), and their sums round
differently, so θ0, the zoo and everything after them hash differently on another CPU with nothing changed
(measured: a fresh clone of a tree whose lock an Intel Xeon wrote, on an EPYC, 11 output hashes from θ0 on).
What a stale lock would show, and what must match, is machine-independent: every stage, its command, its
parameters, the hashes of its source dependencies (code, the raw data), and the paths it produces. The hashes
of what the stages produce, and of the dependencies that are such products, are this machine's.

    python .ci/lock_matches.py     # exit 0 and one line when they match; else the stages that differ, exit 1
"""

from __future__ import annotations

import subprocess
import sys

import yaml


def shape(lock: dict) -> dict:
    """Per stage what no CPU changes: command, params, source deps with their md5, dep and out paths."""
    made = set(_hashes(lock))

    def is_made(path: str) -> bool:
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in made)

    return {name: {"cmd": stage.get("cmd"), "params": stage.get("params"),
                   "deps": sorted((d["path"], None if is_made(d["path"]) else d.get("md5"))
                                  for d in stage.get("deps", [])),
                   "outs": sorted(o["path"] for o in stage.get("outs", []))}
            for name, stage in lock["stages"].items()}


def main() -> int:
    committed = yaml.safe_load(subprocess.run(["git", "show", "HEAD:dvc.lock"], capture_output=True, text=True,
                                              check=True).stdout)
    with open("dvc.lock") as f:
        written = yaml.safe_load(f)
    want, got = shape(committed), shape(written)
    if want != got:
        for name in sorted(set(want) | set(got)):
            if want.get(name) != got.get(name):
                print(f"dvc.lock stage {name!r}: committed {want.get(name)}\n  written {got.get(name)}")
        print("the committed dvc.lock is stale: run `dvc repro` and commit dvc.lock")
        return 1
    before, after = _hashes(committed), _hashes(written)
    changed = sum(before[path] != after[path] for path in before)
    print(f"dvc.lock matches the committed one in every stage, command, parameter and source; {changed} hashes of "
          "what the stages produce differ (this machine's floats)")
    return 0


def _hashes(lock: dict) -> dict[str, str | None]:
    """What each stage produces, by path, with the md5 this lock recorded for it."""
    return {o["path"]: o.get("md5") for stage in lock["stages"].values() for o in stage.get("outs", [])}


if __name__ == "__main__":
    sys.exit(main())
