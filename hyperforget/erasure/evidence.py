"""What a closed deletion request leaves behind: its signed certificate, where it is kept, and how it is checked.

Why a bundle: the certificate (`hyperforget.erasure.certificate`: canonical JSON, Ed25519) names, by sha256,
the files it rests on, and they sit beside it in `Artifacts.certificate(id)/`: `ids.txt` (the deleted record ids, or the
class ids of a class request: what the ledger's `ids_sha256` hashes), `report.json` (the unlearned model's
metrics and the retrain reference) and `gates.json` (the gate verdict). Anyone holding the folder can check it
with `hyperforget request verify CERT`, without the project, the ledger or the registry.

Where it goes: the folder, the published version's MLflow run (`certificate/`, without `ids.txt`: the folder
holds the one copy of the ids), and S3 next to the version's ONNX file when S3 is configured (certificate.json
and .md); the version is tagged with the certificate's sha256. For a record request whose records were erased
from the data, its `data` section names the data version without them (`data_erasure.certificate_fields`).
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from hyperforget.base import records
from hyperforget.base.artifacts import Artifacts
from hyperforget.base.errors import DataError
from hyperforget.base.io import sha256_file, write_json, write_text
from hyperforget.config.params import Params
from hyperforget.erasure import certificate as cert_mod
from hyperforget.erasure import data_erasure
from hyperforget.erasure.ledger import Ledger
from hyperforget.erasure.ledger_records import RequestRecord
from hyperforget.models.metrics import SCALAR_KEYS
from hyperforget.publish import registry, runs, tracking
from hyperforget.publish import release as publish
from hyperforget.publish import s3 as storage

IDS, REPORT, GATES = "ids.txt", "report.json", "gates.json"
CERT_TAG = "deletion.certificate_sha256"
MLFLOW_DIR = "certificate"
OUTPUT_GATES = ("forget_acc", "retained_test_acc", "mia")  # gates.check_gates' output checks


def plain(obj: Any) -> Any:
    """JSON-able: NaN and infinities become None (the ledger and certificates refuse them), datetimes ISO."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _reported(prefix: str, values: dict, ref: dict, keys: Any) -> dict[str, dict]:
    out = {}
    for key in keys:
        value, r = values.get(key), ref.get(key) or {}
        if not _number(value):
            continue
        mean, std = r.get("mean"), r.get("std")
        against = f"retrain {mean:.4f} ± {std or 0:.4f}" if _number(mean) else "no retrain value"
        out[f"{prefix}{key}"] = {"passed": None, "value": value, "retrain_mean": mean, "retrain_std": std,
                                 "detail": f"{value:.4f} ({against})"}
    return out


def verification(unlearned: dict, gates: dict) -> dict[str, dict]:
    """The verifier's results for the certificate: each metric of the unlearned model and of the verifier
    (LiRA, probe, relearn; when the answer carried them) beside the retrain reference, reported with
    `passed` null, and the verification gates' own verdicts (every gate check beyond the output gates)."""
    report, ref = unlearned.get("report") or {}, unlearned.get("reference") or {}
    out = _reported("", report, ref, (*SCALAR_KEYS, "forgetting_rate"))
    extra = unlearned.get("verification")
    if isinstance(extra, dict):
        out |= _reported("verification.", extra, extra.get("reference") or {}, sorted(extra))
    checks = gates.get("checks") or {}
    out |= {f"gate.{k}": v for k, v in checks.items() if k not in OUTPUT_GATES and isinstance(v, dict)}
    return out


def _files(folder: Path, rec: RequestRecord, art: Artifacts, unlearned: dict, verified: dict) -> dict[str, str]:
    if rec.scope_kind == "classes":
        write_text(folder / IDS, "".join(f"{c}\n" for c in rec.classes))
    else:
        write_text(folder / IDS, (art.deletion(rec.request_id) / IDS).read_text())
    write_json(folder / REPORT, {"report": unlearned.get("report"), "reference": unlearned.get("reference")})
    write_json(folder / GATES, verified.get("gates"))
    return {name: sha256_file(folder / name) for name in (IDS, REPORT, GATES)}


def build(art: Artifacts, led: Ledger, rec: RequestRecord, resolved: list[dict], folder: Path) -> dict:
    """The certificate's fields from the ledger's record of the request (it is the source of truth)."""
    history = led.history(rec.request_id)
    d = {t.state: t.detail for t in history}
    scoped, unlearned, verified, published = (d.get(s, {}) for s in ("scoped", "unlearned", "verified", "published"))
    registered, exported = published.get("registered") or {}, published.get("exported") or {}
    gates = verified.get("gates") or {}
    original = scoped.get("original_sha256")
    fields = {
        "request": {
            "id": rec.request_id, "requester": rec.requester, "submitted_at": rec.submitted_at, "due_at": rec.due_at,
            "closed_at": led.now(), "scope_kind": rec.scope_kind, "classes": rec.classes,
            "ids_sha256": rec.ids_sha256, "n_records": scoped.get("n_records"), "dataset_sha256": rec.dataset_sha256,
            "record_hash": records.RECORD_HASH,
            "transitions": [{"state": t.state, "at": t.at} for t in history],
        },
        "models": {
            "before": {"name": "original θ0 (not registered; every version in scope derives from it)",
                       "version": f"lineage.original:{str(original)[:12]}", "weights_sha256": original,
                       "path": str(art.model.relative_to(art.root))},
            "after": {"name": registered.get("name"), "version": registered.get("version"),
                      "weights_sha256": unlearned.get("weights_sha256"), "run_id": registered.get("run_id"),
                      "onnx_sha256": exported.get("sha256"), "location": exported.get("s3_uri") or
                      exported.get("onnx_path")},
            "in_scope": resolved,
        },
        "method": {"name": unlearned.get("method"), "requested": unlearned.get("requested_method"),
                   "fallback": unlearned.get("fallback"), "params": unlearned.get("options")},
        "gates": {"passed": gates.get("passed"), "checks": gates.get("checks"), "reasons": gates.get("reasons"),
                  "retrain_reference": unlearned.get("reference"),
                  "reference_source": unlearned.get("reference_source"), "power": unlearned.get("power")},
        "verification": verification(unlearned, gates),
        "files": _files(folder, rec, art, unlearned, verified),
        "data": data_erasure.certificate_fields(led, rec),
    }
    return cert_mod.build_certificate(plain(fields))


def issue(params: Params, art: Artifacts, led: Ledger, rec: RequestRecord, resolved: list[dict]) -> dict:
    """Build, sign and write the certificate of a request ready to close, log it to the published version's
    MLflow run and upload it next to the ONNX file; returns where it went (the `closed` step's detail)."""
    folder = art.certificate(rec.request_id)
    key, created = cert_mod.load_or_create_key(art.resolve(params.requests.signing_key))
    cert = cert_mod.sign(build(art, led, rec, resolved, folder), key)
    written = cert_mod.write_certificate(cert, folder)
    digest = sha256_file(written["json"])
    after = cert["models"]["after"]
    name, version, run_id = after["name"], after["version"], after["run_id"]
    client = tracking.client(params, art)
    runs.StageRun(client, run_id).log_artifacts(
        [written["json"], written["markdown"], *(folder / f for f in cert["files"] if f != IDS)], MLFLOW_DIR)
    uris = []
    if os.environ.get(storage.ENDPOINT_VAR):
        prefix = f"{params.storage.prefix.strip('/')}/{name}/{version}".lstrip("/")
        for path in (written["json"], written["markdown"]):
            storage.upload_file(path, publish.bucket(params), f"{prefix}/{path.name}")
            uris.append(f"s3://{publish.bucket(params)}/{prefix}/{path.name}")
    registry.set_tags(name, version, {CERT_TAG: digest}, client)
    public = cert["signature"]["public_key"]
    out = {"path": str(written["json"].relative_to(art.root)),
           "markdown": str(written["markdown"].relative_to(art.root)), "sha256": digest,
           "mlflow": f"runs:/{run_id}/{MLFLOW_DIR}/certificate.json", "s3": uris, "public_key": public,
           "fingerprint": cert_mod.fingerprint(public), "new_public_key": public if created else None}
    registry.note_certificate(name, version, certificate_note(rec.request_id, out), client)
    return out


def certificate_note(request_id: str, issued: dict) -> str:
    """The version description's certificate paragraph: which request, its sha256, and every place it is kept."""
    where = [f"`{issued['path']}` in the project", f"`{issued['mlflow']}`", *(f"`{u}`" for u in issued["s3"][:1])]
    return (f"{registry.CERTIFICATE}: deletion request `{request_id}` closed with a signed certificate, sha256 "
            f"`{issued['sha256']}`, kept at {', '.join(where)} (signed by {issued['fingerprint']}); check it with "
            "`hyperforget request verify CERTIFICATE`.")


def project_public_key(key_path: Path) -> str | None:
    """The public key this project signs with (environment or key file), or None when it has none yet; never
    creates a key."""
    if not (os.environ.get(cert_mod.ENV_VAR, "").strip() or Path(key_path).exists()):
        return None
    return cert_mod.public_key_b64(cert_mod.load_or_create_key(Path(key_path))[0])


def verify_certificate(path: str | Path, public_key: str | None = None) -> list[str]:
    """Every problem with the certificate at `path` ([] = valid): its signature (and signer, given `public_key`),
    its bytes, the sha256 of each file it names (beside it), and that its ids file hashes to its ids_sha256."""
    path = Path(path)
    problems = cert_mod.verify(path, public_key, files_root=path.parent)
    try:
        cert = json.loads(path.read_bytes())
        expected = cert["request"]["ids_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return problems or [f"{path} has no request.ids_sha256"]
    ids = path.parent / IDS
    if not ids.is_file():
        return problems  # cert_mod.verify named the missing file already
    try:
        got = records.ids_sha256(records.read_ids(ids).indices)
    except DataError as e:
        return [*problems, str(e)]
    if got != expected:
        problems.append(f"{ids} hashes to {got[:12]}…, not the certificate's ids_sha256 {str(expected)[:12]}…: it "
                        "names other records than were deleted")
    return problems
