"""Reports on the hypernetwork beyond the comparison table: honesty (nearest zoo checkpoint, retrieval
baselines, prompt alignment) per class request, and generalisation to the zoo's held-out pairs.

Benchmarks (`bench/dihyfo_mnist.py`) call these; the DVC pipeline does not, they take minutes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.io import jsonable, write_json
from hyperforget.config.options import VARIANTS
from hyperforget.config.params import ForgetConfig, Params
from hyperforget.hypernet.diffusion import load_hypernet
from hyperforget.hypernet.honesty import baseline_weights, honesty_report, prompt_alignment, zoo_spacing
from hyperforget.models.metrics import Evaluator, gaps
from hyperforget.models.nets import flatten, load_flat
from hyperforget.pipeline import answer
from hyperforget.pipeline.compare import compare, write_report
from hyperforget.unlearn import run_method
from hyperforget.unlearn.method import UnlearnInputs
from hyperforget.zoo.shards import load_zoo


def _method_entry(ev: Evaluator, model: torch.nn.Module, reference: dict, info: dict[str, Any]) -> dict[str, Any]:
    report = ev.report(model)
    return {"report": report, "gaps": gaps(report, reference), "wall_time_s": None, "speedup": None,
            "steps": 0, "options": {}, "info": info}


def _request(params: Params, art: Artifacts, classes: list[int]) -> tuple[Params, UnlearnInputs]:
    p = params.model_copy(update={"forget": ForgetConfig(classes=classes)})
    ctx = answer.context(p, art)
    return p, answer.inputs(p, art, ctx)


def comparison_folder(art: Artifacts, classes: list[int]) -> Path:
    """Where `dihyfo_comparison` writes a class request's report by default (artifacts/compare/dihyfo-<slug>)."""
    return art.compare / f"dihyfo-{ForgetConfig(classes=classes).slug()}"


def dihyfo_comparison(params: Params, art: Artifacts, classes: list[int], variants: tuple[str, ...] = VARIANTS,
                      methods: tuple[str, ...] = ("gradtau",), out_dir: Path | None = None) -> dict[str, Any]:
    """Both DiHyFo variants vs retrain, ∇τ and the retrieval baselines on one class request, each sample
    with its honesty record; written as comparison.{json,md,png} + honesty.json under artifacts/compare/."""
    p, inp = _request(params, art, classes)
    zoo, rows = load_zoo(art.zoo)
    result = compare(p, inp, [*methods, *variants])
    ev = Evaluator.for_original(inp.original, inp.data, inp.split, p.evaluation.mia_splits, p.seed)
    reference, spacing = result["retrain"]["summary"], zoo_spacing(zoo.weights)
    spec, data = inp.spec, inp.data
    honesty = {}
    for variant in variants:
        opts = p.method_options(variant)
        res = run_method(variant, inp, opts)
        prompt = res.info["prompts"][res.info["candidates"]["prompt"][res.info["chosen"]]]
        hypernet = load_hypernet(art.hypernet(variant), device="cpu")
        report = honesty_report(hypernet, zoo, rows, flatten(res.model), classes, torch.tensor(prompt["target"]),
                                spec, data, spacing, seed=p.seed, hi_pct=opts.hi_pct, lo_pct=opts.lo_pct)
        honesty[variant] = report
        for name, weights in baseline_weights(zoo, report).items():
            baseline = load_flat(spec.build(), zoo.assemble(weights)).eval()  # + θ0's frozen part, if partial
            result["methods"][f"{name} ({variant} prompt)"] = _method_entry(ev, baseline, reference, report[name])
    result = jsonable(result | {"honesty": honesty})
    out = Path(out_dir or comparison_folder(art, classes))
    write_report(result, out, out / "timing.json")
    write_json(Path(out) / "honesty.json", result["honesty"])
    return result


def generalisation_report(params: Params, art: Artifacts, variants: tuple[str, ...] = VARIANTS,
                          limit: int | None = 2) -> dict[str, Any]:
    """DiHyFo on the first `limit` held-out sets (never seen in training) against retraining from scratch,
    with prompt alignment; `hyperforget.studies.heldout` compares every held-out set with the baselines."""
    held = params.zoo.held_out(params.data.num_classes)[:limit]
    if not held:
        return {"pairs": [], "note": "zoo.holdout_sets is 0: no held-out requests to report"}
    zoo, _ = load_zoo(art.zoo)
    table = [_pair_rows(params, art, zoo, list(s), variants) for s in held]
    result = jsonable({"pairs": [r for rows in table for r in rows]})
    write_json(art.compare / "dihyfo-generalisation.json", result)
    return result


def _pair_rows(params: Params, art: Artifacts, zoo: Any, pair: list[int],
               variants: tuple[str, ...]) -> list[dict[str, Any]]:
    p, inp = _request(params, art, pair)
    result = compare(p, inp, list(variants))
    ref = result["retrain"]["summary"]
    out = []
    for variant in variants:
        m = result["methods"][variant]
        hypernet = load_hypernet(art.hypernet(variant), device="cpu")
        align = prompt_alignment(hypernet, zoo, pair, inp.spec, inp.data, seed=p.seed)
        out.append({"pair": pair, "variant": variant, "forget_acc": m["report"]["forget_acc"],
                    "test_retained_acc": m["report"]["test_retained_acc"],
                    "retrain_test_retained_acc": ref["test_retained_acc"]["mean"],
                    "worst_retained_acc": m["report"]["worst_retained_acc"], "pass_rate": m["info"]["pass_rate"],
                    "avg_gap": m["gaps"]["avg_gap"], "r2": align["r2"], "r2_per_class": align["r2_per_class"]})
    return out
