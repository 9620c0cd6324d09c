"""The release gates calibrated statistically on the reference pool: false rejections and power per K / N.

Issue #22, item 3. True retrains held out of the pool, used as the answer, must pass (false-rejection rate,
FRR, ≤ 5%); θ0 and a weak method must fail (power ≥ 95%); both measured on the same runs, for every pool
size, with exactly the product's checks (`check_gates(report, summary, params.gates, verify(...),
require_verification=True)`, the reference formed as `answer.resolve_reference` forms it).

    .venv/bin/python bench/gate_calibration.py                      # digits (params.yaml), 20 requests per kind
    .venv/bin/python bench/gate_calibration.py --params configs/mnist-t10k.yaml --json \
        bench/results/gate_calibration_mnist_t10k.json
    .venv/bin/python bench/gate_calibration.py --params configs/mnist-t10k-lenet.yaml --kinds class --threads 2 \
        --requests 40 --json bench/results/gate_calibration_mnist_t10k_lenet.json   # class requests only (with the
        # digits limits as "today's": the --set items in docs/results/gate-calibration.md)

What it does, in a project folder of its own (--work, default work/gate-calibration-<experiment>/):
1. prepare the data, train θ0, build the reference pool with generous settings (`pool.class_retrains` 8,
   `pool.shadows` 32; a pool of K retrains or N shadows is exactly the first K / N of these: same seeds);
2. **class requests**: every class × A "answer" retrains (A = ⌈requests / classes⌉, at least 2), true
   retrains without the class with θ0's recipe and seeds 9,000,000 + 100 · class + i, disjoint from every
   other model's (pool, zoo, EU-k, per-request retrains). For each K in 3, 4, 6, 8, answer i of a class is
   judged against K of that class's pool retrains, i · K … i · K + K − 1 (mod 8): the first K for i = 0, as
   the product reads them; the rotation makes each answer's reference another draw of a K-pool. Judged against
   that reference: the answer retrain (must pass), θ0 and `head_finetune` run as the pipeline runs it (seed
   params.seed + i) (must fail);
3. **record requests**: `requests` draws of `--records` train records (100; seeded), 2 answer retrains without them each
   (seeds 9,500,000 + 100 · request + i), judged against N membership shadows for N in 6, 8, 16, 32 (whole
   complementary pairs, rotated by answer as above), with the per-record out shadows and `answer._record_summary`
   as the product forms them; θ0 and the approximate methods (`finetune`, and what the pipeline answers records
   with: `unlearn.method`, or `requests.fallback_method` when that is DiHyFo) must fail;
4. report per kind × K / N the FRR and power overall and per gate, the retrains' spread; then derive the limits
   that keep retrains passing on a **calibration half** (answers i < A / 2) and report FRR and power on the
   **test half** (the other answers) under them. A limit is the looser of the calibration half's extreme and a
   parametric prediction bound (t, with the 5% FRR budget split evenly over the checks whose statistic varies
   among the retrains, two per two-sided gate; LiRA AUC in probit space, relearn ratios in log space), rounded
   outward to 0.01 (LiRA: 0.001, where θ0 and head-only fine-tuning sit).

Measurements are kept in --work (gate-calibration/{class,record}-rows.json), keyed by the pool files each kind
reads: a rerun with the same settings only re-derives. About 15 minutes on digits with --requests 40 on 2 shared
cores, 30 on MNIST's 10k split (G.pt's MLP); LeNet-5 on that split: 44 minutes for the pool, about 5 per class
for the class requests. Results and their reading: docs/results/gate-calibration.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from hyperforget.base.runtime import configure

configure()  # passive OpenMP waits and AVX2 kernels, as every entry point, before torch loads

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from _common import PARAMS, REPO, ensure_original, experiment_raw, work_folder  # noqa: E402
from scipy import stats  # noqa: E402
from torch import nn  # noqa: E402

from hyperforget.base.artifacts import Artifacts  # noqa: E402
from hyperforget.base.errors import ConfigError  # noqa: E402
from hyperforget.base.io import load_tensors, save_tensors, sha256_file, tensor_metadata, write_text  # noqa: E402
from hyperforget.config.options import VARIANTS  # noqa: E402
from hyperforget.config.overlays import load_params, parse_overrides, parse_params  # noqa: E402
from hyperforget.config.params import ForgetConfig, GatesConfig, Params, TrainConfig  # noqa: E402
from hyperforget.data.datasets import Dataset, ForgetSplit, forget_split, load_dataset  # noqa: E402
from hyperforget.models.metrics import Evaluator, summarise  # noqa: E402
from hyperforget.models.nets import ModelSpec, load_model  # noqa: E402
from hyperforget.models.train import train_many  # noqa: E402
from hyperforget.pipeline import answer, stages  # noqa: E402
from hyperforget.pipeline.compare import machine  # noqa: E402
from hyperforget.unlearn import run_method  # noqa: E402
from hyperforget.unlearn.method import UnlearnInputs  # noqa: E402
from hyperforget.verify import pool as pool_mod  # noqa: E402
from hyperforget.verify.gates import check_gates, record_power, record_widening  # noqa: E402
from hyperforget.verify.verdict import reference_metrics, shadows_and_held_out, verify  # noqa: E402

CLASS_K = (3, 4, 6, 8)  # per-class retrains a class request reads (K − 1 shadows + 1 held-out)
RECORD_N = (6, 8, 16, 32)  # membership shadows a record request reads (whole pairs; pool.shadows ≥ 6)
CLASS_ANSWER_SEED = 9_000_000  # + 100 · class + i
RECORD_ANSWER_SEED = 9_500_000  # + 100 · request + i
RECORD_DRAW_SEED = 9_900_000  # + request: which records request r deletes
RECORDS = 100  # records per record request (--records)
ALPHA = 0.05  # the false-rejection budget of a whole verdict
REPORT_KEYS = ("forget_acc", "test_retained_acc", "mia")
ROLES = {"retrain": "must pass", "theta0": "must fail"}


# ---------- the project, its θ0 and its pool ----------


def setup(args: argparse.Namespace) -> tuple[Params, Artifacts]:
    """The experiment's params with the generous pool, written as the work folder's params.yaml; data, θ0 and
    the pool built there unless already current."""
    overrides = {**parse_overrides(args.set), "pool.class_retrains": max(CLASS_K), "pool.shadows": max(RECORD_N)}
    raw = experiment_raw(args.params, None, overrides)
    parse_params(raw, f"{args.params} + bench overrides")
    art = Artifacts(Path(args.work) if args.work else work_folder(f"gate-calibration-{Path(args.params).stem}"))
    art.root.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)
    if not art.params.exists() or art.params.read_text() != text:
        write_text(art.params, text)
    params = load_params(art.params)
    t0 = time.perf_counter()
    ensure_original(params, art)
    try:
        pool_mod.load_current(art, params)
    except ConfigError:
        stages.pool(params, art)
    log(f"project {art.root}: data, θ0 and pool ({max(CLASS_K)} retrains per class, {max(RECORD_N)} shadows) "
        f"ready in {time.perf_counter() - t0:.0f} s")
    return params, art


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def recipe(params: Params) -> TrainConfig:
    """θ0's `train:` recipe as the pool trains its retrains (no early stopping)."""
    return TrainConfig(**params.train.model_dump(exclude={"patience"}))


def rotated(i: int, k: int, total: int) -> list[int]:
    """Answer i's reference: k of `total` pool models, starting at i · k (i = 0: the first k, the product's)."""
    return [(i * k + j) % total for j in range(k)]


def row(kind: str, request: str, i: int, half: str, size: int, model: str, report: dict, summary: dict,
        checked: dict, gates: GatesConfig) -> dict[str, Any]:
    """One judgement, compact: what `check_gates` needs to judge it again under other limits."""
    ver = {k: v for k, v in checked.items() if k != "reference"}
    ver["reference"] = {k: None if v is None else {"mean": v["mean"], "std": v["std"]}
                        for k, v in (checked.get("reference") or {}).items()}
    out = {"kind": kind, "request": request, "answer": i, "half": half, "size": size, "model": model,
           "report": {k: report[k] for k in (*REPORT_KEYS, "forget_records") if k in report},
           "summary": {k: summary[k] for k in REPORT_KEYS if k in summary}, "verification": ver,
           "record_calibration_records": gates.record_calibration_records}
    out["failed"] = failed(out, gates)
    return out


def checks(r: dict, gates: GatesConfig) -> dict[str, dict]:
    """The product's checks of a stored judgement under `gates` (`check_gates`, verification required)."""
    return check_gates(r["report"], r["summary"], gates, r["verification"], require_verification=True).checks


def failed(r: dict, gates: GatesConfig) -> list[str]:
    """The product's verdict on a stored judgement: the names of the checks it fails (power check aside)."""
    return sorted(name for name, c in checks(r, gates).items() if not c["passed"])


def powered(theta0: dict, gates: GatesConfig) -> bool:
    """Would θ0's stored judgement give the test power in the product (`answer.test_power`) under `gates`?"""
    if theta0["kind"] != "record":
        return bool(failed(theta0, gates))
    return record_power(checks(theta0, gates), theta0["verification"])["has_power"]


def halves(answers: int) -> list[str]:
    return ["calibration" if i < answers // 2 else "test" for i in range(answers)]


# ---------- class requests ----------


def answer_retrains(params: Params, art: Artifacts, data: Dataset, spec: ModelSpec, split: ForgetSplit, c: int,
                    answers: int) -> list[nn.Module]:
    """Class `c`'s answer retrains (seeds CLASS_ANSWER_SEED + 100 · c + i), trained once and kept in --work as
    safetensors (sha256 sidecar, seeds and θ0's recipe in the metadata): a later calibration of other statistics
    or limits on the same project reads them instead of training them again."""
    path = art.root / "gate-calibration" / f"answers-class-{c:03d}.safetensors"
    seeds = [CLASS_ANSWER_SEED + 100 * c + i for i in range(answers)]
    meta = {"seeds": ",".join(map(str, seeds)), "recipe": json.dumps(recipe(params).model_dump(), sort_keys=True),
            "model_sha256": sha256_file(art.model)}
    if path.exists() and tensor_metadata(path) == meta:
        return pool_mod.unpack(spec, load_tensors(path), answers)
    keep = split.retain_idx
    models = train_many(spec, seeds, data.x_train[keep], data.y_train[keep], recipe(params), desc=f"answers class {c}")
    save_tensors(path, pool_mod.pack(models), meta)
    return models


def class_rows(params: Params, art: Artifacts, answers: int, methods: list[str], sizes: list[int]) -> list[dict]:
    data = load_dataset(art.prepare)
    original, spec = load_model(art.model)
    pool = pool_mod.load_current(art, params)
    cfg, total = params.evaluation.verification, params.pool.class_retrains
    rows: list[dict] = []
    for c in range(data.num_classes):
        t0 = time.perf_counter()
        split = forget_split(data, ForgetConfig(classes=[c]))
        ev = Evaluator.for_original(original, data, split, params.evaluation.mia_splits, params.seed)
        truth = answer_retrains(params, art, data, spec, split, c, answers)
        inputs = UnlearnInputs(original, spec, data, split, params.seed, art, params.gates)  # as answer.inputs
        weak = {m: [run_method(m, replace(inputs, seed=params.seed + i), params.method_options(m)).model
                    for i in range(answers)] for m in methods}
        refs = pool.class_models(c)
        reports = {id(m): ev.report(m) for m in [*refs, *truth, original, *(x for v in weak.values() for x in v)]}
        for k in sizes:
            for i, half in enumerate(halves(answers)):
                chosen = [refs[j] for j in rotated(i, k, total)]
                shadows, held_out = shadows_and_held_out(chosen)  # as answer.resolve_reference
                summary = summarise([reports[id(m)] for m in chosen])
                ref = reference_metrics(shadows, data, split, cfg)
                judged = {"retrain": truth[i], "theta0": original, **{m: weak[m][i] for m in methods}}
                for name, model in judged.items():
                    checked = verify(model, shadows, held_out, data, split, cfg, ref)
                    rows.append(row("class", f"class-{c}", i, half, k, name, reports[id(model)], summary, checked,
                                    params.gates))
        log(f"class {c}: {answers} answers × K {list(sizes)} judged in {time.perf_counter() - t0:.0f} s")
    return rows


# ---------- record requests ----------


def record_draws(n_train: int, requests: int, records: int) -> list[torch.Tensor]:
    """Request r's records: `records` train indices drawn with seed RECORD_DRAW_SEED + r, sorted."""
    return [torch.randperm(n_train, generator=torch.Generator().manual_seed(RECORD_DRAW_SEED + r))[:records].sort()
            .values for r in range(requests)]


def shadow_summaries(ctx: answer.RequestContext, shadows: pool_mod.Shadows, seen_f: torch.Tensor) -> list[dict]:
    """`answer._record_summary` of each shadow alone, once per request. The summary of a subset of N shadows has
    as its means the averages of these (each mean is the shadows' average report plus a shift that is the same
    average of per-shadow terms), so every N is read from the 32 calls instead of 6 + 8 + 16 + 32 per rotation;
    checked against `_record_summary` itself on the first request."""
    return [{} if saw.all() else  # it saw every record: no model without them, left out as there
            answer._record_summary(ctx, (shadows.train_logits[j:j + 1], shadows.test_logits[j:j + 1]), saw[None])
            for j, saw in enumerate(seen_f)]


def logits_of(shadows: pool_mod.Shadows, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The train and test logits of the shadows `idx`, as `answer.resolve_reference` passes all of them."""
    return shadows.train_logits[idx], shadows.test_logits[idx]


def subset_summary(singles: list[dict], idx: list[int]) -> dict[str, dict[str, float]]:
    """The means of `answer._record_summary` over the shadows `idx`, from their single-shadow summaries (a shadow
    that saw every record has none and is left out, as there); std is not the library's and no gate reads it."""
    out = {}
    for key in REPORT_KEYS:
        vals = np.array([singles[j][key]["mean"] for j in idx if key in singles[j]], dtype=float)
        out[key] = {"mean": float(np.nanmean(vals)), "std": float(np.nanstd(vals))}
    return out


def record_rows(params: Params, art: Artifacts, requests: int, answers: int, methods: list[str], records: int
                ) -> tuple[list[dict], dict[int, str]]:
    data = load_dataset(art.prepare)
    original, spec = load_model(art.model)
    pool = pool_mod.load_current(art, params)
    cfg, n = params.evaluation.verification, len(data.y_train)
    draws = record_draws(n, requests, records)
    retains = [torch.from_numpy(np.setdiff1d(np.arange(n), f.numpy())) for f in draws]
    t0 = time.perf_counter()
    rows_idx = torch.stack([retains[r] for r in range(requests) for _ in range(answers)])
    seeds = [RECORD_ANSWER_SEED + 100 * r + i for r in range(requests) for i in range(answers)]
    truth = train_many(spec, seeds, data.x_train, data.y_train, recipe(params), desc="record answers", rows=rows_idx)
    log(f"{len(truth)} record answer retrains in {time.perf_counter() - t0:.0f} s")
    everyone = pool.shadows()
    shadows, seen = everyone.models, everyone.seen
    pairs = len(shadows) // 2
    unsupported: dict[int, str] = {}
    rows: list[dict] = []
    for r, forget in enumerate(draws):
        t0 = time.perf_counter()
        split = ForgetSplit(forget, retains[r], None)
        ev = Evaluator.for_original(original, data, split, params.evaluation.mia_splits, params.seed)
        ctx = answer.RequestContext(data, original, spec, split, ev)
        inputs = UnlearnInputs(original, spec, data, split, params.seed, art, params.gates)
        weak = {m: run_method(m, inputs, params.method_options(m)).model for m in methods}
        reports = {id(m): ev.report(m) for m in [*truth[r * answers:(r + 1) * answers], original, *weak.values()]}
        singles = shadow_summaries(ctx, everyone, seen[:, forget])
        for size in RECORD_N:
            if size in unsupported:
                continue
            for i, half in enumerate(halves(answers)):
                idx = [2 * p + b for p in rotated(i, size // 2, pairs) for b in (0, 1)]
                chosen = [shadows[j] for j in idx]
                seen_f = seen[idx][:, forget]  # as answer.resolve_reference: which shadow saw which record of D_f
                summary = subset_summary(singles, idx)
                if r == 0 and i == 0 and size == max(RECORD_N):  # the same means as answer's own summary
                    direct = answer._record_summary(ctx, logits_of(everyone, idx), seen_f)
                    assert all(np.isclose(summary[k]["mean"], direct[k]["mean"], rtol=1e-9, atol=1e-12)
                               for k in REPORT_KEYS), f"record summary differs: {summary} vs {direct}"
                judged = {"retrain": truth[r * answers + i], "theta0": original, **weak}
                try:
                    for name, model in judged.items():
                        checked = verify(model, chosen, None, data, split, cfg, seen=seen_f,
                                         shadow_logits=logits_of(everyone, idx))
                        rows.append(row("record", f"records-{r}", i, half, size, name, reports[id(model)], summary,
                                        checked, params.gates))
                except ConfigError as e:  # the library refuses this pool size for record requests
                    unsupported[size] = str(e)
                    log(f"N = {size}: {e}")
                    break
        log(f"record request {r}: judged in {time.perf_counter() - t0:.0f} s")
    return rows, unsupported


# ---------- rates, spreads and the limits they imply ----------


def rates(rows: list[dict], gates: GatesConfig | None = None) -> dict[str, Any]:
    """Share of `rows` failing the verdict (re-judged under `gates` when given), and the count per check."""
    per_gate: dict[str, int] = {}
    fails = 0
    for r in rows:
        names = r["failed"] if gates is None else failed(r, gates)
        fails += bool(names)
        for name in names:
            per_gate[name] = per_gate.get(name, 0) + 1
    n = len(rows)
    return {"n": n, "fail": fails, "rate": fails / n if n else float("nan"),
            "low95": float(stats.beta.ppf(0.05, fails, n - fails + 1)) if fails else 0.0,  # one-sided Clopper-Pearson
            "high95": float(stats.beta.ppf(0.95, fails + 1, n - fails)) if fails < n else 1.0,
            "per_gate": dict(sorted(per_gate.items()))}


def statistics(r: dict) -> dict[str, float]:
    """What each gate compares, per judgement: LiRA AUC, probe gap, relearn ratio per m, output-gate gaps. A
    record request smaller than `gates.record_calibration_records` has its excesses divided by the widening its
    gates apply (`verify.gates.record_widening`), so the limits derived from them are in the calibrated units."""
    v, s, rep = r["verification"], r["summary"], r["report"]
    ref = v.get("reference") or {}
    calibrated = r.get("record_calibration_records", GatesConfig().record_calibration_records)
    widen = record_widening(rep.get("forget_records"), calibrated)
    lira_widen = record_widening(v.get("lira_records"), calibrated, v.get("lira_unseen"))
    out = {"lira_auc": 0.5 + (v["lira_auc"] - 0.5) / lira_widen,
           "forget_excess": (rep["forget_acc"] - s["forget_acc"]["mean"]) / widen,
           "mia_excess": (rep["mia"] - s["mia"]["mean"]) / widen,
           "retain_drop": s["test_retained_acc"]["mean"] - rep["test_retained_acc"]}
    if v.get("probe_forget_acc") is not None:
        out["probe_gap"] = v["probe_forget_acc"] - ref["probe_forget_acc"]["mean"]
    if v.get("probe_forget_logit") is not None:
        out["probe_logit_gap"] = v["probe_forget_logit"] - ref["probe_forget_logit"]["mean"]
    for m in v.get("relearn_m") or []:
        key = f"relearn_steps_m{m}"
        if v.get(key) is not None:
            out[f"relearn_ratio_m{m}"] = v[key] / max(ref[key]["mean"], 1e-9)
    return out


def spread(rows: list[dict]) -> dict[str, dict[str, float]]:
    """mean ± std (and min, max) of every statistic, plus the raw relearn steps and probe accuracy."""
    keys: dict[str, list[float]] = {}
    for r in rows:
        v = r["verification"]
        extra = {k: v[k] for k in v if k.startswith("relearn_steps_m") and v[k] is not None}
        extra |= {k: v[k] for k in ("probe_forget_acc", "probe_forget_logit") if v.get(k) is not None}
        for k, x in {**statistics(r), **extra}.items():
            keys.setdefault(k, []).append(float(x))
    return {k: {"mean": float(np.mean(x)), "std": float(np.std(x)), "min": float(np.min(x)), "max": float(np.max(x))}
            for k, x in keys.items()}


def _probit(x: np.ndarray) -> np.ndarray:
    return stats.norm.ppf(np.clip(x, 1e-6, 1 - 1e-6))


TRANSFORMS = {"lira_auc": (_probit, stats.norm.cdf), "relearn": (lambda x: np.log(np.maximum(x, 1e-3)), np.exp)}


def bound(values: list[float], upper: bool, alpha: float, transform: str | None = None) -> dict[str, float]:
    """The looser of the calibration values' extreme and a one-sided t prediction bound at level 1 − alpha
    (for one more value from the same distribution), computed in the statistic's transform's space."""
    x = np.asarray(values, dtype=float)
    fwd, back = TRANSFORMS.get(transform or "", (lambda v: v, lambda v: v))
    y = fwd(x)
    n = len(y)
    t = stats.t.ppf(1 - alpha, n - 1) * math.sqrt(1 + 1 / n)
    para = float(back(y.mean() + (t if upper else -t) * y.std(ddof=1)))
    extreme = float(x.max() if upper else x.min())
    return {"extreme": extreme, "parametric": para, "limit": max(extreme, para) if upper else min(extreme, para)}


def _up(x: float, digits: int = 2) -> float:
    return math.ceil(x * 10**digits - 1e-9) / 10**digits


def _down(x: float, digits: int = 2) -> float:
    return math.floor(x * 10**digits + 1e-9) / 10**digits


def derive(rows: list[dict], now: GatesConfig) -> dict[str, Any]:
    """Gate limits under which the calibration retrains `rows` pass, the FRR budget split over the checks:
    the verification limits as measured (tighter or looser than now), the output gates never tightened."""
    values: dict[str, list[float]] = {}
    for r in rows:
        for k, x in statistics(r).items():
            values.setdefault(k, []).append(float(x))
    relearn = [k for k in values if k.startswith("relearn_ratio_")]
    varies = [k for k, x in values.items() if np.ptp(x) > 1e-12]  # a constant (0: forget acc on a class) is no risk
    tests = sum(2 if k == "lira_auc" or k in relearn else 1 for k in varies)  # two-sided: LiRA, relearn
    a = ALPHA / max(tests, 1)
    b = {"lira_high": bound(values["lira_auc"], True, a, "lira_auc"),
         "lira_low": bound(values["lira_auc"], False, a, "lira_auc"),
         **{k: bound(values[k], True, a) for k in ("forget_excess", "mia_excess", "retain_drop")}}
    limits = {"max_lira_auc_excess": min(0.5, _up(b["lira_high"]["limit"] - 0.5, 3)),  # θ0 sits at 0.999+
              "max_lira_auc_deficit": min(0.5, _up(0.5 - b["lira_low"]["limit"], 3)),
              "max_forget_excess": max(now.max_forget_excess, _up(b["forget_excess"]["limit"])),
              "max_mia_excess": max(now.max_mia_excess, _up(b["mia_excess"]["limit"])),
              "max_retain_drop": max(now.max_retain_drop, _up(b["retain_drop"]["limit"]))}
    if "probe_gap" in values:
        b["probe"] = bound(values["probe_gap"], True, a)
        limits["max_probe_excess"] = min(1.0, max(0.0, _up(b["probe"]["limit"])))
    if "probe_logit_gap" in values:
        b["probe_logit"] = bound(values["probe_logit_gap"], True, a)
        limits["max_probe_logit_excess"] = max(0.0, _up(b["probe_logit"]["limit"]))
    if relearn:
        for k in relearn:
            b[f"{k}_low"] = bound(values[k], False, a, "relearn")
            b[f"{k}_high"] = bound(values[k], True, a, "relearn")
        low = max(0.0, _down(min(b[f"{k}_low"]["limit"] for k in relearn)))
        limits["min_relearn_ratio"] = low
        limits["max_relearn_ratio"] = max(1.0, low, _up(max(b[f"{k}_high"]["limit"] for k in relearn)))
    return {"alpha_per_check": a, "n": len(rows), "bounds": b, "limits": limits}


def with_limits(gates: GatesConfig, limits: dict[str, float]) -> GatesConfig:
    return GatesConfig(**{**gates.model_dump(), **limits})


def loosest(*limit_sets: dict[str, float]) -> dict[str, float]:
    """One `gates:` section for both kinds: per key the looser limit (a minimum for `min_relearn_ratio`)."""
    out: dict[str, float] = {}
    for limits in limit_sets:
        for k, v in limits.items():
            out[k] = v if k not in out else (min(out[k], v) if k == "min_relearn_ratio" else max(out[k], v))
    return out


def group(rows: list[dict], kind: str, size: int, model: str, half: str | None = None) -> list[dict]:
    return [r for r in rows if r["kind"] == kind and r["size"] == size and r["model"] == model
            and (half is None or r["half"] == half)]


def released(rows: list[dict], kind: str, size: int, model: str, gates: GatesConfig,
             half: str | None = None) -> dict[str, Any]:
    """What the product would release of `model`'s answers: it passes every check and the test has power, as
    `answer.test_power` decides it (θ0, judged by the same test against the same reference, fails a check; on a
    record request, surely fails the record LiRA check: `gates.record_power`)."""
    theta0 = {(r["request"], r["answer"]): powered(r, gates) for r in group(rows, kind, size, "theta0", half)}
    mine = group(rows, kind, size, model, half)
    out = sum(1 for r in mine if not failed(r, gates) and theta0[(r["request"], r["answer"])])
    return {"n": len(mine), "released": out, "rate": out / len(mine) if mine else float("nan")}


def analyse(rows: list[dict], params: Params, models: dict[str, list[str]], today: dict[str, int]) -> dict[str, Any]:
    """Rates under today's gates, spreads, and per K / N the limits from the calibration half with the test
    half's rates under them; then the chosen K / N and one `gates:` for both kinds."""
    now = params.gates
    out: dict[str, Any] = {"current": {}, "spread": {}, "derived": {}, "per_gate": {}, "released": {}}
    for kind, names in models.items():
        sizes = sorted({r["size"] for r in rows if r["kind"] == kind})
        weak = names[2:]
        for key in ("current", "spread", "derived", "released"):
            out[key][kind] = {}
        for size in sizes:
            out["current"][kind][size] = {m: rates(group(rows, kind, size, m)) for m in names}
            out["spread"][kind][size] = {m: spread(group(rows, kind, size, m)) for m in names}
            d = derive(group(rows, kind, size, "retrain", "calibration"), now)
            gates = with_limits(now, d["limits"])
            d["test"] = {m: rates(group(rows, kind, size, m, "test"), gates) for m in names}
            d["calibration"] = {m: rates(group(rows, kind, size, m, "calibration"), gates) for m in names}
            out["derived"][kind][size] = d
            theta0 = group(rows, kind, size, "theta0")
            out["released"][kind][size] = {
                "powered": {"n": len(theta0), "powered": sum(powered(r, now) for r in theta0)},
                "today": {m: released(rows, kind, size, m, now) for m in weak},
                "derived_test": {m: released(rows, kind, size, m, gates, "test") for m in weak}}
        out["per_gate"][kind] = per_gate_power(out["derived"][kind], names)
    chosen = {kind: choose(out["derived"][kind], names, today[kind]) for kind, names in models.items()}
    limits = loosest(*(out["derived"][kind][chosen[kind]]["limits"] for kind in models))
    gates = with_limits(now, limits)
    out["chosen"] = {"sizes": chosen, "limits": limits,
                     "test": {kind: {m: rates(group(rows, kind, chosen[kind], m, "test"), gates) for m in names}
                              for kind, names in models.items()},
                     "all": {kind: {m: rates(group(rows, kind, chosen[kind], m), gates) for m in names}
                             for kind, names in models.items()},
                     "released_test": {kind: {m: released(rows, kind, chosen[kind], m, gates, "test")
                                              for m in names[2:]} for kind, names in models.items()},
                     "has_power": {kind: ok(out["derived"][kind][chosen[kind]], names)[0] for kind, names in
                                   models.items()}}
    return out


def ok(d: dict, names: list[str]) -> tuple[bool, float]:
    power = min(d["test"][m]["rate"] for m in names if m != "retrain")
    return d["test"]["retrain"]["rate"] <= ALPHA and power >= 1 - ALPHA, power


def choose(derived: dict[int, dict], names: list[str], today: int) -> int:
    """The smallest K / N whose derived limits keep the test half's FRR ≤ 5% with power ≥ 95% against every
    must-fail model. None has that power: today's setting (the experiment's `pool:`) when it is measured and
    keeps FRR ≤ 5% (no size buys power, so nothing argues for another), else the smallest that does."""
    good = [s for s, d in derived.items() if ok(d, names)[0]]
    if good:
        return min(good)
    frr_ok = [s for s, d in derived.items() if d["test"]["retrain"]["rate"] <= ALPHA] or list(derived)
    return today if today in frr_ok else min(frr_ok)


def per_gate_power(derived: dict[int, dict], names: list[str]) -> dict[str, dict]:
    """Per check and K / N, under that size's derived limits: the test half's false rejections by this check
    and the share of each must-fail model it rejects; and the smallest size at which it alone has ≥ 95% power
    against each, with ≤ 5% false rejections."""
    table: dict[str, dict] = {}
    for size, d in derived.items():
        n = d["test"]["retrain"]["n"]
        gates = set().union(*(d["test"][m]["per_gate"] for m in names))
        for g in sorted(gates):
            entry = table.setdefault(g, {"by_size": {}, "needs": {}})
            entry["by_size"][size] = {m: d["test"][m]["per_gate"].get(g, 0) / max(d["test"][m]["n"], 1)
                                      for m in names} | {"n_test": n}
    for entry in table.values():
        for m in names:
            if m == "retrain":
                continue
            fine = [s for s, e in entry["by_size"].items() if e.get("retrain", 0) <= ALPHA and e.get(m, 0) >= 1 - ALPHA]
            entry["needs"][m] = min(fine) if fine else None
    return table


# ---------- tables ----------


COLUMNS = ("kind", "request", "answer", "half", "size", "model", "forget_acc", "test_retained_acc", "mia",
           "ref_forget_acc", "ref_test_retained_acc", "ref_mia", "lira_auc", "lira_auc_low", "lira_held_out_auc",
           "probe_forget_acc", "ref_probe_forget_acc", "probe_forget_logit", "ref_probe_forget_logit", "relearn_steps",
           "ref_relearn_steps_mean", "ref_relearn_steps_std", "failed")


def flat(rows: list[dict]) -> dict[str, Any]:
    """The judgements as one row each (floats to 4 decimals; relearn per m in `relearn_m` order), for the JSON."""
    def f(x: Any) -> Any:
        return round(x, 4) if isinstance(x, float) and math.isfinite(x) else x

    out = []
    for r in rows:
        v, s, rep = r["verification"], r["summary"], r["report"]
        ref = v.get("reference") or {}
        ms = v.get("relearn_m") or []
        out.append([r["kind"], r["request"], r["answer"], r["half"], r["size"], r["model"],
                    *(f(rep[k]) for k in REPORT_KEYS), *(f(s[k]["mean"]) for k in REPORT_KEYS),
                    f(v["lira_auc"]), f(v.get("lira_auc_low")), f(v.get("lira_held_out_auc")),
                    f(v.get("probe_forget_acc")),
                    f((ref.get("probe_forget_acc") or {}).get("mean")),
                    f(v.get("probe_forget_logit")), f((ref.get("probe_forget_logit") or {}).get("mean")),
                    [v.get(f"relearn_steps_m{m}") for m in ms],
                    [f((ref.get(f"relearn_steps_m{m}") or {}).get("mean")) for m in ms],
                    [f((ref.get(f"relearn_steps_m{m}") or {}).get("std")) for m in ms], r["failed"]])
    return {"columns": list(COLUMNS), "values": out}


def pct(r: dict, bound: str | None = None) -> str:
    """A rate with its count, and with `bound` its one-sided 95% bound: "high" for an FRR, "low" for power."""
    shown = "" if bound is None else f", {'≤' if bound == 'high' else '≥'} {r[bound + '95']:.0%}"
    return f"{r['rate']:.0%} ({r['fail']}/{r['n']}{shown})"


def gate_counts(r: dict) -> str:
    return ", ".join(f"{g} {n}" for g, n in r["per_gate"].items()) or "–"


def pm(s: dict, key: str, spec: str = ".2f") -> str:
    return "–" if key not in s else f"{s[key]['mean']:{spec}} ± {s[key]['std']:{spec}}"


def rates_header(weak: list[str], methods: list[str]) -> tuple[str, str]:
    """The columns after FRR that both rate tables share (power per must-fail model, release rate per method,
    which checks fail), as a header with a `{prefix}` slot ("test " on the test half) and its alignment row."""
    head = (" | ".join(f"{{prefix}}power {m}" for m in weak) + " | " + " | ".join(f"{m} released" for m in methods)
            + " | {prefix}retrains fail | " + " | ".join(f"{m} fails" for m in weak) + " |")
    return head, "---:|" * (len(weak) + len(methods)) + "---|" + "---|" * len(weak)


def rates_cells(per: dict, rel: dict, weak: list[str], methods: list[str], names: list[str]) -> str:
    """A rate table's cells from FRR on: the retrains' rejection rate, each must-fail model's, each method's
    release rate and every model's failing-check counts."""
    return (f"{pct(per['retrain'], 'high')} | " + " | ".join(pct(per[m], 'low') for m in weak) + " | "
            + " | ".join(f"{rel[m]['rate']:.0%} ({rel[m]['released']}/{rel[m]['n']})" for m in methods)
            + " | " + " | ".join(gate_counts(per[m]) for m in names) + " |")


def markdown(result: dict) -> str:
    a = result["analysis"]
    lines: list[str] = []
    for kind, names in result["settings"]["models"].items():
        size = "K" if kind == "class" else "N"
        weak, methods = [m for m in names if m != "retrain"], names[2:]
        head, rule = rates_header(weak, methods)
        lines += [f"\n### {kind} requests: today's gates\n",
                  f"| {size} | test has power (`answer.test_power`) | FRR (retrains) | " + head.format(prefix=""),
                  "|---:|---:|---:|" + rule]
        for s, per in a["current"][kind].items():
            p = a["released"][kind][s]["powered"]
            lines.append(f"| {s} | {p['powered']}/{p['n']} | "
                         + rates_cells(per, a["released"][kind][s]["today"], weak, methods, names))
        cols = [("LiRA AUC", "lira_auc", ".2f"), ("probe acc", "probe_forget_acc", ".2f"),
                ("probe gap", "probe_gap", ".2f"),
                ("probe log-odds", "probe_forget_logit", ".2f"), ("log-odds gap", "probe_logit_gap", ".2f"),
                *((f"{label} m{r}", f"{key}_m{r}", spec) for r in result["settings"]["relearn_m"]
                  for label, key, spec in (("relearn", "relearn_steps", ".0f"), ("ratio", "relearn_ratio", ".2f"))),
                ("forget acc − ref", "forget_excess", ".3f"), ("MIA − ref", "mia_excess", ".3f")]
        cols = [c for c in cols if any(c[1] in per[m] for per in a["spread"][kind].values() for m in names)]
        lines += [f"\n### {kind} requests: spread (mean ± std over requests)\n",
                  f"| {size} | model | " + " | ".join(c[0] for c in cols) + " |", "|---:|---|" + "---:|" * len(cols)]
        for s, per in a["spread"][kind].items():
            for m in names:
                lines.append(f"| {s} | {m} | " + " | ".join(pm(per[m], key, spec) for _, key, spec in cols) + " |")
        lines += [f"\n### {kind} requests: limits from the calibration half, rates on the test half\n",
                  f"| {size} | derived limits | test FRR | " + head.format(prefix="test "), "|---:|---|---:|" + rule]
        for s, d in a["derived"][kind].items():
            lim = ", ".join(f"{k} {v:g}" for k, v in d["limits"].items())
            lines.append(f"| {s} | {lim} | "
                         + rates_cells(d["test"], a["released"][kind][s]["derived_test"], weak, methods, names))
        lines += [f"\n### {kind} requests: each check alone, under its {size}'s derived limits (test half)\n",
                  "| check | " + " | ".join(f"{size} = {s}: FRR / " + " / ".join(weak)
                                           for s in a["derived"][kind]) + " | "
                  + " | ".join(f"{size} for ≥ 95% on {m}" for m in weak) + " |",
                  "|---|" + "---:|" * (len(a["derived"][kind]) + len(weak))]
        for g, e in a["per_gate"][kind].items():
            cells = []
            for s in a["derived"][kind]:
                x = e["by_size"].get(s)
                cells.append("–" if x is None else " / ".join(f"{x.get(m, 0):.0%}" for m in names))
            lines.append(f"| {g} | " + " | ".join(cells) + " | "
                         + " | ".join(str(e["needs"].get(m) or "none") for m in weak) + " |")
    ch = a["chosen"]
    pool = {"class": "pool.class_retrains", "record": "pool.shadows"}
    lines += ["\n### Chosen\n", ", ".join(f"{pool[k]} = {v}" for k, v in ch["sizes"].items()) + "; gates: "
              + ", ".join(f"{k}: {v:g}" for k, v in ch["limits"].items()), "",
              "| kind | size | has power | half | FRR | power (model: share rejected) | released by the product |",
              "|---|---:|---|---|---:|---|---|"]
    for kind, names in result["settings"]["models"].items():
        rel = ch["released_test"][kind]
        for half in ("test", "all"):
            per = ch[half][kind]
            weak = ", ".join(f"{m} {pct(per[m], 'low')}" for m in names if m != "retrain")
            shown = ", ".join(f"{m} {r['released']}/{r['n']}" for m, r in rel.items()) if half == "test" else ""
            label = half if half == "test" else "all (calibration half in-sample)"
            lines.append(f"| {kind} | {ch['sizes'][kind]} | {'yes' if ch['has_power'][kind] else 'no'} | {label} | "
                         f"{pct(per['retrain'], 'high')} | {weak} | {shown} |")
    return "\n".join(lines)


# ---------- main ----------


def measure(args: argparse.Namespace, params: Params, art: Artifacts, models: dict[str, list[str]]
            ) -> tuple[list[dict], dict]:
    """Every judgement, kept per kind in --work/gate-calibration/ and reused when made with the same settings."""
    classes = load_dataset(art.prepare).num_classes
    answers = max(2, -(-args.requests // classes))
    answers += answers % 2  # a calibration half and a test half of equal size
    pool = pool_mod.load_current(art, params)
    common = {"gates": params.gates.model_dump(), "verification": params.evaluation.verification.model_dump(),
              "measures": answer.MEASURES}
    keys = {kind: {**common, "models": names, "options": {m: params.method_options(m).model_dump() for m in names[2:]}}
            for kind, names in models.items()}
    prefix = {"class": "class-", "record": "shadows-"}  # the pool files each kind reads
    more = {"class": {"answers": answers, "sizes": args.class_k},
            "record": {"requests": args.requests, "answers": 2, "sizes": list(RECORD_N), "records": args.records}}
    for kind in keys:
        files = {f: h for f, h in pool.index["files"].items() if f.startswith(prefix[kind])}
        keys[kind] |= {"pool_files": files, **more[kind]}
    work = {"class": lambda: (class_rows(params, art, answers, models["class"][2:], args.class_k), {}),
            "record": lambda: record_rows(params, art, args.requests, 2, models["record"][2:], args.records)}
    rows: list[dict] = []
    meta: dict[str, Any] = {"answers_per_class": answers, "record_answers": 2, "unsupported": {}, "class_s": 0.0,
                            "record_s": 0.0}
    for kind, key in keys.items():
        cache = art.root / "gate-calibration" / f"{kind}-rows.json"
        saved = json.loads(cache.read_text()) if cache.exists() else {}
        if saved.get("key") == json.loads(json.dumps(key)):
            log(f"{kind} measurements reused from {cache}")
        else:
            t0 = time.perf_counter()
            got, unsupported = work[kind]()
            saved = {"key": key, "rows": got, "seconds": time.perf_counter() - t0,
                     "unsupported": {str(k): v for k, v in unsupported.items()}}
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_text(cache, json.dumps(saved))
        rows += saved["rows"]
        meta[f"{kind}_s"] = saved["seconds"]
        meta["unsupported"] |= saved["unsupported"]
    return rows, meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=str(PARAMS), help="experiment file (default params.yaml: digits; "
                    "configs/mnist-t10k.yaml: the MLP on MNIST's 10k split)")
    ap.add_argument("--work", default=None, help="project folder (default work/gate-calibration-<experiment>)")
    ap.add_argument("--set", action="append", default=[], help="param override KEY=VALUE (YAML value)")
    ap.add_argument("--requests", type=int, default=20, help="requests of each kind (class: every class × "
                    "⌈requests / classes⌉ answer retrains, even; records: this many draws × 2 answer retrains)")
    ap.add_argument("--class-methods", default="head_finetune", help="must-fail methods on class requests")
    ap.add_argument("--record-methods", default=None, help="must-fail methods on record requests (default: "
                    "finetune and what the pipeline answers records with: unlearn.method, or "
                    "requests.fallback_method when that is DiHyFo)")
    ap.add_argument("--kinds", default="class,record", help="the request kinds to calibrate (class: the "
                    "per-class retrains; record: the membership shadows); one `gates:` is chosen over those given")
    ap.add_argument("--records", type=int, default=RECORDS, help="records per record request (one person's few "
                    "records: 1 to 20)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: tiny MLPs)")
    ap.add_argument("--class-k", default=",".join(map(str, CLASS_K)), help="class requests: the pool sizes K "
                    f"to judge at (comma-separated, each in {list(CLASS_K)}; fewer: faster)")
    ap.add_argument("--json", default=None, help="write the result here (e.g. bench/results/gate_calibration.json)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    params, art = setup(args)
    on_records = params.requests.fallback_method if params.unlearn.method in VARIANTS else params.unlearn.method
    record_methods = args.record_methods.split(",") if args.record_methods else \
        list(dict.fromkeys(["finetune", on_records]))
    models = {"class": ["retrain", "theta0", *args.class_methods.split(",")],
              "record": ["retrain", "theta0", *record_methods]}
    kinds = args.kinds.split(",")
    if not kinds or set(kinds) - set(models):
        ap.error(f"--kinds {args.kinds!r}: choose from class, record (comma-separated)")
    models = {k: v for k, v in models.items() if k in kinds}
    try:
        args.class_k = sorted({int(k) for k in args.class_k.split(",")})
    except ValueError:
        args.class_k = []
    if not args.class_k or set(args.class_k) - set(CLASS_K):
        ap.error(f"--class-k: choose pool sizes from {list(CLASS_K)} (comma-separated)")
    rows, meta = measure(args, params, art, models)
    pool = experiment_raw(args.params, None, parse_overrides(args.set)).get("pool") or {}
    today = {"class": pool.get("class_retrains", 4), "record": pool.get("shadows", 16)}  # the experiment's own
    result = {"command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "machine": machine(),
              "measure_s": meta["class_s"] + meta["record_s"], "analyse_s": None,
              "settings": {"params": os.path.relpath(Path(args.params).resolve(), REPO), "requests": args.requests,
                           "models": models,
                           "class_k": args.class_k, "record_n": list(RECORD_N), "records_per_request": args.records,
                           "relearn_m": list(params.evaluation.verification.relearn_m),
                           "gates": params.gates.model_dump(), "alpha": ALPHA, **meta},
              "analysis": analyse(rows, params, models, today), "rows": flat(rows)}
    result["analyse_s"] = time.perf_counter() - t0
    print(markdown(result))
    print(f"\n(this run {result['analyse_s']:.0f} s; the measurements took {meta['class_s']:.0f} s for class "
          f"requests, {meta['record_s']:.0f} s for record requests, beside the project and pool build)")
    if args.json:
        head = json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1, default=str)
        table = ",\n".join(json.dumps(v) for v in result["rows"]["values"])
        write_text(Path(args.json), f'{head[:-2]},\n "rows": {{"columns": {json.dumps(result["rows"]["columns"])}, '
                   f'"values": [\n{table}\n]}}\n}}\n')


if __name__ == "__main__":
    main()
