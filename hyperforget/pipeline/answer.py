"""Answer one deletion request: unlearn → measure against the retrain reference → gate → register → export.

Why one function: the CLI (`hyperforget unlearn [--register]`), the DVC `publish` stage and the
Prefect `unlearn` flow must do the same thing and leave the same records, so they all call `answer`.
It opens one MLflow run `request/<slug>` that the unlearning and registration runs nest under, and
returns the outcome with the gate verdict; it never decides the exit status: a caller whose request
failed its gates signals it (the CLI exits 1, the flow fails), after showing the gate report.

Each request writes under its own folder (`Artifacts.request(slug, method, run)`); `request_key`
makes registration idempotent: a retried answer with the same key (the flow passes its flow-run id)
finds the version its first attempt created and completes it instead of adding a second one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hyperforget.base import records
from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import ConfigError
from hyperforget.base.io import (
    load_tensors,
    read_json,
    recorded_sha256,
    save_tensors,
    sha256_bytes,
    sha256_file,
    sha256_json,
    tensor_bytes,
    tensor_metadata,
    write_json,
)
from hyperforget.config.options import CLASS_ONLY, VARIANTS
from hyperforget.config.params import ForgetConfig, Params
from hyperforget.data.datasets import Dataset, ForgetSplit, forget_split, load_dataset
from hyperforget.models.metrics import Evaluator, MembershipAttack, accuracy, attack_features, summarise
from hyperforget.models.nets import ModelSpec, load_model, predict, save_model
from hyperforget.models.outputs import OriginalOutputs, original_outputs
from hyperforget.publish import release as publish
from hyperforget.publish import runs
from hyperforget.publish.onnx import prewarm as prewarm_export
from hyperforget.unlearn import run_method
from hyperforget.unlearn.method import UnlearnInputs
from hyperforget.verify import pool as pool_mod
from hyperforget.verify.gates import GateResult, check_gates, record_power
from hyperforget.verify.lira import true_class_logit
from hyperforget.verify.verdict import shadows_and_held_out, verify
from hyperforget.zoo.shards import INDEX

PIPELINE_RUN = None  # the pipeline's own request writes requests/<slug>/<method>/, ad-hoc ones runs/<name>/


@dataclass(frozen=True)
class RequestContext:
    """The prepared data, θ0 with its spec, the request's split and the evaluator fitted on θ0; `outputs`: θ0's
    kept outputs (`models.outputs`), from which θ0 and an answer that kept its frozen layers are scored."""

    data: Dataset
    original: Any
    spec: ModelSpec
    split: ForgetSplit
    evaluator: Evaluator
    outputs: OriginalOutputs | None = None

    def logits(self, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """`model`'s logits on the train and test splits (`OriginalOutputs.logits` when θ0's are kept)."""
        if self.outputs is not None:
            return self.outputs.logits(model, self.original, self.data)
        return predict(model, self.data.x_train), predict(model, self.data.x_test)

    def report(self, model: nn.Module) -> dict:
        """The evaluator's output metrics of `model` (`Evaluator.report`), from `logits`."""
        return self.evaluator.report_logits(*self.logits(model))


def context(params: Params, art: Artifacts) -> RequestContext:
    data = load_dataset(art.prepare)
    original, spec = load_model(art.model)
    split = forget_split(data, params.forget)
    outputs = original_outputs(art.original_outputs, original, data, recorded_sha256(art.dataset),
                               params.hypernet.generate)
    evaluator = Evaluator.for_original_logits(outputs.train_logits, outputs.test_logits, data, split,
                                              params.evaluation.mia_splits, params.seed)
    return RequestContext(data, original, spec, split, evaluator, outputs)


def inputs(params: Params, art: Artifacts, ctx: RequestContext) -> UnlearnInputs:
    return UnlearnInputs(ctx.original, ctx.spec, ctx.data, ctx.split, params.seed, art, params.gates)


def reference_models(params: Params, art: Artifacts, ctx: RequestContext) -> tuple[dict, list[nn.Module]]:
    """A reference trained for this request (`evaluation.reference: per_request`, or a class set, which the pool
    does not hold): `evaluation.retrain_seeds` retrains from scratch without D_f, with the mean ± std of their
    metrics, cached under the request folder by what determines them: the summary as JSON (`art.reference`), the
    models as safetensors (`art.reference_models`), both carrying the same key; nothing is pickled. A record
    request is keyed by its record set, not by the path of its ids file: the same ids submitted again reuse it."""
    opts = params.method_options("retrain", seeds=params.evaluation.retrain_seeds)
    evaluation = params.evaluation.model_dump(exclude={"methods", "verification", "reference"})
    forget = params.forget.model_dump()
    if params.forget.samples is not None:
        forget["samples"] = records.file_digest(params.forget.samples)
    key = sha256_json([sha256_file(art.dataset), sha256_file(art.model), forget, opts.model_dump(), evaluation,
                       params.seed], sort_keys=True)
    cache, weights = art.reference(params.forget.slug()), art.reference_models(params.forget.slug())
    if cache.exists() and weights.exists() and read_json(cache).get("key") == key:
        models = _load_models(weights, key)  # checksum-verified first: a damaged file says how to fix it
        if models is not None:
            return read_json(cache)["summary"], models
    res = run_method("retrain", inputs(params, art, ctx), opts)
    summary = summarise([ctx.evaluator.report(m) for m in res.models])
    save_tensors(weights, pool_mod.pack(res.models), {**ctx.spec.to_metadata(), "key": key,
                                                      "models": str(len(res.models)),
                                                      "seeds": json.dumps(res.info.get("seeds"))})
    write_json(cache, {"key": key, "summary": summary, "seeds": opts.seeds, "seconds": res.wall_time_s})
    return summary, res.models


def _load_models(path: Path, key: str) -> list[nn.Module] | None:
    """The models of a reference cache, or None if they were cached under another key."""
    tensors, meta = load_tensors(path), tensor_metadata(path)
    if meta.get("key") != key:
        return None
    return pool_mod.unpack(ModelSpec.from_metadata(meta), tensors, int(meta["models"]))


def reference(params: Params, art: Artifacts, ctx: RequestContext) -> dict:
    """Mean ± std of the retrain-from-scratch models trained for this request (see `reference_models`)."""
    return reference_models(params, art, ctx)[0]


@dataclass(frozen=True)
class Reference:
    """What a request is verified against: the output metrics' summary, LiRA's shadows (the probe/relearn
    reference), the held-out retrain (None against membership shadows), which shadow saw which record of D_f
    (`seen` [K, |D_f|], record requests against the pool) and where it came from (`source`, for the record and
    the certificate: the pool's sha256 and files, or a per-request reference with its cost). `original_report`:
    θ0's output metrics on this request when the reference came with them (a pool class, `pool_class_reference`),
    else None and the power check measures them. `shadow_logits`: the membership shadows' logits on the train
    and test splits, kept in the pool (`Pool.shadows`), so a record request runs no shadow. `phis`: the shadows'
    φ on D_f and the held-out retrain's, kept beside a pool class's reference, so LiRA runs neither."""

    summary: dict
    shadows: list[nn.Module]
    held_out: nn.Module | None
    seen: torch.Tensor | None
    source: dict
    original_report: dict | None = None
    shadow_logits: tuple[torch.Tensor, torch.Tensor] | None = None
    phis: tuple[np.ndarray, np.ndarray] | None = None


def resolve_reference(params: Params, art: Artifacts, ctx: RequestContext) -> Reference:
    """The request's reference: read from the reference pool (`evaluation.reference: pool`, the default; it
    trains nothing, and a missing or stale pool is refused with the command that builds it), or trained for
    this request when asked for explicitly (`per_request`). A single class reads its K per-class retrains; a
    record request the membership shadows, each record judged against the shadows that never saw it; a class
    set has no pool reference (no retrain without the whole set): it needs `per_request`, said so."""
    classes = params.forget.classes
    if params.evaluation.reference == "per_request":
        summary, models = reference_models(params, art, ctx)
        shadows, held_out = shadows_and_held_out(models)
        cached = read_json(art.reference(params.forget.slug()))
        return Reference(summary, shadows, held_out, None, {"kind": "per_request", "retrains": len(models),
                                                             "seconds": cached.get("seconds")})
    if classes is not None and len(classes) > 1:
        raise ConfigError(f"the reference pool holds retrains without one class; class set {sorted(classes)} has "
                          f"no retrain without all of it there. Answer it with a reference trained for it "
                          f"(evaluation.retrain_seeds = {params.evaluation.retrain_seeds} retrains): "
                          f"{pool_mod.PER_REQUEST_SETTING}")
    pool = pool_mod.load_current(art, params)
    if classes is not None:
        models = pool.class_models(classes[0])
        shadows, held_out = shadows_and_held_out(models)
        summary, original_report, phis = pool_class_reference(params, art, ctx, pool, models)
        return Reference(summary, shadows, held_out, None, pool_mod.describe(pool, [pool.class_file(classes[0])]),
                         original_report, phis=(phis[:-1], phis[-1]))
    shadows = pool.shadows()
    seen_f, logits = shadows.seen[:, ctx.split.forget_idx], (shadows.train_logits, shadows.test_logits)
    return Reference(_record_summary(ctx, logits, seen_f), shadows.models, None, seen_f,
                     pool_mod.describe(pool, pool.shadow_files()), shadow_logits=logits)


def pool_class_reference(params: Params, art: Artifacts, ctx: RequestContext, pool: pool_mod.Pool,
                         models: list[nn.Module]) -> tuple[dict, dict, np.ndarray]:
    """The output reference of a single-class request from the pool (its K retrains' metrics, summarised),
    θ0's metrics on the same request (the power check's) and the K retrains' LiRA φ on D_f [K, |D_f|] (`lira`),
    measured once per class: each is a pass over the whole data set (or D_f) per model and a membership attack
    fitted per model, most of a request's reference cost on the CNN (8 of 27 s on LeNet-5, MNIST 10k split).
    Kept as JSON beside the request (`Artifacts.pool_reference`), keyed by the pool's sha256, the class's file,
    D_f and the evaluator's settings; the pool stage measures every class (`warm_pool_references`), so a request
    only reads it."""
    c = params.forget.classes[0]
    key = sha256_json([pool.sha256, pool.class_file(c), sha256_bytes(ctx.split.forget_idx.numpy().tobytes()),
                       ctx.evaluator.mia_splits, ctx.evaluator.seed])
    path = art.pool_reference(params.forget.slug())
    if path.exists():
        cached = read_json(path)
        if cached.get("key") == key and "phis" in cached:
            return cached["summary"], cached["original_report"], np.asarray(cached["phis"])
    summary = summarise([ctx.evaluator.report(m) for m in models])
    original_report = ctx.report(ctx.original)
    xf, yf = ctx.data.x_train[ctx.split.forget_idx], ctx.data.y_train[ctx.split.forget_idx]
    phis = [true_class_logit(m, xf, yf).tolist() for m in models]
    write_json(path, {"key": key, "summary": summary, "original_report": original_report, "phis": phis})
    cached = read_json(path)  # the values a later request reads, to the last digit
    return cached["summary"], cached["original_report"], np.asarray(cached["phis"])


def warm_pool_references(params: Params, art: Artifacts) -> dict[str, Any]:
    """Measure, for every class, what a single-class request reads beside the pool's models: the output
    reference and θ0's metrics (`pool_class_reference`), the reference models' probe and relearn numbers and
    θ0's verification (`reference_verification`). The pool stage runs it after building, so verifying a
    class request costs the answer's own verification only; the numbers are a function of the pool, θ0, the
    data and the options, so nothing here is trained."""
    t0 = time.perf_counter()
    n = load_dataset(art.prepare).num_classes
    pooled = params.evaluation.model_copy(update={"reference": "pool"})  # whatever the project answers with
    for c in range(n):
        p = params.model_copy(update={"forget": ForgetConfig(classes=[c], seed=params.forget.seed),
                                      "evaluation": pooled})
        ctx = context(p, art)
        reference_verification(p, art, ctx, resolve_reference(p, art, ctx))
    return {"classes": n, "seconds": time.perf_counter() - t0}


def _record_summary(ctx: RequestContext, logits: tuple[torch.Tensor, torch.Tensor], seen_f: torch.Tensor) -> dict:
    """The output metrics' reference of a record request, from the shadows' logits on the train and test splits
    (`Pool.shadows`): each shadow scored on the records of D_f it never saw
    (forget accuracy and MIA as a model that never saw them scores them), then moved by how much better a
    full-data model does on unseen data than these half-data shadows (`_unseen`: θ0 against the shadows, on the
    test split), because the answer to a record request is a full-data model: without the shift a true retrain
    fails the forget and MIA gates (measured: bench/request_e2e.py). Retained accuracy is the shadows' (a
    little below a full retrain's, so that gate is a little lax). A shadow that saw every record of D_f (likely
    for a handful of records) is no model without any of them and is left out; each record is out of half the
    shadows, so some always remain."""
    reports, unseen = [], []
    for train_logits, test_logits, saw in zip(*logits, seen_f, strict=True):
        out = ~saw
        if not out.any():
            continue
        sub = ForgetSplit(ctx.split.forget_idx[out], ctx.split.retain_idx, None)
        ev = replace(ctx.evaluator, split=sub, member_before=ctx.evaluator.member_before[out.numpy()])
        reports.append(ev.report_logits(train_logits, test_logits))
        unseen.append(_unseen(train_logits, test_logits, ctx))
    summary = summarise(reports)
    full = _unseen(*ctx.logits(ctx.original), ctx)
    for i, key in enumerate(("forget_acc", "mia")):
        shift = full[i] - float(np.mean([u[i] for u in unseen]))
        summary[key] = {**summary[key], "mean": summary[key]["mean"] + shift}
        summary[f"full_data_shift_{key}"] = {"mean": shift, "std": 0.0}
    return summary


def _unseen(train_logits: torch.Tensor, test_logits: torch.Tensor, ctx: RequestContext) -> tuple[float, float]:
    """(test accuracy, the share of test examples its own loss attack calls member) of the model with these
    logits on the train and test splits: how it treats data it never saw, the quantity a full-data θ0 and the
    half-data shadows are compared on."""
    d = ctx.data
    r = ctx.split.retain_idx
    test = attack_features(test_logits, d.y_test)
    attack = MembershipAttack.fit(attack_features(train_logits[r], d.y_train[r]), test, ctx.evaluator.seed)
    return accuracy(test_logits, d.y_test), float(attack.is_member(test).mean())


def _models_digest(models: list[nn.Module]) -> str:
    return sha256_bytes(tensor_bytes(pool_mod.pack(models)))


MEASURES = 2
"""The version of what `verify` returns for θ0 that the power check reads; raised when it gains a key the checks
read (2: the record LiRA AUC's lower bound, `lira_auc_low`), so a cached θ0 verification without it is measured
again instead of read as "no power"."""


def reference_verification(params: Params, art: Artifacts, ctx: RequestContext, ref: Reference) -> dict:
    """θ0's verification against the request's reference (what `test_power` gates), whose "reference" entry holds
    the reference models' probe and relearn numbers (`verdict.reference_metrics`) that every answer is verified
    against: functions of the reference models, θ0, the request's split and the verification options alone, so
    measured once per request and read by every method answering it (a relearn per reference model is most of a
    verification's cost). Kept as JSON beside the request (`Artifacts.verification_reference`), keyed by a digest
    of all of those and of `MEASURES` (what `verify` measures): another pool, θ0, option or measure measures again."""
    cfg = params.evaluation.verification
    held = [ref.held_out] if ref.held_out is not None else []
    key = sha256_json([
        MEASURES, _models_digest([*ref.shadows, *held]),
        None if ref.seen is None else sha256_bytes(ref.seen.numpy().tobytes()), _models_digest([ctx.original]),
        sha256_bytes(ctx.split.forget_idx.numpy().tobytes()), list(ctx.split.classes or []),
        cfg.model_dump(mode="json")], sort_keys=True)
    path = art.verification_reference(params.forget.slug())
    if path.exists():
        cached = read_json(path)
        if cached.get("key") == key:
            return cached["original"]
    original = verify(ctx.original, ref.shadows, ref.held_out, ctx.data, ctx.split, cfg, seen=ref.seen,
                      shadow_logits=ref.shadow_logits, logits=ctx.logits(ctx.original), reference_phis=ref.phis)
    write_json(path, {"key": key, "original": original})
    return original


def test_power(params: Params, ctx: RequestContext, ref: Reference, checked: dict) -> dict:
    """Would the same test fail θ0 on this request? `checked` is θ0's verification against the same reference
    (`reference_verification`: inference and a relearn that stops at once, θ0 still classifies D_f), gated by
    today's limits. A verdict whose test θ0 passes too certifies nothing (`gates.power_check`): the checks θ0
    fails are the test's power on this request."""
    report = ref.original_report if ref.original_report is not None else ctx.report(ctx.original)
    verdict = check_gates(report, ref.summary, params.gates, checked)
    failed = sorted(name for name, c in verdict.checks.items() if not c["passed"])
    if ref.seen is not None:  # records: only a membership test that θ0 surely fails (`gates.record_power`)
        return {"original_fails": failed, **record_power(verdict.checks, checked),
                "original_lira_auc": checked.get("lira_auc"), "counted": ["lira_auc"]}
    return {"original_fails": failed, "has_power": bool(failed), "original_lira_auc": checked.get("lira_auc")}


def method_lineage(art: Artifacts, method: str) -> dict[str, str]:
    """What a sampled or retrieved model comes from beyond the data and θ0: the zoo index and the hypernet
    checkpoint (retrieval: the zoo alone)."""
    if method not in CLASS_ONLY:
        return {}
    zoo = {"zoo": sha256_file(art.zoo / INDEX)}
    return zoo if method not in VARIANTS else zoo | {"hypernet": sha256_file(art.hypernet(method) / "checkpoint.json")}


@dataclass(frozen=True)
class Prepared:
    """A request's context and reference, resolved once and passed on (`prepare`): the power check that
    chooses the method and the answer then share them. `reference_s`: the seconds resolving the reference took."""

    ctx: RequestContext
    ref: Reference
    reference_s: float


def prepare(params: Params, art: Artifacts) -> Prepared:
    ctx = context(params, art)
    t0 = time.perf_counter()
    ref = resolve_reference(params, art, ctx)
    return Prepared(ctx, ref, time.perf_counter() - t0)


def request_power(params: Params, art: Artifacts, prepared: Prepared) -> dict:
    """The test's power on this request before anything answers it (`test_power` of θ0's verification): it
    depends on the reference, θ0 and the options alone, so a request whose test cannot tell θ0 from a retrain is
    answered exactly at once, instead of after an approximate answer that could never be certified."""
    ctx, ref = prepared.ctx, prepared.ref
    return test_power(params, ctx, ref, reference_verification(params, art, ctx, ref))


def unlearn(params: Params, art: Artifacts, method: str | None = None, run: str | None = PIPELINE_RUN,
            parent: Any = None, prepared: Prepared | None = None) -> dict:
    """Unlearn the configured request with one method, evaluate it against the retrain reference and
    write the model and its report under the request's folder; returns a JSON-able record. `prepared`: the
    request's context and reference when the caller resolved them already (`prepare`)."""
    method = method or params.unlearn.method
    options = params.method_options(method)
    prepared = prepared or prepare(params, art)
    ctx, ref, reference_s = prepared.ctx, prepared.ref, prepared.reference_s
    res = run_method(method, inputs(params, art, ctx), options)
    logits = ctx.logits(res.model)
    report = ctx.evaluator.report_logits(*logits)
    t0 = time.perf_counter()
    cfg = params.evaluation.verification
    original = reference_verification(params, art, ctx, ref)
    checked = verify(res.model, ref.shadows, ref.held_out, ctx.data, ctx.split, cfg, original["reference"],
                     seen=ref.seen, shadow_logits=ref.shadow_logits, logits=logits, reference_phis=ref.phis)
    power = test_power(params, ctx, ref, original)
    verify_s = time.perf_counter() - t0
    out = art.request(params.forget.slug(), method, run)
    digest = save_model(out / "model.safetensors", res.model, ctx.spec)
    record = {"request": params.forget.slug(), "method": method, "report": report, "reference": ref.summary,
              "reference_source": ref.source, "verification": checked, "power": power, "options": res.options,
              "sha256": digest}
    write_json(out / "report.json", record)  # deterministic: what DVC and a certificate may hash
    write_json(out / "timing.json", {"wall_time_s": res.wall_time_s, "verify_s": verify_s, "steps": res.steps,
                                     "reference_s": reference_s, "info": res.info})
    with runs.start_stage_run(params, art, f"unlearn/{method}", parent=parent) as mlrun:
        mlrun.log_metrics({**report, "wall_time_s": res.wall_time_s, "verify_s": verify_s, "steps": res.steps,
                           "reference_s": reference_s})
        mlrun.log_metrics(checked, prefix="verification.")
        mlrun.log_artifacts([out / "report.json", out / "timing.json"])
    return {"model_path": str(out / "model.safetensors"), "report_path": str(out / "report.json"),
            "sha256": digest, "report": report, "reference": ref.summary, "reference_source": ref.source,
            "verification": checked, "power": power, "method": method,
            "request_slug": params.forget.slug(), "wall_time_s": res.wall_time_s, "info": res.info,
            "lineage": method_lineage(art, method)}


@dataclass
class Answer:
    """What answering a request did: the unlearning record, the gate verdict, where the model went."""

    request: dict
    gates: GateResult
    registered: dict | None = None
    exported: dict | None = None
    summary: str = ""
    records: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.gates.passed

    def to_dict(self) -> dict:
        return {"request": self.request["request_slug"], "method": self.request["method"],
                "gates": self.gates.to_dict(), "registered": self.registered, "exported": self.exported,
                "sha256": self.request["sha256"]}


def answer(params: Params, art: Artifacts, method: str | None = None, run: str | None = PIPELINE_RUN,
           register: bool = False, request_key: str | None = None, prepared: Prepared | None = None) -> Answer:
    """Unlearn, gate and (with `register`) register, export and upload; see the module docstring."""
    if register:  # the exporter starts while this unlearns (publish/onnx.py: 10 s of a fresh process's request)
        prewarm_export()
    with runs.start_stage_run(params, art, f"request/{params.forget.slug()}") as parent:
        prepared = prepared or prepare(params, art)
        request = unlearn(params, art, method, run, parent, prepared)
        verdict = publish.gate(request, params)
        registered = exported = None
        if register:
            registered = publish.register(request, verdict, params, art, parent=parent, key=request_key)
            if verdict.passed:
                exported = publish.export_and_upload(registered["name"], registered["version"], params, art,
                                                     prepared.ctx.data.x_test)
        parent.log_metrics({"gates.passed": verdict.passed})
    text = publish.summary_markdown(request, verdict, registered, exported)
    return Answer(request, verdict, registered, exported, text)
