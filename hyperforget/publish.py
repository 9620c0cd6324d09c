"""After unlearning: gate → register → export + upload → promote, and fetch by reference.

Each function is one step a Prefect task (or a CLI command) wraps, takes and returns plain data
(paths, URIs, metrics), and is safe to repeat. The registry is the source of truth between steps:
`export_and_upload` and `promote` read a version's own `gates.passed` tag, so a version that failed
its gates is never exported, uploaded or promoted, whoever calls them.

Without HYPERFORGET_S3_ENDPOINT (the embedded default) the ONNX file is not uploaded: it stays in the
version's MLflow run (`model/model.onnx`) and under `artifacts/export/`, and `fetch` reads it from
there, verified against the same `sha256.onnx` tag.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from uuid import uuid4

import torch

from hyperforget import registry, storage, tracking
from hyperforget.config import Params
from hyperforget.errors import ConfigError, DataError, GateFailed, IntegrityError
from hyperforget.export import export_onnx
from hyperforget.gates import GateResult, check_gates
from hyperforget.io import atomic_path, sha256_file, sidecar
from hyperforget.models import load_model

EXPORTS = Path("artifacts") / "export"
MODEL_DIR = "model"  # the run artifact folder a version's source points at


def gate(request_result: dict, params: Params) -> GateResult:
    return check_gates(request_result["report"], request_result["reference"], params.gates)


def _lineage(request_result: dict) -> dict[str, str]:
    """sha256 of the data and original model (from stages), then whatever the request adds (zoo, hypernet)."""
    from hyperforget import stages

    base = {"original" if k == "model" else k: v for k, v in stages.lineage().items()}
    return base | {k: str(v) for k, v in (request_result.get("lineage") or {}).items()}


def register(request_result: dict, gate_result: GateResult | dict, params: Params, parent=None) -> dict:
    """Log the request's model, report and gate verdict to an MLflow run and register it as a new
    version of `registry.model_name(params)`; `candidate` moves to it only if the gates passed.

    Retry-safe under a `parent` run: the version is keyed by `<parent>:<weights sha256>`, so a retried
    attempt (same parent, same weights) returns the version an earlier attempt created rather than
    adding an alias-less duplicate. Each attempt still logs its own run; a retry's extra run is
    harmless evidence, and the returned `run_id` is the one the version points at. Without a parent
    (a plain CLI call) every call registers a new version."""
    import mlflow

    g = gate_result if isinstance(gate_result, GateResult) else GateResult.from_dict(gate_result)
    model_path = Path(request_result["model_path"])
    weights_sha = sha256_file(model_path)
    if request_result.get("sha256", weights_sha) != weights_sha:
        raise IntegrityError(f"{model_path} changed after the unlearning step wrote it (sha256 {weights_sha[:12]}…, "
                             f"expected {request_result['sha256'][:12]}…): another run wrote to the same folder; "
                             "give concurrent requests their own output folders (the unlearn flow does)")
    method = request_result["method"]
    name = registry.model_name(params)
    key = f"{tracking.run_id_of(parent)}:{weights_sha}" if parent is not None else uuid4().hex
    with tracking.start_stage_run(params, "register", parent=parent,
                                  tags={"method": method, registry.KEY_TAG: key}) as run:
        tracking.log_metrics(request_result["report"])
        tracking.log_metrics(request_result["reference"], prefix="reference.")
        tracking.log_metrics({f"gates.{k}": c["passed"] for k, c in g.checks.items()} | {"gates.passed": g.passed})
        tracking.log_artifacts([model_path, sidecar(model_path), request_result["report_path"]], MODEL_DIR)
        mlflow.log_dict(g.to_dict(), f"{MODEL_DIR}/gates.json")
        run_id = run.info.run_id
        tags = registry.version_tags(request_result["report"], g, weights_sha, method, _lineage(request_result))
        mv = registry.register(name, f"runs:/{run_id}/{MODEL_DIR}", run_id, tags, tracking.client(params), key=key)
    return {"name": name, "version": str(mv.version), "run_id": mv.run_id, "candidate": g.passed}


def _check_inputs(input_shape: tuple[int, ...]) -> torch.Tensor:
    """Parity inputs: the prepared test split when present, else seeded standard-normal inputs
    (the data is standardised, so that is the scale the model sees)."""
    from hyperforget import stages

    try:
        x = stages.load_data().x_test[:512]
        if tuple(x.shape[1:]) == tuple(input_shape):
            return x
    except (DataError, IntegrityError, OSError):
        pass
    return torch.randn(256, *input_shape, generator=torch.Generator().manual_seed(0))


def bucket(params: Params) -> str:
    """HYPERFORGET_S3_BUCKET (set by the local stack with its endpoint) wins over storage.bucket."""
    return os.environ.get("HYPERFORGET_S3_BUCKET") or params.storage.bucket


def export_and_upload(name: str, version: str | int, params: Params) -> dict:
    """Export a gated version to ONNX (parity-checked), log it to the version's run, upload it to
    s3://<bucket>/<prefix>/<name>/<version>/model.onnx when S3 is configured, and tag the version
    with `sha256.onnx` (and `s3.onnx_uri`). GateFailed for a version whose gates did not pass."""
    c = tracking.client(params)
    mv = c.get_model_version(name, str(version))
    failures = registry.gate_failures(mv)
    if failures:
        raise GateFailed(f"refusing to export {name} version {version}: it failed its gates ({'; '.join(failures)})")
    work = EXPORTS / name / str(mv.version)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(c.download_artifacts(mv.run_id, MODEL_DIR, tmp))
        weights = local / "model.safetensors"
        if sha256_file(weights) != mv.tags.get("sha256.weights"):
            raise IntegrityError(f"the weights logged for {name} version {version} do not match its sha256.weights "
                                 "tag; the run's artifacts were changed after registration — register again")
        model, spec = load_model(weights)
    x = _check_inputs(spec.input_shape)
    info = export_onnx(model, spec, work / "model.onnx", x[:8], x)
    c.log_artifact(mv.run_id, info["path"], MODEL_DIR)
    tags = {"sha256.onnx": info["sha256"], "onnx.max_abs_diff": f"{info['max_abs_diff']:.3g}",
            "onnx.argmax_agreement": f"{info['argmax_agreement']:.6g}"}
    key = s3_uri = None
    if os.environ.get(storage.ENDPOINT_VAR):
        key = f"{params.storage.prefix.strip('/')}/{name}/{mv.version}/model.onnx".lstrip("/")
        storage.upload_file(info["path"], bucket(params), key)
        s3_uri = tags["s3.onnx_uri"] = f"s3://{bucket(params)}/{key}"
    registry.set_tags(name, mv.version, tags, c)
    return {"name": name, "version": str(mv.version), "onnx_path": info["path"], "onnx_key": key, "s3_uri": s3_uri,
            "sha256": info["sha256"], "max_abs_diff": info["max_abs_diff"],
            "argmax_agreement": info["argmax_agreement"], "location": s3_uri or info["path"]}


def promote(name: str, version: str | int, params: Params | None = None) -> dict:
    """Move `champion` to `version` (GateFailed, champion unmoved, if its gates failed)."""
    mv = registry.promote(name, version, tracking.client(params))
    return {"name": name, "version": str(mv.version), "alias": registry.CHAMPION}


def fetch(ref: str, out_dir: str | Path, params: Params | None = None) -> Path:
    """Download the ONNX file of `NAME@ALIAS` / `NAME/VERSION` to `out_dir/<name>-v<version>.onnx`,
    verified against the version's `sha256.onnx` tag; on any failure no file is left."""
    c = tracking.client(params)
    mv = registry.resolve(ref, c)
    expected = mv.tags.get("sha256.onnx")
    if not expected:
        raise ConfigError(f"{ref} (version {mv.version}) has no ONNX export: it failed its gates or was never "
                          f"exported ({'; '.join(registry.gate_failures(mv)) or 'gates passed'})")
    out = Path(out_dir) / f"{mv.name}-v{mv.version}.onnx"
    uri = mv.tags.get("s3.onnx_uri")
    if uri:
        b, _, key = uri.removeprefix("s3://").partition("/")
        return storage.fetch_file(b, key, out, expected)
    with tempfile.TemporaryDirectory() as tmp, atomic_path(out) as part:
        got = Path(c.download_artifacts(mv.run_id, f"{MODEL_DIR}/model.onnx", tmp))
        if sha256_file(got) != expected:
            raise IntegrityError(f"the ONNX file logged for {mv.name} version {mv.version} does not match its "
                                 "sha256.onnx tag; re-export it (publish.export_and_upload)")
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
        alias = " (alias `candidate`)" if registered.get("candidate") else " (no alias: gates failed)"
        lines.append(f"Registry: `{registered['name']}` version {registered['version']}{alias}, "
                     f"run `{registered['run_id']}`")
    if exported:
        lines.append(f"ONNX: `{exported['location']}` sha256 `{exported['sha256']}` "
                     f"(max |diff| vs PyTorch {exported['max_abs_diff']:.2g})")
    elif registered:
        lines.append("ONNX: not exported (a version that fails its gates is never exported)")
    return "\n".join(lines) + "\n"
