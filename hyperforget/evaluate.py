"""Compare unlearning methods on one forget request against retraining from scratch.

`compare` runs the reference (retrain, several seeds in one vmapped batch, summarised as mean ± std)
and every requested method on the same inputs, evaluates each with one `metrics.Evaluator` (whose
fixed attack is fitted on the original), and returns one JSON-able result; `write_report` writes it
as comparison.json (DVC metrics), comparison.md and per_class.png; `format_table` prints it.

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
from torch import nn

from hyperforget.data import Dataset, ForgetSplit
from hyperforget.io import atomic_path, write_json, write_text
from hyperforget.metrics import Evaluator, gaps, summarise
from hyperforget.models import ModelSpec, flatten
from hyperforget.unlearn import run_method
from hyperforget.unlearn.base import UnlearnInputs
from hyperforget.unlearn.options import UnlearnConfig

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


def compare(original: nn.Module, spec: ModelSpec, data: Dataset, split: ForgetSplit, methods: list[str],
            unlearn_cfg: UnlearnConfig | None = None, retrain_seeds: int = 3, mia_splits: int = 10,
            seed: int = 0) -> dict[str, Any]:
    """Run the retrain reference and each method (errors propagate); see the module docstring."""
    cfg = unlearn_cfg or UnlearnConfig()
    inputs = UnlearnInputs(original, spec, data, split, seed)
    before = flatten(original).clone()
    ev = Evaluator.for_original(original, data, split, mia_splits, seed)
    reference = run_method("retrain", inputs, cfg.retrain.model_copy(update={"seeds": retrain_seeds}))
    single = run_method("retrain", inputs, cfg.retrain.model_copy(update={"seeds": 1}))
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
        res = run_method(name, inputs, cfg.options_for(name))
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


def plot_per_class(result: dict[str, Any], path: str | Path) -> Path:
    """Grouped bars: per-class test accuracy of the retrain mean and of each method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {"original": result["original"]["per_class_test_acc"], "retrain": result["retrain"]["per_class_test_acc"]}
    series |= {n: m["report"]["per_class_test_acc"] for n, m in result["methods"].items()}
    classes = np.arange(result["dataset"]["num_classes"])
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(8, len(classes) * len(series) * 0.18), 4))
    for i, (name, values) in enumerate(series.items()):
        ax.bar(classes + (i - (len(series) - 1) / 2) * width, [np.nan if v is None else v for v in values],
               width, label=name)
    ax.set(xticks=classes, xlabel="class", ylabel="test accuracy", ylim=(0, 1.05),
           title=f"{result['dataset']['name']}: {result['request']['label']}")
    ax.legend(ncols=min(5, len(series)), fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.15))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)


def write_report(result: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write comparison.json, comparison.md and per_class.png under `out_dir` (atomically)."""
    out = Path(out_dir)
    return {"json": write_json(out / "comparison.json", result),
            "md": write_text(out / "comparison.md", _markdown(result)),
            "png": plot_per_class(result, out / "per_class.png")}
