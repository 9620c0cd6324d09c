"""Compare unlearning methods on one forget request against retraining from scratch.

`compare` runs the reference (retrain, several seeds in one vmapped batch, summarised as mean ± std)
and every requested method on the same inputs, evaluates each with one `metrics.Evaluator` (whose
fixed attack is fitted on the original), and returns one JSON-able result; `write_report` writes it
as comparison.json (every deterministic number), headline.json (the few numbers `dvc metrics show`
prints), comparison.md and per_class.png (a methods × classes heatmap of the gap to retrain), and
the volatile part (wall times, speed-ups, the machine) to a separate timing file that DVC does not
hash; `load_report` joins them again and `format_table` prints the result.

Speed-up = t_retrain / t_method, where t_retrain is the wall time of ONE retrain with the plain
training loop (timed separately with the same recipe): that is what a user pays per request. The
vmapped batch that trains the reference seeds is faster per model and reported beside it, but a
speed-up against it would flatter the methods' rivals rather than measure the alternative.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hyperforget.config import Params
from hyperforget.data import Dataset, ForgetSplit
from hyperforget.errors import ConfigError
from hyperforget.io import atomic_path, read_json, write_json, write_text
from hyperforget.metrics import Evaluator, gaps, summarise
from hyperforget.models import flatten
from hyperforget.unlearn import METHODS, run_method
from hyperforget.unlearn.method import UnlearnInputs

COLUMNS = [  # (key in a report, header)
    ("forget_acc", "forget acc"), ("retain_acc", "retain acc"), ("test_acc", "test acc"),
    ("test_retained_acc", "test acc retained"), ("test_forgotten_acc", "test acc forgotten"),
    ("worst_retained_acc", "worst retained"), ("mia", "MIA member"), ("mia_attack_acc", "attack acc"),
    ("forgetting_rate", "forgetting rate"),
]


def machine() -> dict[str, Any]:
    """What the timings were measured on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version()}


def describe_request(data: Dataset, split: ForgetSplit) -> dict[str, Any]:
    n_f, n = len(split.forget_idx), len(data.y_train)
    kind = "classes" if split.classes is not None else "random"
    label = (f"forget class{'es' if len(split.classes) > 1 else ''} {', '.join(map(str, split.classes))}"
             if split.classes is not None else f"forget a random {n_f / n:.0%} of the training set")
    return {"kind": kind, "classes": list(split.classes) if split.classes else None, "label": label,
            "n_forget": n_f, "n_retain": len(split.retain_idx), "forget_fraction": n_f / n}


def check_methods(methods: list[str]) -> None:
    """Refuse unknown method names before anything runs (not after minutes of retraining)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                          f"choose from {', '.join(METHODS)}")


def compare(params: Params, inputs: UnlearnInputs, methods: list[str]) -> dict[str, Any]:
    """Run the retrain reference and each method (errors propagate); see the module docstring."""
    check_methods(methods)
    original, spec, data, split = inputs.original, inputs.spec, inputs.data, inputs.split
    retrain_seeds, mia_splits, seed = params.evaluation.retrain_seeds, params.evaluation.mia_splits, params.seed
    before = flatten(original).clone()
    ev = Evaluator.for_original(original, data, split, mia_splits, seed)
    reference = run_method("retrain", inputs, params.method_options("retrain", seeds=retrain_seeds))
    single = run_method("retrain", inputs, params.method_options("retrain"))
    t_retrain = single.wall_time_s
    ref_reports = [ev.report(m) for m in reference.models]
    summary = summarise(ref_reports)
    result: dict[str, Any] = {
        "request": describe_request(data, split),
        "dataset": {"name": data.name, "num_classes": data.num_classes,
                    **{s: len(getattr(data, f"y_{s}")) for s in ("train", "val", "test")}},
        "model": {"arch": spec.arch, "width": spec.width, "input_shape": list(spec.input_shape),
                  "params": sum(p.numel() for p in original.parameters())},
        "machine": machine(),
        "settings": {"seed": seed, "retrain_seeds": retrain_seeds, "mia_splits": mia_splits},
        "timing": {"t_retrain_s": t_retrain, "retrain_batch_s": reference.wall_time_s,
                   "basis": "speed-up = t_retrain / t_method; t_retrain = one retrain, plain loop"},
        "original": ev.report(original),
        "retrain": {"summary": summary, "reports": ref_reports, "wall_time_s": t_retrain,
                    "per_class_test_acc": np.nanmean([r["per_class_test_acc"] for r in ref_reports], 0).tolist(),
                    "options": reference.options, "info": reference.info},
        "methods": {},
    }
    for name in methods:
        if name == "retrain":
            continue
        res = run_method(name, inputs, params.method_options(name))
        if not torch.equal(flatten(original), before):
            raise RuntimeError(f"unlearning method {name} modified the original model; methods must work on a copy")
        report = ev.report(res.model)
        result["methods"][name] = {"report": report, "gaps": gaps(report, summary), "wall_time_s": res.wall_time_s,
                                   "speedup": t_retrain / res.wall_time_s if res.wall_time_s > 0 else math.inf,
                                   "steps": res.steps, "options": res.options, "info": res.info}
    return jsonable(result)


def jsonable(obj: Any) -> Any:
    """NaN/inf → None and numpy scalars → Python, so the JSON is strict (DVC and browsers parse it)."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _num(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _cells(report: dict[str, Any]) -> list[str]:
    cells = [_num(report.get(k)) for k, _ in COLUMNS]
    if report.get("worst_retained_class") is not None:
        cells[[k for k, _ in COLUMNS].index("worst_retained_acc")] += f" (class {report['worst_retained_class']})"
    return cells


def rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and one row per model: original, retrain (mean ± std over seeds), then each method."""
    header = ["method", *(h for _, h in COLUMNS), "avg gap", "time s", "speed-up"]
    summary = result["retrain"]["summary"]
    out = [["original", *_cells(result["original"]), "", "", ""],
           [f"retrain ({result['settings']['retrain_seeds']} seeds)",
            *(f"{_num(summary[k]['mean'])} ± {_num(summary[k]['std'])}" if summary.get(k, {}).get("mean") is not None
              else "–" for k, _ in COLUMNS),
            "0", _num(result["timing"]["t_retrain_s"], 2), "1.0×"]]
    for name, m in result["methods"].items():
        speedup = "–" if m["speedup"] is None else f"{m['speedup']:.1f}×"
        out.append([name, *_cells(m["report"]), _num(m["gaps"].get("avg_gap")), _num(m["wall_time_s"], 2), speedup])
    return header, out


def format_table(result: dict[str, Any]) -> str:
    """A fixed-width table for a terminal."""
    header, body = rows(result)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    def fmt(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    title = f"{result['dataset']['name']}: {result['request']['label']}"
    return "\n".join([title, fmt(header), line, *(fmt(r) for r in body)])


def _markdown(result: dict[str, Any]) -> str:
    header, body = rows(result)
    md = lambda r: "| " + " | ".join(r) + " |"  # noqa: E731
    req, ds, mach, t = result["request"], result["dataset"], result["machine"], result["timing"]
    classes = list(range(ds["num_classes"]))
    per_class = [["retrain (mean)", *(_num(v, 2) for v in result["retrain"]["per_class_test_acc"])]]
    per_class += [[n, *(_num(v, 2) for v in m["report"]["per_class_test_acc"])] for n, m in result["methods"].items()]
    return "\n".join([
        f"# Unlearning comparison: {ds['name']}, {req['label']}",
        "",
        f"- Request: {req['label']} ({req['n_forget']} forget / {req['n_retain']} retain training samples)",
        f"- Data set: {ds['name']} ({ds['train']} train / {ds['val']} val / {ds['test']} test, "
        f"{ds['num_classes']} classes)",
        f"- Model: {result['model']['arch']} width {result['model']['width']} ({result['model']['params']} parameters)",
        f"- Machine: {mach['cpu']}, {mach['cores']} cores, torch {mach['torch']} with {mach['torch_threads']} "
        f"threads, {mach['platform']}",
        f"- Reference: retrain from scratch, {result['settings']['retrain_seeds']} seeds (one vmapped batch: "
        f"{t['retrain_batch_s']:.2f} s); t_retrain = {t['t_retrain_s']:.2f} s for one seed, plain loop; "
        "speed-up = t_retrain / t_method; times exclude evaluation.",
        "- MIA member: fraction of D_f the loss/entropy attack (fitted per model on D_r vs test) calls member; "
        "attack acc: D_f vs same-class test (0.5 = indistinguishable); forgetting rate: fixed attack fitted on the "
        "original; avg gap: mean |metric − retrain mean|.",
        "",
        md(header), md(["---"] * len(header)), *(md(r) for r in body),
        "",
        "Per-class test accuracy:",
        "",
        md(["method", *map(str, classes)]), md(["---"] * (len(classes) + 1)), *(md(r) for r in per_class),
        "",
    ])


def plot_gaps(result: dict[str, Any], path: str | Path) -> Path:
    """A methods × classes heatmap of per-class test accuracy minus the retrain mean (0 = like a retrain;
    blue below, red above), each cell labelled: readable with any number of methods."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = np.array([np.nan if v is None else v for v in result["retrain"]["per_class_test_acc"]], dtype=float)
    series = {"original": result["original"]["per_class_test_acc"]}
    series |= {n: m["report"]["per_class_test_acc"] for n, m in result["methods"].items()}
    gap = np.array([[np.nan if v is None else v for v in values] for values in series.values()], dtype=float) - ref
    classes = np.arange(result["dataset"]["num_classes"])
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(classes), 1.0 + 0.4 * len(series)))
    limit = max(0.05, float(np.nanmax(np.abs(gap)))) if np.isfinite(gap).any() else 1.0
    im = ax.imshow(gap, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    for (i, j), v in np.ndenumerate(gap):
        ax.text(j, i, "–" if np.isnan(v) else f"{v:+.2f}", ha="center", va="center", fontsize=7)
    ax.set(xticks=classes, yticks=range(len(series)), yticklabels=list(series), xlabel="class",
           title=f"{result['dataset']['name']}, {result['request']['label']}: test acc − retrain mean")
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return Path(path)


VOLATILE = {"machine", "timing", "wall_time_s", "speedup", "prompt_s", "sample_s", "score_s", "load_s", "seconds",
            "steps_per_s"}  # wall-clock facts: never in a file DVC hashes
HEADLINE = ("forget_acc", "test_retained_acc", "worst_retained_acc", "mia")


def split_volatile(obj: Any) -> tuple[Any, Any]:
    """(stable, volatile): the same nested dict split by key, the VOLATILE keys going to the second."""
    if not isinstance(obj, dict):
        return obj, None
    stable, volatile = {}, {}
    for k, v in obj.items():
        if k in VOLATILE:
            volatile[k] = v
            continue
        s, vol = split_volatile(v)
        stable[k] = s
        if vol:
            volatile[k] = vol
    return stable, volatile


def merge(stable: Any, volatile: Any) -> Any:
    if not isinstance(stable, dict) or not isinstance(volatile, dict):
        return stable if volatile is None else volatile
    return {**stable, **{k: merge(stable.get(k), v) for k, v in volatile.items()}}


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The few numbers worth a terminal: per model, forget / retained / worst-class accuracy, MIA, gap."""
    out = {"retrain": {k: result["retrain"]["summary"][k]["mean"] for k in HEADLINE
                       if k in result["retrain"]["summary"]}}
    for name, m in result["methods"].items():
        out[name] = {k: m["report"].get(k) for k in HEADLINE} | {"avg_gap": m["gaps"].get("avg_gap")}
    return out


def write_report(result: dict[str, Any], out_dir: str | Path, timing_path: str | Path) -> dict[str, Path]:
    """Write comparison.json, headline.json, comparison.md and per_class.png under `out_dir` and the
    volatile part to `timing_path` (all atomically)."""
    out = Path(out_dir)
    stable, volatile = split_volatile(result)
    return {"json": write_json(out / "comparison.json", stable),
            "headline": write_json(out / "headline.json", headline(stable)),
            "timing": write_json(timing_path, volatile),
            "md": write_text(out / "comparison.md", _markdown(result)),
            "png": plot_gaps(stable, out / "per_class.png")}


def load_report(out_dir: str | Path, timing_path: str | Path) -> dict[str, Any]:
    """comparison.json joined with its timing file (if present)."""
    stable = read_json(Path(out_dir) / "comparison.json")
    timing = Path(timing_path)
    return merge(stable, read_json(timing)) if timing.exists() else stable
