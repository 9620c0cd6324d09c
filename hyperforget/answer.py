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

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from hyperforget import publish, tracking
from hyperforget.artifacts import Artifacts
from hyperforget.config import Params
from hyperforget.data import Dataset, ForgetSplit, forget_split, load_dataset
from hyperforget.gates import GateResult
from hyperforget.io import read_json, sha256_file, write_json
from hyperforget.metrics import Evaluator, summarise
from hyperforget.models import ModelSpec, load_model, save_model
from hyperforget.options import VARIANTS
from hyperforget.unlearn import run_method
from hyperforget.unlearn.method import UnlearnInputs
from hyperforget.zoo import INDEX

PIPELINE_RUN = None  # the pipeline's own request writes requests/<slug>/<method>/, ad-hoc ones runs/<name>/


@dataclass(frozen=True)
class RequestContext:
    """The prepared data, θ0 with its spec, the request's split and the evaluator fitted on θ0."""

    data: Dataset
    original: Any
    spec: ModelSpec
    split: ForgetSplit
    evaluator: Evaluator


def context(params: Params, art: Artifacts) -> RequestContext:
    data = load_dataset(art.prepare)
    original, spec = load_model(art.model)
    split = forget_split(data, params.forget)
    return RequestContext(data, original, spec, split,
                          Evaluator.for_original(original, data, split, params.evaluation.mia_splits, params.seed))


def inputs(params: Params, art: Artifacts, ctx: RequestContext) -> UnlearnInputs:
    return UnlearnInputs(ctx.original, ctx.spec, ctx.data, ctx.split, params.seed, art, params.gates)


def reference(params: Params, art: Artifacts, ctx: RequestContext) -> dict:
    """Mean ± std of the retrain-from-scratch models for this request, cached by what determines them."""
    opts = params.method_options("retrain", seeds=params.evaluation.retrain_seeds)
    key = hashlib.sha256(json.dumps([sha256_file(art.dataset), sha256_file(art.model), params.forget.model_dump(),
                                     opts.model_dump(), params.evaluation.model_dump(), params.seed],
                                    sort_keys=True).encode()).hexdigest()
    cache = art.reference(params.forget.slug())
    if cache.exists():
        cached = read_json(cache)
        if cached.get("key") == key:
            return cached["summary"]
    res = run_method("retrain", inputs(params, art, ctx), opts)
    summary = summarise([ctx.evaluator.report(m) for m in res.models])
    write_json(cache, {"key": key, "summary": summary, "seeds": opts.seeds})
    return summary


def method_lineage(art: Artifacts, method: str) -> dict[str, str]:
    """What a sampled model comes from beyond the data and θ0: the zoo index and the hypernet checkpoint."""
    if method not in VARIANTS:
        return {}
    return {"zoo": sha256_file(art.zoo / INDEX), "hypernet": sha256_file(art.hypernet(method) / "checkpoint.json")}


def unlearn(params: Params, art: Artifacts, method: str | None = None, run: str | None = PIPELINE_RUN,
            parent: Any = None) -> dict:
    """Unlearn the configured request with one method, evaluate it against the retrain reference and
    write the model and its report under the request's folder; returns a JSON-able record."""
    method = method or params.unlearn.method
    options = params.method_options(method)
    ctx = context(params, art)
    ref = reference(params, art, ctx)
    res = run_method(method, inputs(params, art, ctx), options)
    report = ctx.evaluator.report(res.model)
    out = art.request(params.forget.slug(), method, run)
    digest = save_model(out / "model.safetensors", res.model, ctx.spec)
    record = {"request": params.forget.slug(), "method": method, "report": report, "reference": ref,
              "options": res.options, "sha256": digest}
    write_json(out / "report.json", record)  # deterministic: what DVC and a certificate may hash
    write_json(out / "timing.json", {"wall_time_s": res.wall_time_s, "steps": res.steps, "info": res.info})
    with tracking.start_stage_run(params, art, f"unlearn/{method}", parent=parent) as mlrun:
        mlrun.log_metrics({**report, "wall_time_s": res.wall_time_s, "steps": res.steps})
        mlrun.log_artifacts([out / "report.json", out / "timing.json"])
    return {"model_path": str(out / "model.safetensors"), "report_path": str(out / "report.json"),
            "sha256": digest, "report": report, "reference": ref, "method": method,
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
           register: bool = False, request_key: str | None = None) -> Answer:
    """Unlearn, gate and (with `register`) register, export and upload; see the module docstring."""
    with tracking.start_stage_run(params, art, f"request/{params.forget.slug()}") as parent:
        request = unlearn(params, art, method, run, parent)
        verdict = publish.gate(request, params)
        registered = exported = None
        if register:
            registered = publish.register(request, verdict, params, art, parent=parent, key=request_key)
            if verdict.passed:
                exported = publish.export_and_upload(registered["name"], registered["version"], params, art)
        parent.log_metrics({"gates.passed": verdict.passed})
    text = publish.summary_markdown(request, verdict, registered, exported)
    return Answer(request, verdict, registered, exported, text)
