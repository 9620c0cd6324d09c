"""Compare unlearning methods on one forget request against retraining from scratch.

`compare` runs the reference (retrain, several seeds in one vmapped batch, summarised as mean ± std)
and every requested method on the same inputs, evaluates each with one `metrics.Evaluator` (whose
fixed attack is fitted on the original), and returns one JSON-able result; `write_report` writes it
as comparison.json (every deterministic number), headline.json (the few numbers `dvc metrics show`
prints), comparison.md and per_class.png (a methods × classes heatmap of the gap to retrain), and
the volatile part (wall times, speed-ups, the machine) to a separate timing file that DVC does not
hash; `load_report` joins them again and `format_table` prints the result (rendering: `hyperforget.pipeline.tables`).

Every model (θ0, the held-out retrain seed, each method) is also verified (`verification.verify`: LiRA on
D_f, a linear probe and relearn time on the forgotten classes) against the reference seeds and judged by
every gate (`gates.check_gates`): of the K = `evaluation.retrain_seeds` retrains the first K − 1 are LiRA's
shadows and the probe/relearn reference, the last is the held-out seed, so no retrain beyond the reference
is trained. The retrain row gives each verification metric as mean ± std over the seeds
(`verification.retrain_row`); the verification's wall time goes to the timing file (`verify_s`).

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
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hyperforget.base.errors import ConfigError
from hyperforget.base.io import jsonable, read_json, write_json, write_text
from hyperforget.config.params import Params
from hyperforget.data.datasets import Dataset, ForgetSplit
from hyperforget.models.metrics import Evaluator, gaps, summarise
from hyperforget.models.nets import flatten
from hyperforget.pipeline.tables import format_table as format_table  # re-exported: the CLI and stages print with it
from hyperforget.pipeline.tables import headline, markdown, plot_gaps
from hyperforget.unlearn import METHODS, run_method
from hyperforget.unlearn.method import UnlearnInputs
from hyperforget.verify.gates import check_gates
from hyperforget.verify.verdict import reference_metrics, retrain_row, shadows_and_held_out, verify


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
    t0 = time.perf_counter()
    vcfg = params.evaluation.verification
    shadows, held_out = shadows_and_held_out(reference.models)
    ref_verification = reference_metrics(shadows, data, split, vcfg)

    def verified(model: torch.nn.Module, report: dict[str, Any]) -> dict[str, Any]:
        """The model's verification against the shared reference and its gate verdict (all gates)."""
        v = verify(model, shadows, held_out, data, split, vcfg, reference=ref_verification)
        return {"verification": v, "gates": check_gates(report, summary, params.gates, v).to_dict()}

    original_report = ev.report(original)
    verification = {"shadows": len(shadows), "held_out_seed": reference.info["seeds"][-1],
                    "options": vcfg.model_dump(), "original": verified(original, original_report),
                    "held_out": verified(held_out, ref_reports[-1])}
    retrain_verification = retrain_row(reference.models, data, split, vcfg, reference=ref_verification)
    verify_s = time.perf_counter() - t0
    result: dict[str, Any] = {
        "request": describe_request(data, split),
        "dataset": {"name": data.name, "num_classes": data.num_classes,
                    **{s: len(getattr(data, f"y_{s}")) for s in ("train", "val", "test")}},
        "model": {"arch": spec.arch, "width": spec.width, "input_shape": list(spec.input_shape),
                  "params": sum(p.numel() for p in original.parameters())},
        "machine": machine(),
        "settings": {"seed": seed, "retrain_seeds": retrain_seeds, "mia_splits": mia_splits,
                     "gates": params.gates.model_dump()},
        "timing": {"t_retrain_s": t_retrain, "retrain_batch_s": reference.wall_time_s,
                   "basis": "speed-up = t_retrain / t_method; t_retrain = one retrain, plain loop"},
        "original": original_report,
        "retrain": {"summary": summary, "reports": ref_reports, "wall_time_s": t_retrain,
                    "per_class_test_acc": np.nanmean([r["per_class_test_acc"] for r in ref_reports], 0).tolist(),
                    "verification": retrain_verification, "options": reference.options, "info": reference.info},
        "verification": verification,
        "methods": {},
    }
    for name in methods:
        if name == "retrain":
            continue
        res = run_method(name, inputs, params.method_options(name))
        if not torch.equal(flatten(original), before):
            raise RuntimeError(f"unlearning method {name} modified the original model; methods must work on a copy")
        report = ev.report(res.model)
        t0 = time.perf_counter()
        checked = verified(res.model, report)
        verify_s += time.perf_counter() - t0
        result["methods"][name] = {"report": report, "gaps": gaps(report, summary), **checked,
                                   "wall_time_s": res.wall_time_s,
                                   "speedup": t_retrain / res.wall_time_s if res.wall_time_s > 0 else math.inf,
                                   "steps": res.steps, "options": res.options, "info": res.info}
    result["timing"]["verify_s"] = verify_s
    return jsonable(result)


VOLATILE = {"machine", "timing", "speedup", "seconds"}  # wall-clock facts: never in a file DVC hashes, nor is
# any key ending in `_s` (seconds: wall_time_s, sample_s, repair_s, …), so a new timing cannot make a rerun differ


def split_volatile(obj: Any) -> tuple[Any, Any]:
    """(stable, volatile): the same nested dict split by key, the VOLATILE keys going to the second."""
    if not isinstance(obj, dict):
        return obj, None
    stable, volatile = {}, {}
    for k, v in obj.items():
        if k in VOLATILE or (isinstance(k, str) and k.endswith("_s")):
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


def write_report(result: dict[str, Any], out_dir: str | Path, timing_path: str | Path) -> dict[str, Path]:
    """Write comparison.json, headline.json, comparison.md and per_class.png under `out_dir` and the
    volatile part to `timing_path` (all atomically)."""
    out = Path(out_dir)
    stable, volatile = split_volatile(result)
    return {"json": write_json(out / "comparison.json", stable),
            "headline": write_json(out / "headline.json", headline(stable)),
            "timing": write_json(timing_path, volatile),
            "md": write_text(out / "comparison.md", markdown(result)),
            "png": plot_gaps(stable, out / "per_class.png")}


def load_report(out_dir: str | Path, timing_path: str | Path) -> dict[str, Any]:
    """comparison.json joined with its timing file (if present)."""
    stable = read_json(Path(out_dir) / "comparison.json")
    timing = Path(timing_path)
    return merge(stable, read_json(timing)) if timing.exists() else stable
