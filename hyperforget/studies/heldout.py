"""Held-out class sets: does the hypernetwork answer requests that no zoo checkpoint holds?

For every held-out set (`ZooConfig.held_out`: never in the zoo, the hypernetwork's training or any tuning)
one request is answered side by side by
- DiHyFo (each variant asked for): K candidates from one batched sampler call, the best that passes the
  validation gates (`unlearn.dihyfo`);
- `retrieval`: the zoo checkpoint whose recorded per-class val losses are nearest the most ambitious prompt
  (log1p space, `honesty.retrieval_row`);
- `retrieval@K`: for DiHyFo's K prompts, the nearest zoo checkpoints (as many per prompt level as DiHyFo
  samples there), selected on the validation split exactly as DiHyFo selects its samples: a lookup table
  with DiHyFo's selection;
- `retrieval+noise`: the retrieved checkpoint plus Gaussian noise whose norm is the zoo's median
  nearest-neighbour spacing;
- `retrieval+steps`: from the retrieved checkpoint, k Adam steps of the set's own unlearning loss (∇τ's
  bounded ascent, `objectives.bounded_ascent`, with the set's τ), k chosen so that its time equals DiHyFo's
  on that set (from a 10-step timing of the same loop; the zoo trajectories' middle lr and ascent weight);
- the methods named (∇τ `gradtau`, `salun`) with their params' options; the registry's `retrieval` (the
  nearest rows with DiHyFo-1's repairs, `unlearn.dihyfo` with `source: zoo`) is the row `retrieval+repairs`;
- retraining from scratch: the reference (`evaluation.retrain_seeds` seeds, the gates' baseline, trained for
  the set: the reference pool holds no retrain without a set) and one more true retrain with a seed of its
  own (`retrain`: the control that must pass, and its wall time `t_retrain`, what a user would pay).
Every model is evaluated on the test split (`metrics.Evaluator`) and judged as a request is: the release
gates (`gates.check_gates`) on the output metrics and the verification (`verify.verdict.verify`: LiRA on
D_f, the probe, relearn m = 10/100, against the reference's first K − 1 retrains and its held-out one), with
the test's power on the set (θ0 judged by the same test); Δ = retained test accuracy − the reference's
mean. Time is the
unlearning alone, as each method's `wall_time_s` (DiHyFo: prompt + sampling + scoring; loading the
hypernetwork and the zoo is setup, as loading θ0 is).

`zoo_level` and `zoo_trend` read finished studies of one model at several zoo sizes (`zoo.class_sets`) into the
trend of pass rate against the zoo's class sets and its cost (issue #24 item 3).

`step_sweep` measures DiHyFo's DDIM steps on *tuning* sets (`ZooConfig.tuning_sets`: neither in the zoo nor
held out), so the step count the held-out table uses is chosen without looking at a held-out set.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import DataError, Diverged
from hyperforget.base.io import jsonable, read_json, write_json
from hyperforget.config.options import EXACT_METHODS, VARIANTS
from hyperforget.config.params import ForgetConfig, Params
from hyperforget.hypernet.honesty import nearest, nearest_rows, retrieval_row, zoo_spacing
from hyperforget.hypernet.prompts import prompt_ladder, request_prompts
from hyperforget.models.nets import flatten, load_flat
from hyperforget.models.objectives import bounded_ascent, unseen_loss
from hyperforget.models.train import batch_order
from hyperforget.pipeline import answer
from hyperforget.pipeline.compare import machine
from hyperforget.unlearn import run_method
from hyperforget.unlearn.dihyfo import score, select
from hyperforget.unlearn.method import Timer
from hyperforget.verify.gates import check_gates
from hyperforget.verify.verdict import shadows_and_held_out, verify
from hyperforget.zoo.shards import INDEX, ZooTensors, load_zoo

BASELINES = ("retrieval", "retrieval@K", "retrieval+noise", "retrieval+steps")
HELD_OUT_RETRAIN_SEED = 500  # the control retrain's seed offset: none of the reference's (1000 + seed + i, i < K)
STEP_LR, STEP_ALPHA, STEP_BATCH = 4.5e-3, 0.11, 64  # middles of the zoo trajectories' ranges (zoo.lr, forget_weight)


class SetRun:
    """One class set's shared pieces: its inputs, evaluator, retrain reference (output summary, shadows, held-out
    retrain, the reference's verification metrics), the test's power and the rows of its table."""

    def __init__(self, params: Params, art: Artifacts, classes: Sequence[int], time_retrain: bool = True):
        self.classes = sorted(classes)
        self.params = params.model_copy(update={"forget": ForgetConfig(classes=self.classes)})
        self.ctx = answer.context(self.params, art)
        self.inputs = answer.inputs(self.params, art, self.ctx)
        self.evaluator = self.ctx.evaluator
        self.reference, models = answer.reference_models(self.params, art, self.ctx)  # cached by what determines it
        shadows, held_out = shadows_and_held_out(models)
        self.ref = answer.Reference(self.reference, shadows, held_out, None, {"kind": "per_request"})
        self.cfg = self.params.evaluation.verification
        original = answer.reference_verification(self.params, art, self.ctx, self.ref)
        self.ref_metrics = original["reference"]
        self.power = answer.test_power(self.params, self.ctx, self.ref, original)
        self.rows: dict[str, dict[str, Any]] = {  # the reference's mean: what Δ is measured from, not judged
            "reference": {"forget_acc": self.reference["forget_acc"]["mean"],
                          "retained_acc": self.reference["test_retained_acc"]["mean"], "delta": 0.0,
                          "worst_retained_acc": self.reference["worst_retained_acc"]["mean"],
                          "mia": self.reference["mia"]["mean"], "passed": None, "time_s": None}}
        if time_retrain:  # a true retrain with a seed none of the reference's: it must pass
            res = run_method("retrain", replace(self.inputs, seed=self.inputs.seed + HELD_OUT_RETRAIN_SEED),
                             self.params.method_options("retrain"))
            self.add("retrain", res.model, res.wall_time_s)

    def add(self, name: str, model: torch.nn.Module, seconds: float, **info: Any) -> dict[str, Any]:
        report = self.evaluator.report(model)
        checked = verify(model, self.ref.shadows, self.ref.held_out, self.ctx.data, self.ctx.split, self.cfg,
                         self.ref_metrics)
        verdict = check_gates(report, self.reference, self.params.gates, checked, power=self.power,
                              exact=name in EXACT_METHODS)
        row = {"forget_acc": report["forget_acc"], "retained_acc": report["test_retained_acc"],
               "delta": report["test_retained_acc"] - self.reference["test_retained_acc"]["mean"],
               "worst_retained_acc": report["worst_retained_acc"], "mia": report["mia"],
               "lira_auc": checked["lira_auc"], "probe": checked["probe_forget_acc"],
               **{k: checked[k] for k in checked if k.startswith("relearn_steps_m")},
               "passed": verdict.passed, "failed": [k for k, c in verdict.checks.items() if not c["passed"]],
               "reasons": verdict.reasons, "time_s": seconds, **info}
        self.rows[name] = row
        return row


def dihyfo_options(params: Params, variant: str, sample_steps: int | None = None):
    opts = params.method_options(variant)
    return opts.model_copy(update={"sample_steps": sample_steps}) if sample_steps else opts


def run_dihyfo(run: SetRun, variant: str, sample_steps: int | None, zoo: ZooTensors, spacing: float,
               name: str | None = None) -> dict[str, Any]:
    res = run_method(variant, run.inputs, dihyfo_options(run.params, variant, sample_steps))
    vec = flatten(res.model)
    dist = nearest(zoo.weights, (vec if zoo.index is None else vec[zoo.index])[None])[0].item()  # in zoo space
    i = res.info
    return run.add(name or variant, res.model, res.wall_time_s, pass_rate=i["pass_rate"], steps=i["sample_steps"],
                   sample_s=i["sample_s"], score_s=i["score_s"], prompt_s=i["prompt_s"],
                   nn_ratio=dist / spacing if spacing > 0 else None)


def ascent_steps(run: SetRun, start: torch.Tensor, tau: float, steps: int, seed: int) -> torch.nn.Module:
    """`steps` Adam steps of the set's bounded ascent from the flat weights `start` (batches of STEP_BATCH)."""
    inp = run.inputs
    model = load_flat(inp.spec.build(), start).train()
    opt = torch.optim.Adam(model.parameters(), lr=STEP_LR)
    xf, yf, xr, yr = inp.x_forget, inp.y_forget, inp.x_retain, inp.y_retain
    g = torch.Generator().manual_seed(seed)
    f_batches, r_batches = iter(()), iter(())
    for _ in range(steps):
        fidx = next(f_batches, None)
        if fidx is None:
            f_batches = iter(batch_order(len(yf), STEP_BATCH, g))
            fidx = next(f_batches)
        ridx = next(r_batches, None)
        if ridx is None:
            r_batches = iter(batch_order(len(yr), STEP_BATCH, g))
            ridx = next(r_batches)
        loss = bounded_ascent(F.cross_entropy(model(xf[fidx]), yf[fidx]), F.cross_entropy(model(xr[ridx]), yr[ridx]),
                              tau, STEP_ALPHA)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def run_baselines(run: SetRun, zoo: ZooTensors, spacing: float, variant: str, budget_s: float, seed: int) -> None:
    """The four retrieval baselines with `variant`'s prompts; retrieval+steps gets `budget_s` in all."""
    inp, opts = run.inputs, run.params.method_options(variant)
    spec, data = inp.spec, inp.data
    ladder = prompt_ladder(opts.hi_pct, opts.lo_pct, min(opts.prompt_levels, opts.k))
    per = [len(x) for x in torch.arange(opts.k).tensor_split(len(ladder))]
    with Timer() as t_lookup:
        _, targets = request_prompts(zoo.class_loss, zoo.forget_mask, run.classes, opts.variant, ladder)
        best_row = retrieval_row(zoo.class_loss, targets[-1])  # the most ambitious prompt (hi_pct, lo_pct)
    base = zoo.assemble(zoo.weights[best_row])  # full weights (θ0's frozen layers for a partial zoo)
    run.add("retrieval", load_flat(spec.build(), base).eval(), t_lookup.seconds, zoo_row=best_row)

    with Timer() as t_k:
        rows = nearest_rows(zoo.class_loss, targets, per)
        theta0 = flatten(inp.original).float()
        full = zoo.assemble(zoo.weights[rows])
        cand = score(spec, torch.cat([theta0[None], full]), data.x_val, data.y_val, run.classes)
        reference = cand["retained_acc"][0].item()
        chosen, passed = select({k: v[1:] for k, v in cand.items()}, reference, inp.gates)
    run.add("retrieval@K", load_flat(spec.build(), full[chosen]).eval(), t_k.seconds,
            pass_rate=passed.float().mean().item(), zoo_row=int(rows[chosen]))

    noise = torch.randn(zoo.weights.shape[1], generator=torch.Generator().manual_seed(seed))  # in zoo space
    noisy = zoo.assemble(zoo.weights[best_row] + noise * spacing / noise.norm())
    run.add("retrieval+noise", load_flat(spec.build(), noisy).eval(),
            t_lookup.seconds, noise_norm=spacing)

    tau = unseen_loss(inp.original, data.x_val, data.y_val, tuple(run.classes))
    t0 = time.perf_counter()
    ascent_steps(run, base, tau, 10, seed)  # time the loop to choose k; not part of the method's time
    per_step = (time.perf_counter() - t0) / 10
    k = max(1, int((budget_s - t_lookup.seconds) / per_step))
    with Timer() as t_steps:
        tau = unseen_loss(inp.original, data.x_val, data.y_val, tuple(run.classes))
        model = ascent_steps(run, base, tau, k, seed)
    run.add("retrieval+steps", model, t_lookup.seconds + t_steps.seconds, steps=k, budget_s=budget_s)


def method_row(name: str) -> str:
    """A registry method's row name: the registry's `retrieval` (the nearest zoo rows with DiHyFo-1's repairs) is
    `retrieval+repairs`, since `retrieval` here is the bare nearest row."""
    return f"{name}+repairs" if name in BASELINES else name


def run_registered(run: SetRun, name: str) -> None:
    """The registry's method `name` with the set's options, judged as row `method_row(name)`; NaN weights are a
    failed answer with no metrics (the product refuses them), not the end of the study."""
    row = method_row(name)
    try:
        res = run_method(name, run.inputs, run.params.method_options(name))
    except Diverged as e:
        run.rows[row] = {"passed": False, "failed": ["diverged"], "error": str(e), "time_s": None}
        return
    run.add(row, res.model, res.wall_time_s)


def evaluate_set(params: Params, art: Artifacts, classes: Sequence[int], zoo: ZooTensors, spacing: float,
                 variants: Sequence[str], methods: Sequence[str], sample_steps: int | None, seed: int = 0,
                 time_retrain: bool = True) -> dict[str, Any]:
    """Every method and baseline on one class set; the baselines get the first variant's prompts and time."""
    run = SetRun(params, art, classes, time_retrain)
    for variant in variants:
        run_dihyfo(run, variant, sample_steps, zoo, spacing)
    budget = run.rows[variants[0]]["time_s"] if variants else 0.1
    run_baselines(run, zoo, spacing, variants[0] if variants else "dihyfo2", budget, seed)
    for name in methods:
        run_registered(run, name)
    return {"classes": run.classes, "rows": run.rows}


def summarise_sets(sets: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method: means over sets, the fraction of sets whose model passed the gates, how many sets failed
    each check (the JSON keeps keys sorted, so a table that ranks them sorts by count), median time."""
    out: dict[str, dict[str, Any]] = {}
    for name in sets[0]["rows"] if sets else []:
        rows = [s["rows"][name] for s in sets if name in s["rows"]]

        def mean(key: str, rows=rows) -> float | None:
            vals = [r[key] for r in rows if r.get(key) is not None]
            return sum(vals) / len(vals) if vals else None

        times = [r["time_s"] for r in rows if r.get("time_s") is not None]
        passed = [r["passed"] for r in rows if r.get("passed") is not None]
        out[name] = {"sets": len(rows), "forget_acc": mean("forget_acc"), "retained_acc": mean("retained_acc"),
                     "delta": mean("delta"), "pass_rate": mean("pass_rate"),
                     "sets_passed": sum(passed) / len(passed) if passed else None,
                     "failed_checks": dict(Counter(k for r in rows for k in r.get("failed") or [])),
                     "time_s": statistics.median(times) if times else None}
    return out


def step_sweep(params: Params, art: Artifacts, variant: str, steps: Sequence[int] = (10, 20, 50), sets: int = 8,
               seed: int = 0) -> dict[str, Any]:
    """DiHyFo at each DDIM step count on `sets` tuning sets (never held out, never in the zoo): gate pass
    fraction, mean candidate pass rate, mean Δ retrain and the time split; `chosen` = the fewest steps whose
    sets-passed fraction and mean Δ are no worse than the most steps' (Δ within 0.5 points)."""
    zoo, _ = load_zoo(art.zoo)
    spacing = zoo_spacing(zoo.weights)
    tuning = params.zoo.tuning_sets(zoo.num_classes, sets, seed)
    per_set = []
    for classes in tuning:
        run = SetRun(params, art, classes, time_retrain=False)
        for s in steps:
            run_dihyfo(run, variant, s, zoo, spacing, name=f"{variant}@{s}")
        per_set.append({"classes": run.classes, "rows": run.rows})
    summary = summarise_sets(per_set)
    top = summary[f"{variant}@{max(steps)}"]
    ok = [s for s in sorted(steps) if summary[f"{variant}@{s}"]["sets_passed"] >= top["sets_passed"]
          and summary[f"{variant}@{s}"]["delta"] >= top["delta"] - 0.005]
    return jsonable({"sets": per_set, "summary": summary, "chosen": ok[0] if ok else max(steps)})


def resumable_sets(path: Path, held: Sequence[Sequence[int]], zoo_rows: int, sample_steps: int | None,
                   variants: Sequence[str], methods: Sequence[str]) -> list[dict[str, Any]]:
    """The leading sets of an earlier run at `path` that this run would measure the same way: same zoo size and
    DDIM steps, the same held-out sets in the same order, every variant and method present. Anything else
    starts afresh (an empty list), so a resumed table never mixes two studies."""
    if not path.is_file():
        return []
    old = read_json(path)
    if old.get("zoo_rows") != zoo_rows or old.get("sample_steps") != sample_steps:
        return []
    kept = []
    for s, classes in zip(old.get("sets", []), held, strict=False):  # the old run may hold fewer
        if sorted(s["classes"]) != sorted(classes) or not {*variants, *map(method_row, methods)} <= set(s["rows"]):
            break
        kept.append(s)
    return kept


def heldout_report(params: Params, art: Artifacts, variants: Sequence[str] = ("dihyfo2",),
                   methods: Sequence[str] = ("gradtau", "salun"), sample_steps: int | None = None,
                   limit: int | None = None, time_retrain: bool = True, progress=None,
                   resume: bool = False) -> dict[str, Any]:
    """Every held-out set (the first `limit`), each method and baseline, and the summary over sets; written
    to artifacts/compare/heldout-sets.json. `resume` keeps the sets an interrupted run of the same study
    (same zoo, steps and methods) already wrote there and runs the rest: a set takes minutes on the CNN."""
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"unknown DiHyFo variant {v!r}")
    zoo, _ = load_zoo(art.zoo)
    spacing = zoo_spacing(zoo.weights)
    held = params.zoo.held_out(zoo.num_classes)[:limit]
    sets: list[dict[str, Any]] = resumable_sets(art.compare / "heldout-sets.json", held, zoo.num_rows,
                                                sample_steps, variants, methods) if resume else []

    def saved() -> dict[str, Any]:  # after every set: an interrupted run keeps what it did
        result = jsonable({"sets": sets, "summary": summarise_sets(sets), "zoo_rows": zoo.num_rows,
                           "zoo_spacing": spacing, "sample_steps": sample_steps, "machine": machine(),
                           "complete": len(sets) == len(held)})
        write_json(art.compare / "heldout-sets.json", result)
        return result

    result = saved()
    for i, classes in enumerate(held):
        if i < len(sets):
            continue
        sets.append(evaluate_set(params, art, classes, zoo, spacing, variants, methods, sample_steps,
                                 seed=params.seed + i, time_retrain=time_retrain))
        result = saved()
        if progress:
            progress(i + 1, len(held), sets[-1])
    return result


def zoo_level(art: Artifacts) -> dict[str, Any]:
    """One zoo size of the trend, read from a project whose held-out study ran: what its zoo holds (class sets,
    checkpoints, requests), what building it cost (the stages' own timings: the zoo, with the units an interrupted
    build had already made, and each hypernetwork), each hypernetwork's prompt alignment on held-out sets (mean R²,
    what class sets in the zoo should raise), the study's summary with each method's mean probe accuracy on D_f, and
    the sets each method passed."""
    files = {"study": art.compare / "heldout-sets.json", "index": art.zoo / INDEX}
    for path in files.values():
        if not path.is_file():
            raise DataError(f"{path} is missing: build this project and run its held-out study first "
                            "(bench/heldout_sets.py with the project's --work-root)")
    study, index = read_json(files["study"]), read_json(files["index"])
    requests = {tuple(r["request"]) for r in index["rows"] if r["request"]}

    def probe(name: str) -> float | None:
        vals = [s["rows"][name]["probe"] for s in study["sets"] if s["rows"].get(name, {}).get("probe") is not None]
        return statistics.fmean(vals) if vals else None

    alignment = {p.parent.name: read_json(p)["mean_r2"] for p in sorted(art.base.glob("hypernet/*/metrics.json"))}
    return {"project": str(art.root), "class_sets": sum(len(r) > 1 for r in requests),
            "zoo_rows": len(index["rows"]), "requests": len(requests),
            "timings": {p.stem: read_json(p) for p in sorted(art.timings.glob("*.json"))},
            "held_out_r2": alignment,
            "sets": [s["classes"] for s in study["sets"]], "complete": study.get("complete"),
            "summary": {name: {**row, "probe": probe(name)} for name, row in study["summary"].items()},
            "passed": {name: [s["classes"] for s in study["sets"] if s["rows"].get(name, {}).get("passed")]
                       for name in study["summary"]}}


def zoo_trend(levels: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The zoo sizes in order of their class sets, refused unless every one studied the same held-out sets in
    the same order: over other requests the trend would compare the sets, not the zoos."""
    if any(lv["sets"] != levels[0]["sets"] for lv in levels):
        raise DataError("the projects studied different held-out sets: " + "; ".join(
            f"{lv['project']}: {lv['sets']}" for lv in levels) + " (run each study with the same --sets)")
    return sorted(levels, key=lambda lv: lv["class_sets"])
