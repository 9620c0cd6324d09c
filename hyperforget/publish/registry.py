"""The model registry: versions of `<dataset>-<arch>-forget-<request>`, their tags, and two aliases.

Why aliases and tags rather than stages: `candidate` marks the newest COMPLETE version, `champion` the
one serving. Complete means gated and shipped: its `gates.passed` tag is true AND its ONNX file is in
the version's run and (when S3 is configured) in S3 with a verified sha256 (`export.complete`, set by
`publish.export_and_upload` last). So an alias never names a version a user cannot fetch; a version
left half-done by an outage keeps no alias until a retry completes it. A version carries everything
needed to judge it later (metrics.*, gates.*, sha256.*, lineage.*, method). `promote` reads the
version's own tags — the registry, not the caller, is the source of truth.

A local sqlite store rejects concurrent writers with "database is locked" (and racing version
numbers or aliases with a UNIQUE violation); those are retried with jittered backoff, and `candidate`
is re-checked after each move so that concurrent registrations leave it on the newest passing version.

A version also explains itself in its description (Markdown, shown by the MLflow UI and `MlflowClient`): what
it forgets, by which method, the verdict with each failed check, and its deletion certificate (sha256 and where
it is kept) once the request closes (`note_certificate`), or why it has none.

A registration may carry an idempotency key (version tag `request.key`): a retried register whose
first attempt created the version but failed later (say, setting `candidate`) must not add a
second, alias-less version — it finds the keyed one, settles `candidate` and returns it.
"""

from __future__ import annotations

import random
import re
import time
from typing import Any

from hyperforget.base.errors import ConfigError, GateFailed
from hyperforget.config.params import Params
from hyperforget.verify.gates import GateResult

CANDIDATE, CHAMPION = "candidate", "champion"
KEY_TAG = "request.key"  # the idempotency key of a registration
COMPLETE_TAG = "export.complete"  # "true" once the ONNX file is in the run and in S3, sha256 verified
CERTIFICATE = "**Certificate**"  # the description's last paragraph starts so (`note_certificate` replaces it)
_TRANSIENT = ("database is locked", "unique constraint failed", "deadlock", "could not serialize")
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")
_REF = re.compile(r"^(?:models:/)?(?P<name>[^@/]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")


def model_name(params: Params) -> str:
    return f"{params.data.name}-{params.model.arch}-forget-{params.forget.slug()}"


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def version_tags(report: dict, gate: GateResult, weights_sha256: str, method: str,
                 lineage: dict[str, str] | None = None) -> dict[str, str]:
    """Tags a version carries: scalar metrics, every gate, checksums and what produced it."""
    tags = {f"metrics.{k}": _fmt(v) for k, v in report.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}
    tags |= {"gates.passed": str(gate.passed).lower(),
             "gates.reasons": "; ".join(gate.reasons) or "all gates passed"}
    tags |= {f"gates.{name}": str(c["passed"]).lower() for name, c in gate.checks.items()}
    tags |= {f"lineage.{k}": str(v) for k, v in (lineage or {}).items()}
    return tags | {"sha256.weights": weights_sha256, "method": method}


def version_description(request: str, method: str, gate: GateResult, key: str | None = None) -> str:
    """What a version is, for someone who finds it in the registry: the request it forgets, the method, the
    verdict with each failed check, and where its certificate will be (none yet, or none: gates failed)."""
    head = f"**Forgets** `{request}` **with** `{method}`" + (f" (registration key `{key}`)." if key else ".")
    n = len(gate.checks)
    if gate.passed:
        verdict, cert = (f"**Verdict: passed**, all {n} gate checks.",
                         f"{CERTIFICATE}: none yet; one is issued when a deletion request this version answers "
                         "closes, and its sha256 and location are then noted here.")
    else:
        failed = gate.reasons or ["the version was not gated"]
        verdict = (f"**Verdict: failed**, {len(failed)} of {n} gate checks (no alias, never exported):\n"
                   + "\n".join(f"- {reason}" for reason in failed))
        cert = f"{CERTIFICATE}: none, a version that failed its gates is never certified."
    return "\n\n".join((head, verdict, cert))


def note_certificate(name: str, version: str | int, text: str, client: Any) -> None:
    """Replace the certificate paragraph of a version's description with `text` (a line that starts with
    `CERTIFICATE`); a description without one (an older version) gets it appended."""
    c = client
    mv = _retry(lambda: c.get_model_version(name, str(version)))
    kept = [p for p in (mv.description or "").split("\n\n") if p.strip() and not p.startswith(CERTIFICATE)]
    _retry(lambda: c.update_model_version(name, str(version), description="\n\n".join([*kept, text])))


def _transient(e: Exception) -> bool:
    return any(s in str(e).lower() for s in _TRANSIENT)


def _retry(fn, attempts: int = 10, base: float = 0.05):
    """Call `fn`, retrying transient store conflicts with jittered exponential backoff (under a minute in all)."""
    for i in range(attempts - 1):
        try:
            return fn()
        except Exception as e:
            if not _transient(e):
                raise
            time.sleep(base * 2**i * (0.5 + random.random()))
    return fn()


def ensure_registered_model(name: str, client: Any) -> None:
    from mlflow.exceptions import MlflowException

    c = client

    def create() -> None:
        try:
            c.create_registered_model(name, description="Unlearned models for one deletion request (hyperforget).")
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    _retry(create)


def find_version(name: str, key: str, client: Any) -> Any:
    """The version of `name` registered with idempotency key `key`, or None. The store filters by the tag: reading
    every version of `name` grows with each request answered (0.2 s a search at 50 versions on sqlite)."""
    c = client
    versions = _retry(lambda: c.search_model_versions(f"name = '{name}' AND tags.`{KEY_TAG}` = '{key}'",
                                                      max_results=1))
    return next(iter(versions), None)


def versions_with_tag(key: str, value: str, client: Any) -> list[Any]:
    """Every version of every registered model whose tag `key` equals `value` (all pages), oldest first."""
    c, out, token = client, [], None
    query = f"tags.`{key}` = '{value}'"
    while True:
        page = _retry(lambda t=token: c.search_model_versions(query, page_token=t))
        out.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return sorted(out, key=lambda v: (v.name, int(v.version)))


def register(name: str, source: str, run_id: str | None, tags: dict[str, str], client: Any,
             key: str | None = None, description: str | None = None) -> Any:
    """Create a new version of `name` (the registered model too, if new), without any alias: `candidate`
    moves only when the version is complete (`mark_complete`). Returns the ModelVersion. The `description`
    is written with the version (`version_description`), so no version is ever left without it.

    With `key`, a version already registered under that key is settled and returned instead of
    creating another (the key is written with the version, so a retry always sees it)."""
    c = client
    ensure_registered_model(name, c)
    mv = find_version(name, key, c) if key is not None else None
    if mv is None:
        tags = tags | ({KEY_TAG: key} if key is not None else {})
        mv = _retry(lambda: c.create_model_version(name, source, run_id=run_id, tags=tags, description=description,
                                                   await_creation_for=0))
    return mv


def complete(mv: Any) -> bool:
    return mv.tags.get("gates.passed") == "true" and mv.tags.get(COMPLETE_TAG) == "true"


def mark_complete(name: str, version: str | int, client: Any) -> None:
    """Record that a gated version's ONNX is shipped and verified, then settle `candidate` on it."""
    set_tags(name, version, {COMPLETE_TAG: "true"}, client)
    _settle_candidate(client, name)


def _settle_candidate(c: Any, name: str, rounds: int = 20) -> None:
    """Point `candidate` at the newest complete version, and re-check until it holds: a
    concurrent registrar's stale write is then always corrected by whoever writes last."""
    query = f"name = '{name}' AND tags.`gates.passed` = 'true' AND tags.`{COMPLETE_TAG}` = 'true'"  # `complete`
    for _ in range(rounds):
        versions = _retry(lambda: c.search_model_versions(query, max_results=1, order_by=["version_number DESC"]))
        newest = int(versions[0].version) if versions else None
        current = _alias_version(c, name, CANDIDATE)
        if newest is None or (current is not None and int(current) == newest):
            return
        _retry(lambda v=newest: c.set_registered_model_alias(name, CANDIDATE, str(v)))


def set_tags(name: str, version: str | int, tags: dict[str, str], client: Any) -> None:
    c = client
    for key, value in tags.items():
        _retry(lambda k=key, v=value: c.set_model_version_tag(name, str(version), k, v))


def gate_failures(mv: Any) -> list[str]:
    """Why a version may not be exported ([] if its `gates.passed` tag is true)."""
    if mv.tags.get("gates.passed") == "true":
        return []
    return [mv.tags.get("gates.reasons") or "the version has no gates.passed tag (it was not gated)"]


def promotion_blockers(mv: Any) -> list[str]:
    """Why a version may not be promoted: failed gates, or an ONNX file not yet shipped and verified."""
    if gate_failures(mv):
        return gate_failures(mv)
    if mv.tags.get(COMPLETE_TAG) != "true":
        return [f"its ONNX export is not complete (no verified ONNX in the registry run and S3); finish it with "
                f"`hyperforget export {mv.name} {mv.version}`"]
    return []


def _alias_version(c: Any, name: str, alias: str) -> str | None:
    """The version `alias` names, or None if unset (a locked store is retried, not taken as unset)."""
    from mlflow.exceptions import MlflowException

    try:
        return _retry(lambda: c.get_model_version_by_alias(name, alias)).version
    except MlflowException as e:
        if e.error_code in _NOT_FOUND:
            return None
        raise


def promote(name: str, version: str | int, client: Any) -> Any:
    """Point `champion` at `version` if its gates passed, else raise GateFailed and leave it where it is."""
    c = client
    mv = get_version(name, version, c)
    failures = promotion_blockers(mv)
    if failures:
        current = _alias_version(c, name, CHAMPION)
        stays = f"champion stays at version {current}" if current else "there is still no champion"
        raise GateFailed(f"refusing to promote {name} version {version}: {'; '.join(failures)}; "
                         f"{stays}. Promote a version whose gates passed (see alias @{CANDIDATE}).")
    _retry(lambda: c.set_registered_model_alias(name, CHAMPION, mv.version))
    return mv


def get_version(name: str, version: str | int, client: Any) -> Any:
    """The ModelVersion `name` `version`, as `resolve` finds it: ConfigError naming the fix when it is not there."""
    if not str(version).isdigit():
        raise ConfigError(f"version {version!r} of {name} is not a version number (1, 2, …)")
    return resolve(f"{name}/{version}", client)


def resolve(ref: str, client: Any) -> Any:
    """The ModelVersion a reference names: `NAME@ALIAS` or `NAME/VERSION` (optionally `models:/…`)."""
    m = _REF.match(ref.strip())
    if not m:
        raise ConfigError(f"model reference {ref!r} not understood; use NAME@ALIAS (NAME@champion) or NAME/VERSION")
    from mlflow.exceptions import MlflowException

    c = client
    try:
        if m["alias"]:
            return c.get_model_version_by_alias(m["name"], m["alias"])
        return c.get_model_version(m["name"], m["version"])
    except MlflowException as e:
        if e.error_code not in _NOT_FOUND:
            raise
        raise ConfigError(f"{ref} is not in the registry at {c.tracking_uri} ({e.message}); "
                          "check the name, version or alias (aliases: candidate, champion)") from e
