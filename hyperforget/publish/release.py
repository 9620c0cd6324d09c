"""After unlearning: gate → register → export + upload (→ complete) → promote, and fetch by reference.

Each function is one step, takes and returns plain data (paths, URIs, metrics) and is safe to
repeat. The registry is the source of truth between steps: `export_and_upload` and `promote` read a
version's own tags, so a version that failed its gates is never exported, uploaded or promoted,
whoever calls them; and a version becomes `candidate` only once `export_and_upload` has put its ONNX
file in the run and in S3 and verified it (`registry.mark_complete`).

A version is an MLflow Model: its run's `model/` folder holds the ONNX flavour (MLmodel, signature,
input example, requirements) beside the safetensors weights, report and gate verdict, so
`mlflow.pyfunc.load_model("models:/NAME@candidate")` and `mlflow models serve` work on it.

Without HYPERFORGET_S3_ENDPOINT (the embedded default) the ONNX file is not uploaded: it stays in the
version's MLflow run (`model/model.onnx`) and under `artifacts/export/`, and `fetch` reads it from
there, verified against the same `sha256.onnx` tag.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any
from uuid import uuid4

import torch

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import ConfigError, DataError, GateFailed, IntegrityError
from hyperforget.base.io import atomic_path, sha256_file, sha256_json, sidecar
from hyperforget.config.options import EXACT_METHODS
from hyperforget.config.params import Params
from hyperforget.data.datasets import load_dataset
from hyperforget.models.nets import ModelSpec, load_model
from hyperforget.publish import registry, runs, tracking
from hyperforget.publish import s3 as storage
from hyperforget.publish.onnx import export_onnx, mlflow_signature, onnx_outputs
from hyperforget.verify.gates import GateResult, check_gates

MODEL_DIR = "model"  # the run artifact folder a version's source points at
ONNX_REQUIREMENTS = ["onnx", "onnxruntime"]  # given, so MLflow does not infer them (5–11 s each)


def gate(request_result: dict, params: Params) -> GateResult:
    return check_gates(request_result["report"], request_result["reference"], params.gates,
                       request_result.get("verification"), require_verification=True,
                       power=request_result.get("power"), exact=request_result.get("method") in EXACT_METHODS)


def register(request_result: dict, gate_result: GateResult | dict, params: Params, art: Artifacts,
             parent: Any = None, key: str | None = None, name: str | None = None) -> dict:
    """Log the request's model, report and gate verdict to an MLflow run and register it as a new
    version of `name` (default `registry.model_name(params)`), without an alias (see the module docstring).

    Retry-safe with a `key` (the flow passes its flow-run id): the version is keyed by
    `<key>:<weights sha256>:<verdict sha256>`, so a retried attempt (same key, same weights, same verdict) returns
    the version an earlier attempt created rather than adding a duplicate. The verdict is part of the key because a
    version's gate tags are its record: the same weights judged again under other limits (gates recalibrated
    after a failure) become a new version, never a failed one re-read as passed. Without a key every call
    registers a new version."""
    g = gate_result if isinstance(gate_result, GateResult) else GateResult.from_dict(gate_result)
    model_path = Path(request_result["model_path"])
    weights_sha = sha256_file(model_path)
    if request_result.get("sha256") != weights_sha:
        raise IntegrityError(f"{model_path} changed after the unlearning step wrote it (sha256 {weights_sha[:12]}…, "
                             f"expected {str(request_result.get('sha256'))[:12]}…): another run wrote to the same "
                             "folder; give concurrent requests their own run names (the unlearn flow does)")
    method = request_result["method"]
    name = name or registry.model_name(params)
    verdict = sha256_json(g.to_dict(), sort_keys=True)[:16]
    asked, key = key, f"{key}:{weights_sha}:{verdict}" if key is not None else uuid4().hex
    c = tracking.client(params, art)
    existing = registry.find_version(name, key, c)
    if existing is not None:
        return _registered(existing, g)
    with runs.start_stage_run(params, art, "register", parent=parent,
                                  tags={"method": method, registry.KEY_TAG: key}) as run:
        run.log_metrics(request_result["report"])
        run.log_metrics(request_result["reference"], prefix="reference.")
        run.log_metrics({f"gates.{k}": c_["passed"] for k, c_ in g.checks.items()} | {"gates.passed": g.passed})
        run.log_artifacts([model_path, sidecar(model_path), request_result["report_path"]], MODEL_DIR)
        run.log_dict(g.to_dict(), f"{MODEL_DIR}/gates.json")
        tags = registry.version_tags(request_result["report"], g, weights_sha, method,
                                     lineage(art) | request_result.get("lineage", {}))
        about = registry.version_description(request_result.get("request_slug", "?"), method, g, asked)
        mv = registry.register(name, f"runs:/{run.run_id}/{MODEL_DIR}", run.run_id, tags, c, key=key,
                               description=about)
    return _registered(mv, g)


def _registered(mv: Any, g: GateResult) -> dict:
    return {"name": mv.name, "version": str(mv.version), "run_id": mv.run_id, "gates_passed": g.passed}


def lineage(art: Artifacts) -> dict[str, str]:
    """sha256 of what every model of this project comes from: the prepared data and the original θ0."""
    return {name: sha256_file(path) for name, path in (("dataset", art.dataset), ("original", art.model))
            if path.exists()}


PARITY_INPUTS = 512  # test images the ONNX export is checked on


def _check_inputs(art: Artifacts, input_shape: tuple[int, ...], x_test: torch.Tensor | None = None) -> torch.Tensor:
    """Parity inputs: the prepared test split's first `PARITY_INPUTS` images (`x_test` when the caller holds the
    split already, else read), else seeded standard-normal inputs (the data is standardised, so that is the scale
    the model sees)."""
    try:
        x = (load_dataset(art.prepare).x_test if x_test is None else x_test)[:PARITY_INPUTS]
        if tuple(x.shape[1:]) == tuple(input_shape):
            return x
    except (DataError, IntegrityError, OSError):
        pass
    return torch.randn(256, *input_shape, generator=torch.Generator().manual_seed(0))


def bucket(params: Params) -> str:
    """HYPERFORGET_S3_BUCKET (set by the local stack with its endpoint) wins over storage.bucket."""
    return os.environ.get("HYPERFORGET_S3_BUCKET") or params.storage.bucket


def _mlflow_model(onnx_path: Path, spec: ModelSpec, x_example: torch.Tensor, out: Path) -> Path:
    """Write the ONNX flavour of an MLflow Model (MLmodel with its tensor signature, input example,
    requirements) into `out`; returns the model.onnx inside it (re-serialised by MLflow: the file shipped)."""
    import mlflow.onnx
    import onnx

    mlflow.onnx.save_model(onnx.load(str(onnx_path)), str(out), input_example=x_example.numpy(),
                           signature=mlflow_signature(spec), pip_requirements=ONNX_REQUIREMENTS,
                           onnx_execution_providers=["CPUExecutionProvider"],
                           save_as_external_data=False)  # one self-contained file, as fetched
    return out / "model.onnx"


def export_and_upload(name: str, version: str | int, params: Params, art: Artifacts,
                      x_test: torch.Tensor | None = None) -> dict:
    """Export a gated version to ONNX (parity-checked on the test split's first images: `x_test` when the caller
    has the prepared test split loaded, as a request has), log it as the version's MLflow Model, upload it to
    s3://<bucket>/<prefix>/<name>/<version>/model.onnx when S3 is configured and verify the upload, tag
    the version (`sha256.onnx`, `s3.onnx_uri`) and only then mark it complete (which moves `candidate`).
    Idempotent: a retry redoes what an outage interrupted. GateFailed for a version that failed its gates."""
    c = tracking.client(params, art)
    mv = registry.get_version(name, version, c)
    failures = registry.gate_failures(mv)
    if failures:
        raise GateFailed(f"refusing to export {name} version {version}: it failed its gates ({'; '.join(failures)})")
    work = art.exported(name, mv.version)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tracking.with_retries(lambda: c.download_artifacts(mv.run_id, MODEL_DIR, tmp), c.tracking_uri))
        weights = local / "model.safetensors"
        if sha256_file(weights) != mv.tags.get("sha256.weights"):
            raise IntegrityError(f"the weights logged for {name} version {version} do not match its sha256.weights "
                                 "tag; the run's artifacts were changed after registration — register again")
        model, spec = load_model(weights)
        x = _check_inputs(art, spec.input_shape, x_test)
        info = export_onnx(model, spec, Path(tmp) / "export" / "model.onnx", x[:8], x)
        flavour = Path(tmp) / "mlmodel"
        shipped = _mlflow_model(Path(info["path"]), spec, x[:1], flavour)
        if not (abs(onnx_outputs(shipped, x) - model(x).detach().numpy()).max() <= info["max_abs_diff"] + 1e-6):
            raise IntegrityError(f"the MLflow Model of {name} version {version} predicts differently from its export")
        with atomic_path(work / "model.onnx") as part:
            shutil.copyfile(shipped, part)
        run = runs.StageRun(c, mv.run_id)
        run.log_artifacts(sorted(flavour.iterdir()), MODEL_DIR)
    digest = sha256_file(work / "model.onnx")
    tags = {"sha256.onnx": digest, "onnx.max_abs_diff": f"{info['max_abs_diff']:.3g}",
            "onnx.argmax_agreement": f"{info['argmax_agreement']:.6g}"}
    key = s3_uri = None
    if os.environ.get(storage.ENDPOINT_VAR):
        key = f"{params.storage.prefix.strip('/')}/{name}/{mv.version}/model.onnx".lstrip("/")
        storage.upload_file(work / "model.onnx", bucket(params), key)
        with tempfile.TemporaryDirectory() as tmp:  # what S3 holds now, read back and checked
            storage.fetch_file(bucket(params), key, Path(tmp) / "model.onnx", digest)
        s3_uri = tags["s3.onnx_uri"] = f"s3://{bucket(params)}/{key}"
    registry.set_tags(name, mv.version, tags, c)
    registry.mark_complete(name, mv.version, c)
    return {"name": name, "version": str(mv.version), "onnx_path": str(work / "model.onnx"), "onnx_key": key,
            "s3_uri": s3_uri, "sha256": digest, "max_abs_diff": info["max_abs_diff"],
            "argmax_agreement": info["argmax_agreement"], "location": s3_uri or str(work / "model.onnx")}


def promote(name: str, version: str | int, params: Params, art: Artifacts) -> dict:
    """Move `champion` to `version` (GateFailed, champion unmoved, unless it is gated and complete)."""
    mv = registry.promote(name, version, tracking.client(params, art))
    return {"name": name, "version": str(mv.version), "alias": registry.CHAMPION}


def fetch(ref: str, out_dir: str | Path, params: Params, art: Artifacts) -> Path:
    """Download the ONNX file of `NAME@ALIAS` / `NAME/VERSION` to `out_dir/<name>-v<version>.onnx`,
    verified against the version's `sha256.onnx` tag; on any failure no file is left."""
    c = tracking.client(params, art)
    mv = registry.resolve(ref, c)
    expected = mv.tags.get("sha256.onnx")
    if not expected or mv.tags.get(registry.COMPLETE_TAG) != "true":
        raise ConfigError(f"{ref} (version {mv.version}) has no complete ONNX export: "
                          f"{'; '.join(registry.promotion_blockers(mv))}")
    out = Path(out_dir) / f"{mv.name}-v{mv.version}.onnx"
    uri = mv.tags.get("s3.onnx_uri")
    if uri:
        b, _, key = uri.removeprefix("s3://").partition("/")
        return storage.fetch_file(b, key, out, expected)
    with tempfile.TemporaryDirectory() as tmp, atomic_path(out) as part:
        got = Path(c.download_artifacts(mv.run_id, f"{MODEL_DIR}/model.onnx", tmp))
        if sha256_file(got) != expected:
            raise IntegrityError(f"the ONNX file logged for {mv.name} version {mv.version} does not match its "
                                 f"sha256.onnx tag; re-export it (`hyperforget export {mv.name} {mv.version}`)")
        part.write_bytes(got.read_bytes())
    return out


def summary_markdown(request_result: dict, gate_result: GateResult | dict, registered: dict | None,
                     exported: dict | None) -> str:
    """The human summary of one request: metrics against the retrain reference, gates, where it went."""
    g = gate_result if isinstance(gate_result, GateResult) else GateResult.from_dict(gate_result)
    report, ref = request_result["report"], request_result["reference"]
    rows = [f"| {k} | {report[k]:.4f} | {ref.get(k, {}).get('mean', float('nan')):.4f} |"
            for k in ("forget_acc", "retain_acc", "test_acc", "test_retained_acc", "mia") if k in report]
    lines = [f"# Unlearning request `{request_result.get('request_slug', '?')}` — method `{request_result['method']}`",
             "", "| metric | unlearned | retrain mean |", "|---|---:|---:|", *rows, "",
             f"## Gates: {'PASSED' if g.passed else 'FAILED'}", "", *[f"- {line}" for line in g.lines()], ""]
    if registered:
        alias = " (alias `candidate`)" if exported else " (no alias: gates failed)" if not g.passed else ""
        lines.append(f"Registry: `{registered['name']}` version {registered['version']}{alias}, "
                     f"run `{registered['run_id']}`")
    if exported:
        lines.append(f"ONNX: `{exported['location']}` sha256 `{exported['sha256']}` "
                     f"(max |diff| vs PyTorch {exported['max_abs_diff']:.2g})")
    elif registered:
        lines.append("ONNX: not exported (a version that fails its gates is never exported)")
    return "\n".join(lines) + "\n"
