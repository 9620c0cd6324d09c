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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from hyperforget.base import records
from hyperforget.base.artifacts import Artifacts
from hyperforget.base.io import load_tensors, read_json, save_tensors, sha256_file, tensor_metadata, write_json
from hyperforget.config.options import VARIANTS
from hyperforget.config.params import Params
from hyperforget.data.datasets import Dataset, ForgetSplit, forget_split, load_dataset
from hyperforget.models.metrics import Evaluator, summarise
from hyperforget.models.nets import ModelSpec, load_model, save_model
from hyperforget.publish import release as publish
from hyperforget.publish import runs
from hyperforget.unlearn import run_method
from hyperforget.unlearn.method import UnlearnInputs
from hyperforget.verify.gates import GateResult
from hyperforget.verify.verdict import shadows_and_held_out, verify
from hyperforget.zoo.shards import INDEX

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


def reference_models(params: Params, art: Artifacts, ctx: RequestContext) -> tuple[dict, list[nn.Module]]:
    """The retrain-from-scratch reference of this request: the mean ± std of its metrics and the retrained
    models themselves (verification's shadows and held-out retrain), cached under the request folder by what
    determines them: the summary as JSON (`art.reference`), the models as safetensors
    (`art.reference_models`), both carrying the same key; nothing is pickled. A record request is keyed by its
    record set, not by the path of its ids file: the same ids submitted again reuse the reference."""
    opts = params.method_options("retrain", seeds=params.evaluation.retrain_seeds)
    evaluation = params.evaluation.model_dump(exclude={"methods", "verification"})  # what the models/summary use
    forget = params.forget.model_dump()
    if params.forget.samples is not None:
        forget["samples"] = records.file_digest(params.forget.samples)
    key = hashlib.sha256(json.dumps([sha256_file(art.dataset), sha256_file(art.model), forget,
                                     opts.model_dump(), evaluation, params.seed],
                                    sort_keys=True).encode()).hexdigest()
    cache, weights = art.reference(params.forget.slug()), art.reference_models(params.forget.slug())
    if cache.exists() and weights.exists() and read_json(cache).get("key") == key:
        models = _load_models(weights, key)  # checksum-verified first: a damaged file says how to fix it
        if models is not None:
            return read_json(cache)["summary"], models
    res = run_method("retrain", inputs(params, art, ctx), opts)
    summary = summarise([ctx.evaluator.report(m) for m in res.models])
    tensors = {f"{i}.{name}": t for i, m in enumerate(res.models) for name, t in m.state_dict().items()}
    save_tensors(weights, tensors, {**ctx.spec.to_metadata(), "key": key, "models": str(len(res.models)),
                                    "seeds": json.dumps(res.info.get("seeds"))})
    write_json(cache, {"key": key, "summary": summary, "seeds": opts.seeds})
    return summary, res.models


def _load_models(path: Path, key: str) -> list[nn.Module] | None:
    """The models of a reference cache, or None if they were cached under another key."""
    tensors, meta = load_tensors(path), tensor_metadata(path)
    if meta.get("key") != key:
        return None
    spec, models = ModelSpec.from_metadata(meta), []
    for i in range(int(meta["models"])):
        model = spec.build()
        model.load_state_dict({k.split(".", 1)[1]: t for k, t in tensors.items() if k.split(".", 1)[0] == str(i)})
        models.append(model.eval())
    return models


def reference(params: Params, art: Artifacts, ctx: RequestContext) -> dict:
    """Mean ± std of the retrain-from-scratch models for this request (see `reference_models`)."""
    return reference_models(params, art, ctx)[0]


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
    ref, retrains = reference_models(params, art, ctx)
    res = run_method(method, inputs(params, art, ctx), options)
    report = ctx.evaluator.report(res.model)
    t0 = time.perf_counter()
    shadows, held_out = shadows_and_held_out(retrains)
    checked = verify(res.model, shadows, held_out, ctx.data, ctx.split, params.evaluation.verification)
    verify_s = time.perf_counter() - t0
    out = art.request(params.forget.slug(), method, run)
    digest = save_model(out / "model.safetensors", res.model, ctx.spec)
    record = {"request": params.forget.slug(), "method": method, "report": report, "reference": ref,
              "verification": checked, "options": res.options, "sha256": digest}
    write_json(out / "report.json", record)  # deterministic: what DVC and a certificate may hash
    write_json(out / "timing.json", {"wall_time_s": res.wall_time_s, "verify_s": verify_s, "steps": res.steps,
                                     "info": res.info})
    with runs.start_stage_run(params, art, f"unlearn/{method}", parent=parent) as mlrun:
        mlrun.log_metrics({**report, "wall_time_s": res.wall_time_s, "verify_s": verify_s, "steps": res.steps})
        mlrun.log_metrics(checked, prefix="verification.")
        mlrun.log_artifacts([out / "report.json", out / "timing.json"])
    return {"model_path": str(out / "model.safetensors"), "report_path": str(out / "report.json"),
            "sha256": digest, "report": report, "reference": ref, "verification": checked, "method": method,
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
    with runs.start_stage_run(params, art, f"request/{params.forget.slug()}") as parent:
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
