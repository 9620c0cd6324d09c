"""DiHyFo pipeline stages: build the zoo, train a hypernetwork variant, compare DiHyFo on a request, and
report generalisation to held-out class pairs. Like `stages`, each reads `artifacts/`, writes there
atomically, logs one MLflow run and returns a JSON-able summary. The zoo is also offered in its three
steps (plan, one unit, finish) so the Prefect `build` flow can fan the units out as tasks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from hyperforget import stages
from hyperforget import zoo as zoo_mod
from hyperforget.config import ForgetConfig, Params
from hyperforget.data import Dataset, forget_split
from hyperforget.evaluate import compare, jsonable, write_report
from hyperforget.hypernet.diffusion import load_hypernet, train_hypernet
from hyperforget.hypernet.honesty import baseline_weights, honesty_report, prompt_alignment, zoo_spacing
from hyperforget.io import write_json
from hyperforget.metrics import Evaluator, gaps
from hyperforget.models import ModelSpec, flatten, load_flat
from hyperforget.unlearn import run_method
from hyperforget.unlearn.base import UnlearnInputs
from hyperforget.zoo import load_zoo

VARIANTS = ("dihyfo1", "dihyfo2")


def zoo_dir(root: Path = stages.ARTIFACTS) -> Path:
    return root / "zoo"


def hypernet_dir(variant: str, root: Path = stages.ARTIFACTS) -> Path:
    return root / "hypernet" / variant


def zoo_stage(params: Params, workers: int = 1) -> dict[str, Any]:
    """Build (or resume) the zoo from the prepared data and the original model θ0, `workers` units at once."""
    model, spec = stages.load_original()
    return _track_zoo(params, zoo_mod.build_zoo(model, spec, stages.load_data(), params.zoo, params.train, zoo_dir(),
                                                workers=workers))


def zoo_plan(params: Params) -> dict[str, Any]:
    """The zoo's number of work units and those still to build (see `zoo.plan_zoo`)."""
    model, spec = stages.load_original()
    todo = zoo_mod.plan_zoo(model, spec, stages.load_data(), params.zoo, params.train, zoo_dir())
    return {"units": len(zoo_mod.zoo_units(zoo_dir())), "todo": todo}


def zoo_unit(params: Params, unit: int) -> dict[str, Any]:
    model, spec = stages.load_original()
    return zoo_mod.build_unit(model, spec, stages.load_data(), params.zoo, params.train, zoo_dir(), unit)


def zoo_finish(params: Params, seconds: float, resumed: int) -> dict[str, Any]:
    return _track_zoo(params, zoo_mod.finish_zoo(zoo_dir(), seconds, resumed))


def _track_zoo(params: Params, summary: dict[str, Any]) -> dict[str, Any]:
    stages.track(params, "zoo", {k: summary[k] for k in ("rows", "shards", "counts", "resumed_units", "seconds")},
                 [zoo_dir() / zoo_mod.MANIFEST])
    return summary


def _alignment_requests(params: Params, num_classes: int) -> list[list[int]]:
    """Held-out pairs when the zoo keeps some out, else every single class (then seen in training)."""
    return [sorted(p) for p in params.zoo.holdout_pairs] or [[c] for c in range(num_classes)]


def hypernet_stage(params: Params, variant: str) -> dict[str, Any]:
    """Train one DiHyFo variant on the zoo; metrics: training summary and prompt alignment (R²) per request."""
    zoo, _ = load_zoo(zoo_dir())
    out = hypernet_dir(variant)
    cfg = params.hypernet.model_copy(update={"variant": variant})
    summary = train_hypernet(zoo, cfg, out)
    hypernet = load_hypernet(out, device="cpu")
    data, (_, spec) = stages.load_data(), stages.load_original()
    alignment = {"-".join(map(str, r)): prompt_alignment(hypernet, zoo, r, spec, data, seed=params.seed)
                 for r in _alignment_requests(params, data.num_classes)}
    metrics = {**{k: summary[k] for k in ("step", "final_loss", "seconds", "num_params", "num_tokens")},
               "held_out": bool(params.zoo.holdout_pairs), "alignment": alignment,
               "mean_r2": float(np.nanmean([a["r2"] for a in alignment.values()]))}
    write_json(out / "metrics.json", jsonable(metrics))
    stages.track(params, f"hypernet/{variant}", metrics, [out / "metrics.json"])
    return metrics


def run_pipeline(params: Params, variants: tuple[str, ...] = VARIANTS) -> dict[str, Any]:
    """prepare → train θ0 → zoo → hypernetworks, reusing what artifacts/ already holds (zoo and hypernet
    training resume, and refuse artifacts built with other settings). For benches and smoke runs."""
    p = stages.paths()
    if not p["dataset"].exists():
        stages.import_data(params)
        stages.prepare(params)
    if not p["model"].exists():
        stages.train(params)
    return {"zoo": zoo_stage(params), **{v: hypernet_stage(params, v) for v in variants}}


def _method_entry(ev: Evaluator, model: torch.nn.Module, reference: dict, info: dict[str, Any]) -> dict[str, Any]:
    report = ev.report(model)
    return {"report": report, "gaps": gaps(report, reference), "wall_time_s": None, "speedup": None,
            "steps": 0, "options": {}, "info": info}


def dihyfo_comparison(params: Params, classes: list[int], variants: tuple[str, ...] = VARIANTS,
                      methods: tuple[str, ...] = ("gradtau",), out_dir: Path | None = None) -> dict[str, Any]:
    """Both DiHyFo variants vs retrain, ∇τ and the retrieval baselines on one class request, each sample
    with its honesty record; written as comparison.{json,md,png} + honesty.json under artifacts/compare/."""
    data, (model, spec) = stages.load_data(), stages.load_original()
    zoo, rows = load_zoo(zoo_dir())
    split = forget_split(data, ForgetConfig(classes=classes))
    ev_cfg = params.evaluation
    result = compare(model, spec, data, split, [*methods, *variants], params.unlearn, ev_cfg.retrain_seeds,
                     ev_cfg.mia_splits, ev_cfg.seed)
    ev = Evaluator.for_original(model, data, split, ev_cfg.mia_splits, ev_cfg.seed)
    reference, spacing = result["retrain"]["summary"], zoo_spacing(zoo.weights)
    honesty = {}
    for variant in variants:
        opts = params.unlearn.options_for(variant)
        res = run_method(variant, UnlearnInputs(model, spec, data, split, ev_cfg.seed), opts)
        prompt = res.info["prompts"][res.info["candidates"]["prompt"][res.info["chosen"]]]
        hypernet = load_hypernet(opts.hypernet_path, device="cpu")
        report = honesty_report(hypernet, zoo, rows, flatten(res.model), classes, torch.tensor(prompt["target"]),
                                spec, data, spacing, seed=ev_cfg.seed, hi_pct=opts.hi_pct, lo_pct=opts.lo_pct)
        honesty[variant] = report
        for name, weights in baseline_weights(zoo, report).items():
            baseline = load_flat(spec.build(), weights).eval()
            result["methods"][f"{name} ({variant} prompt)"] = _method_entry(ev, baseline, reference, report[name])
    result = jsonable(result | {"honesty": honesty})
    out = out_dir or stages.paths()["compare"] / f"dihyfo-{ForgetConfig(classes=classes).slug()}"
    write_report(result, out)
    write_json(Path(out) / "honesty.json", result["honesty"])
    return result


def generalisation_report(params: Params, variants: tuple[str, ...] = VARIANTS) -> dict[str, Any]:
    """DiHyFo on the zoo's held-out pairs (never seen in training) against retraining from scratch."""
    if not params.zoo.holdout_pairs:
        return {"pairs": [], "note": "zoo.holdout_pairs is empty: no held-out requests to report"}
    data, (model, spec) = stages.load_data(), stages.load_original()
    zoo, _ = load_zoo(zoo_dir())
    table = [_pair_rows(params, data, model, spec, zoo, sorted(pair), variants) for pair in params.zoo.holdout_pairs]
    result = jsonable({"pairs": [r for rows in table for r in rows]})
    write_json(stages.paths()["compare"] / "dihyfo-generalisation.json", result)
    return result


def _pair_rows(params: Params, data: Dataset, model: torch.nn.Module, spec: ModelSpec, zoo: Any, pair: list[int],
               variants: tuple[str, ...]) -> list[dict[str, Any]]:
    ev_cfg = params.evaluation
    result = compare(model, spec, data, forget_split(data, ForgetConfig(classes=pair)), list(variants),
                     params.unlearn, ev_cfg.retrain_seeds, ev_cfg.mia_splits, ev_cfg.seed)
    ref = result["retrain"]["summary"]
    out = []
    for variant in variants:
        m = result["methods"][variant]
        hypernet = load_hypernet(params.unlearn.options_for(variant).hypernet_path, device="cpu")
        align = prompt_alignment(hypernet, zoo, pair, spec, data, seed=ev_cfg.seed)
        out.append({"pair": pair, "variant": variant, "forget_acc": m["report"]["forget_acc"],
                    "test_retained_acc": m["report"]["test_retained_acc"],
                    "retrain_test_retained_acc": ref["test_retained_acc"]["mean"],
                    "worst_retained_acc": m["report"]["worst_retained_acc"], "pass_rate": m["info"]["pass_rate"],
                    "avg_gap": m["gaps"]["avg_gap"], "r2": align["r2"], "r2_per_class": align["r2_per_class"]})
    return out
