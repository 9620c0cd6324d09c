"""Every held-out set × every method, from several runs on the same sets and the same references.

On the deployed CNN one run of every method over 24 sets costs more than a session of these cores, so the
held-out study's methods ran in several `bench/set_erasure.py` runs on one project, each reading the sets'
3-retrain references from its cache. That is one experiment only if every run judged the same sets against the
same references: `merge` checks it (the same sets in the same order; on every set, the reference row's numbers
equal to the last digit, which a reference trained again would not give) and refuses otherwise, naming the run
and the set. A row that two runs share (a DiHyFo row run again beside other methods, each run's own true
retrain) is kept once per run, labelled by the run, and the table says whether their verdicts agree: the same
seeds must give the same verdict; times compare only within a run (each run's machine is in its JSON).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hyperforget.base.errors import DataError
from hyperforget.studies.heldout import summarise_sets

SHORT = {"forget_acc": "forget", "retained_test_acc": "retained", "mia": "MIA", "lira_auc": "LiRA↑",
         "lira_auc_low": "LiRA↓", "probe_forget_acc": "probe", "probe_forget_logit": "probe-conf",
         "relearn_steps_m10": "fast10", "relearn_steps_m10_high": "slow10", "relearn_steps_m100": "fast100",
         "relearn_steps_m100_high": "slow100", "diverged": "NaN"}
"""A failed check's name in a table cell: LiRA too high/low, relearning at m = 10/100 too fast (like θ0) or too
slow (over-forgotten), the probe's accuracy or its confidence, NaN weights (the method diverged)."""


def merge(runs: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """One matrix from `runs` (set_erasure JSONs; `names[i]` names run i, e.g. its file): per set, every run's
    rows as columns; a row name two runs share becomes "row [name]" in each. Raises DataError when the runs
    did not judge the same sets against the same references."""
    if not runs or len(runs) != len(names):
        raise DataError("give at least one run, and one name per run")
    for run, name in zip(runs, names, strict=True):
        _check_shape(run, name)
    first = runs[0]
    sets = [sorted(s["classes"]) for s in first["sets"]]
    for run, name in zip(runs[1:], names[1:], strict=True):
        other = [sorted(s["classes"]) for s in run["sets"]]
        if other != sets:
            raise DataError(f"{name} judged other sets than {names[0]} ({len(other)} against {len(sets)}; first "
                            f"difference: {_first_difference(other, sets)}): merge runs of one --sets/--count only")
    for i, classes in enumerate(sets):
        ref = first["sets"][i]["rows"]["reference"]
        for run, name in zip(runs[1:], names[1:], strict=True):
            if run["sets"][i]["rows"]["reference"] != ref:
                raise DataError(f"set {classes}: {name}'s reference differs from {names[0]}'s (retained accuracy "
                                f"{run['sets'][i]['rows']['reference'].get('retained_acc')} against "
                                f"{ref.get('retained_acc')}): the runs were not judged by the same retrains")
    shared = Counter(row for run in runs for row in run["rows"])
    columns = [(r, row, row if shared[row] == 1 else f"{row} [{name}]")
               for r, (run, name) in enumerate(zip(runs, names, strict=True)) for row in run["rows"]]
    matrix = [{"classes": classes, "reference": first["sets"][i]["rows"]["reference"],
               "cells": {label: runs[r]["sets"][i]["rows"][row] for r, row, label in columns}}
              for i, classes in enumerate(sets)]
    repeats = {row: _agreement(matrix, [label for _, rw, label in columns if rw == row])
               for row, n in shared.items() if n > 1}
    described = [{"name": name, "command": run.get("command"), "machine": run.get("machine"),
                  "seconds": run.get("seconds"), "rows": run["rows"]} for run, name in zip(runs, names, strict=True)]
    return {"runs": described,
            "columns": [{"label": label, "row": row, "run": names[r]} for r, row, label in columns],
            "sets": matrix, "summary": {label: summarise(matrix, label) for _, _, label in columns},
            "repeats": repeats}


def summarise(matrix: list[dict[str, Any]], label: str) -> dict[str, Any]:
    """One column over the sets: the held-out study's summary of a row (`heldout.summarise_sets`: means, the
    share passing, checks failed, median time), with the sets passed counted and the worst set's Δ retrain."""
    cells = [s["cells"][label] for s in matrix]
    scored = [(c["delta"], s["classes"]) for s, c in zip(matrix, cells, strict=True) if c.get("delta") is not None]
    worst = min(scored, key=lambda t: t[0]) if scored else (None, None)
    return summarise_sets([{"rows": {label: c}} for c in cells])[label] | {
        "passed": sum(bool(c.get("passed")) for c in cells), "worst_delta": worst[0], "worst_set": worst[1]}


def cell(row: dict[str, Any]) -> str:
    """✓, or ✗ with the failed checks' short names (`SHORT`)."""
    if row.get("passed"):
        return "✓"
    return "✗ " + " ".join(SHORT.get(k, k) for k in row.get("failed") or ["?"])


def markdown(merged: dict[str, Any]) -> str:
    """The matrix (a row per set, a column per method) and the summary per method, as markdown."""
    labels = [c["label"] for c in merged["columns"]]
    lines = ["| set | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for s in merged["sets"]:
        lines.append(f"| {_braces(s['classes'])} | "
                     + " | ".join(cell(s["cells"][lab]) for lab in labels) + " |")
    n = len(merged["sets"])
    lines += ["", "| method | run | passes | mean Δ retrain | worst set | median s | checks failed (sets) |",
              "|---|---|---:|---:|---|---:|---|"]
    for c in merged["columns"]:
        m = merged["summary"][c["label"]]
        failed = sorted(m["failed_checks"].items(), key=lambda kv: (-kv[1], kv[0]))
        worst = "–" if m["worst_set"] is None else f"{100 * m['worst_delta']:+.2f} {_braces(m['worst_set'])}"
        lines.append(f"| {c['label']} | {c['run']} | {m['passed']}/{n} | "
                     + ("–" if m["delta"] is None else f"{100 * m['delta']:+.2f} points") + f" | {worst} | "
                     + ("–" if m["time_s"] is None else f"{m['time_s']:.2f}") + " | "
                     + (", ".join(f"{SHORT.get(k, k)} {v}" for k, v in failed) or "–") + " |")
    for row, agree in merged["repeats"].items():
        lines.append(f"\n`{row}` ran in {len(agree['labels'])} runs: the same verdict on {agree['same']} of {n} sets"
                     + (f"; differs on {', '.join(_braces(c) for c in agree['differ'])}" if agree["differ"] else ""))
    return "\n".join(lines) + "\n"


def _agreement(matrix: list[dict[str, Any]], labels: list[str]) -> dict[str, Any]:
    differ = [s["classes"] for s in matrix if len({bool(s["cells"][lab].get("passed")) for lab in labels}) > 1]
    return {"labels": labels, "same": len(matrix) - len(differ), "differ": differ}


def _check_shape(run: Any, name: str) -> None:
    """A set_erasure result: its row names, and per set the classes and a row each, the reference's included."""
    ok = (isinstance(run, dict) and isinstance(run.get("rows"), list) and isinstance(run.get("sets"), list)
          and all(isinstance(s, dict) and "classes" in s and isinstance(s.get("rows"), dict)
                  and {"reference", *run["rows"]} <= s["rows"].keys() for s in run["sets"]))
    if not ok:
        raise DataError(f"{name} is not a held-out run with a reference per set (its rows, and per set the "
                        "classes and every row): give the JSON that bench/set_erasure.py --json wrote")


def _braces(classes: list[int]) -> str:
    return "{" + ", ".join(map(str, classes)) + "}"


def _first_difference(a: list[list[int]], b: list[list[int]]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"set {i + 1}: {x} against {y}"
    return f"one has {abs(len(a) - len(b))} more"
