"""Signed deletion certificates: what was deleted, from which model, how, and the evidence that it worked.

Why signed: a certificate is evidence for people who did not watch the run (the data subject, an auditor).
An Ed25519 signature over the certificate lets anyone holding the public key check that nothing was changed
after issue, without trusting the disk or bucket it came from. The signature covers canonical JSON (sorted
keys, no whitespace, UTF-8), so it names the content, not one pretty-printing of it; `verify` also insists
that the file is byte for byte the layout `write_certificate` writes, so not even one byte of the file
(whitespace, `1e-05` → `1E-05`) changes unnoticed. Only the public key ever enters a certificate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import numbers
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hyperforget.base.errors import ConfigError
from hyperforget.base.io import sha256_file, write_bytes, write_text

FORMAT = "hyperforget-deletion-certificate/1"
ENV_VAR = "HYPERFORGET_SIGNING_KEY"
# what the caller must supply (a value may be null where the fact is unknown, e.g. n_records of a class request)
REQUIRED = (
    "request.id", "request.submitted_at", "request.closed_at", "request.ids_sha256", "request.n_records",
    *(f"models.{side}.{k}" for side in ("before", "after") for k in ("name", "version", "weights_sha256")),
    "method.name", "method.params", "gates.passed", "gates.checks", "gates.retrain_reference", "verification", "files",
)
_NEW_KEY_HINT = 'python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())"'


def load_or_create_key(path: Path, env_var: str = ENV_VAR) -> tuple[Ed25519PrivateKey, bool]:
    """The signing key: from `env_var` (base64 of the raw 32-byte key) if set, else the PEM file at `path`,
    else a new key written there (mode 0600). Returns (key, created)."""
    if raw := os.environ.get(env_var, "").strip():
        try:
            seed = base64.b64decode(raw, validate=True)
            if len(seed) != 32:
                raise ValueError(f"{len(seed)} bytes, not 32")
            return Ed25519PrivateKey.from_private_bytes(seed), False
        except ValueError as e:
            raise ConfigError(f"${env_var} is not base64 of a raw 32-byte Ed25519 private key ({e}); "
                              f"make one with {_NEW_KEY_HINT}, or unset it to use {path}") from e
    path = Path(path)
    if path.exists():
        return _read_key(path), False
    key = Ed25519PrivateKey.generate()
    try:
        _create_exclusively(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    except FileExistsError:  # another process created it between our check and our write: use theirs
        return _read_key(path), False
    return key, True


def _read_key(path: Path) -> Ed25519PrivateKey:
    mode = path.stat().st_mode & 0o777
    if os.name == "posix" and mode & 0o077:
        raise ConfigError(f"signing key {path} is readable by others (mode {mode:o}); run: chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{path} is not an unencrypted PEM (PKCS8) private key ({e}); restore it from backup, "
                          f"or set ${ENV_VAR}") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 key; certificates are Ed25519")
    return key


def _create_exclusively(path: Path, data: bytes) -> None:
    """Write `data` to a 0600 temp file and hard-link it into place: complete or absent, never overwritten."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.link(tmp, path)  # raises FileExistsError instead of replacing a key someone else just wrote
    finally:
        os.unlink(tmp)


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return base64.b64encode(pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def fingerprint(public_key: str) -> str:
    """OpenSSH-style fingerprint of a base64 public key: short enough to read out over the phone."""
    digest = hashlib.sha256(base64.b64decode(public_key)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def canonical_bytes(cert: dict) -> bytes:
    """What the signature covers: the certificate without its `signature` block, as canonical JSON."""
    body = {k: v for k, v in cert.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def file_bytes(cert: dict) -> bytes:
    """The exact bytes of certificate.json: indented, sorted keys, UTF-8, one trailing newline."""
    return (json.dumps(cert, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode()


def build_certificate(fields: dict) -> dict:
    """An unsigned certificate from the caller's facts: checked for the required sections, converted to
    plain JSON (datetimes → ISO-8601 UTC, paths → str, NaN/inf → strings) and stamped with its format."""
    cert = _plain(fields)
    if not isinstance(cert, dict):
        raise ConfigError(f"certificate fields must be a dict, got {type(fields).__name__}")
    if "signature" in cert:
        raise ConfigError("certificate fields already hold a signature; build from unsigned fields, then sign")
    missing = [path for path in REQUIRED if not _has(cert, path.split("."))]
    files = cert.get("files") if isinstance(cert.get("files"), dict) else {}
    bad = [n for n, h in files.items() if not (isinstance(h, str) and len(h) == 64)]
    if missing or bad:
        raise ConfigError(f"certificate fields incomplete: missing {', '.join(missing) or 'nothing'}; "
                          f"files without a sha256 hex digest: {', '.join(bad) or 'none'}")
    return {**cert, "format": FORMAT}


def _has(node: Any, keys: list[str]) -> bool:
    return not keys or (isinstance(node, dict) and keys[0] in node and _has(node[keys[0]], keys[1:]))


def sign(cert: dict, key: Ed25519PrivateKey) -> dict:
    """A copy of `cert` with a signature block over its canonical JSON (any earlier signature is replaced)."""
    body = {k: v for k, v in cert.items() if k != "signature"}
    try:
        signature = key.sign(canonical_bytes(body))
    except ValueError as e:
        raise ConfigError(f"certificate is not plain JSON ({e}); build it with build_certificate()") from e
    return {**body, "signature": {"algorithm": "Ed25519", "public_key": public_key_b64(key),
                                  "signature": base64.b64encode(signature).decode()}}


def verify(cert_path: Path, public_key_b64: str | None = None, files_root: Path | None = None) -> list[str]:
    """Every problem found with the certificate at `cert_path` (an empty list means it is valid): unreadable
    JSON, a missing or bad signature, a signer other than `public_key_b64`, bytes outside the signed content
    changed, and (given `files_root`) referenced files whose sha256 differs."""
    try:
        data = Path(cert_path).read_bytes()
        cert = json.loads(data.decode("utf-8"))
    except OSError as e:
        return [f"cannot read {cert_path}: {e.strerror or e}"]
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return [f"{cert_path} is not valid UTF-8 JSON ({e}): it was damaged or is not a certificate"]
    if not isinstance(cert, dict):
        return [f"{cert_path} holds a JSON {type(cert).__name__}, not a certificate object"]
    problems = _signature_problems(cert, public_key_b64)
    if cert.get("format") != FORMAT:
        problems.append(f"format is {cert.get('format')!r}, not {FORMAT!r}: this is not a deletion certificate")
    try:
        exact = file_bytes(cert) == data
    except ValueError:  # NaN/Infinity: never written by write_certificate
        exact = False
    if not exact:
        problems.append(f"{cert_path} is not byte for byte as issued (reformatted, or a byte outside the signed "
                        "values changed); re-issue it rather than editing it")
    if files_root is not None:
        problems += _file_problems(cert.get("files"), Path(files_root))
    return problems


def _signature_problems(cert: dict, expected_key: str | None) -> list[str]:
    block = cert.get("signature")
    if not isinstance(block, dict):
        return ["no signature block: the certificate was never signed, or its signature was removed"]
    if block.get("algorithm") != "Ed25519":
        return [f"signature algorithm {block.get('algorithm')!r} is not Ed25519"]
    try:
        raw_key = base64.b64decode(block["public_key"], validate=True)
        signature = base64.b64decode(block["signature"], validate=True)
        public = Ed25519PublicKey.from_public_bytes(raw_key)
    except (KeyError, TypeError, ValueError, binascii.Error):
        return ["signature block is malformed: public_key and signature must be base64 of 32 and 64 bytes"]
    problems = []
    if expected_key is not None and _b64_or_none(expected_key) != raw_key:
        problems.append(f"signed by key {fingerprint(block['public_key'])}, not by the expected key "
                        f"{fingerprint(expected_key) if _b64_or_none(expected_key) else repr(expected_key)}")
    try:
        public.verify(signature, canonical_bytes(cert))
    except (InvalidSignature, ValueError):
        problems.append("signature does not match the content: the certificate was changed after signing")
    return problems


def _b64_or_none(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (ValueError, binascii.Error, AttributeError):
        return None


def _file_problems(files: Any, root: Path) -> list[str]:
    if not isinstance(files, dict):
        return ["certificate has no `files` table of name → sha256"]
    problems = []
    for name, digest in sorted(files.items()):
        rel = PurePath(name)
        if rel.is_absolute() or ".." in rel.parts:
            problems.append(f"file {name!r} points outside {root}; a certificate names files relative to it")
        elif not (root / rel).is_file():
            problems.append(f"file {name} is missing under {root}")
        elif (actual := sha256_file(root / rel)) != digest:
            problems.append(f"file {name} has sha256 {actual[:12]}…, the certificate says {str(digest)[:12]}…")
    return problems


def _plain(fields: dict) -> Any:
    """Round-trip through JSON: datetimes → ISO-8601 UTC, paths → str, numpy scalars → numbers, NaN → "NaN"."""
    def default(obj: Any) -> Any:
        if isinstance(obj, datetime):
            return (obj.replace(tzinfo=UTC) if obj.tzinfo is None else obj.astimezone(UTC)).isoformat()
        if isinstance(obj, PurePath | tuple):
            return str(obj) if isinstance(obj, PurePath) else list(obj)
        if isinstance(obj, numbers.Integral | numbers.Real):
            return int(obj) if isinstance(obj, numbers.Integral) else float(obj)
        raise TypeError(f"{type(obj).__name__} cannot be written as JSON")
    try:
        return json.loads(json.dumps(fields, default=default), parse_constant=str)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"certificate fields must be plain data: {e}") from e


def write_certificate(cert: dict, out_dir: Path) -> dict[str, Path]:
    """Write certificate.json (the signed evidence) and certificate.md (its human rendering), each atomically."""
    if not isinstance(cert.get("signature"), dict):
        raise ConfigError("refusing to write an unsigned certificate; sign(cert, key) it first")
    out_dir = Path(out_dir)
    md = write_text(out_dir / "certificate.md", render_markdown(cert))
    return {"json": write_bytes(out_dir / "certificate.json", file_bytes(cert)), "markdown": md}


def render_markdown(cert: dict) -> str:
    """The certificate for a reader: the request, what was deleted, models before → after, the method, the gates,
    the verification and who signed it."""
    req, models, gates = cert.get("request", {}), cert.get("models", {}), cert.get("gates", {})
    method, sig = cert.get("method", {}), cert.get("signature") or {}
    scope = f"all records of classes {req['classes']}" if req.get("classes") else "individual records"
    lines = [
        f"# Deletion certificate — request `{req.get('id')}`", "",
        f"- **Requested by**: {req.get('requester', 'unknown')}",
        f"- **Submitted**: {req.get('submitted_at')}  ·  **Closed**: {req.get('closed_at')}",
        f"- **Deleted**: {scope}; " + (f"{n} records" if (n := req.get("n_records")) is not None else "count unknown"),
        f"- **sha256 of the sorted deleted ids**: `{req.get('ids_sha256')}`",
        f"- **Dataset sha256**: `{req.get('dataset_sha256')}`", "",
        "## Models", "", "| | name | version | weights sha256 |", "|---|---|---|---|",
        *[f"| {side} | {m.get('name')} | {m.get('version')} | `{m.get('weights_sha256')}` |"
          for side, m in (("before", models.get("before") or {}), ("after", models.get("after") or {}))], "",
        f"## Method: {method.get('name')}", "", f"Parameters: `{json.dumps(method.get('params'), sort_keys=True)}`", "",
        f"## Gates: {'PASSED' if gates.get('passed') else 'FAILED'}", "",
        *_verdicts(gates.get("checks")), "",
        f"Retrain reference: `{json.dumps(gates.get('retrain_reference'), sort_keys=True)}`", "",
        *_reference_lines(gates.get("reference_source"), method.get("fallback")),
        "## Verification", "", *(_verdicts(cert.get("verification")) or ["- (none recorded)"]), "",
        "## Files", "", *[f"- `{n}`: sha256 `{h}`" for n, h in sorted((cert.get("files") or {}).items())], "",
        "## Signature", "",
    ]
    if sig.get("public_key"):
        lines += [f"Signed with {sig.get('algorithm')} by public key `{sig['public_key']}` "
                  f"(fingerprint `{fingerprint(sig['public_key'])}`).", "",
                  "Check it with `hyperforget.erasure.certificate.verify(path, public_key_b64=...)`: an empty list of "
                  "problems means no byte of certificate.json changed since it was signed."]
    else:
        lines.append("**Not signed.**")
    return "\n".join(lines) + "\n"


def _reference_lines(source: Any, fallback: Any) -> list[str]:
    """What the verdict rests on (the reference pool's sha256, or a reference trained for the request) and, when
    the answer is exact because the test had no power, that it is."""
    lines = []
    if isinstance(source, dict) and source.get("kind") == "pool":
        lines.append(f"Reference: the reference pool, sha256 `{source.get('sha256')}` "
                     f"({len(source.get('files') or {})} files read).")
    elif isinstance(source, dict):
        lines.append(f"Reference: {source.get('retrains')} retrains trained for this request.")
    if isinstance(fallback, dict) and fallback.get("reason"):
        lines.append(f"Answered by {fallback.get('to')} instead of {fallback.get('from')}: {fallback['reason']}.")
    return [*lines, ""] if lines else []


def _verdicts(results: Any) -> list[str]:
    """One line per check: `- PASS name: detail`, from {name: {passed, detail?, ...}} (gates.GateResult shape);
    `passed: null` marks a measurement that is reported, not judged (INFO)."""
    if not isinstance(results, dict):
        return []
    out = []
    for name, r in results.items():
        r = r if isinstance(r, dict) else {"passed": bool(r)}
        detail = r.get("detail") or ", ".join(f"{k}={v}" for k, v in r.items() if k != "passed")
        verdict = "INFO" if "passed" in r and r["passed"] is None else "PASS" if r.get("passed") else "FAIL"
        out.append(f"- {verdict} {name}" + (f": {detail}" if detail else ""))
    return out
