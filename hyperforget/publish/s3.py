"""S3 object storage (boto3): uploads carry their own sha256; downloads are verified and atomic.

Why: a multipart ETag is not a checksum of the file, and an interrupted or tampered download must
never leave a file that looks complete. So `upload_file` stores the sha256 it computed locally as
object metadata, and `fetch_file` streams into a temp file beside the target, checks size, the
caller's expected digest and that metadata, and only then renames it into place.

Endpoint and credentials come from the environment only (HYPERFORGET_S3_ENDPOINT, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION); `make stack-up` / `source .stack/env` sets them locally.
Every botocore failure becomes a StorageError that says what failed, where, and how to fix it.
boto3 is imported on first use, not at import time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hyperforget.base.errors import IntegrityError, StorageError
from hyperforget.base.io import atomic_path, sha256_file

ENDPOINT_VAR = "HYPERFORGET_S3_ENDPOINT"
DEFAULT_REGION = "us-east-1"
_FIX = "is the S3 server running? `make stack-up` (then `source .stack/env`)"
_CHUNK = 1 << 20


def s3_client(retries: int = 4, connect_timeout: float = 2.0, read_timeout: float = 60.0) -> Any:
    """A boto3 S3 client built from the environment only; raises StorageError naming a missing variable.

    `retries` is botocore's `max_attempts` (retries after the first try, with exponential backoff).
    """
    env = {k: os.environ.get(k, "") for k in (ENDPOINT_VAR, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    missing = [k for k, v in env.items() if not v]
    if missing:
        raise StorageError(
            f"S3 is not configured: set {', '.join(missing)} in the environment "
            "(locally: `make stack-up` then `source .stack/env`)"
        )
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": retries, "mode": "standard"},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        s3={"addressing_style": "path"},
    )
    return boto3.client(
        "s3",
        endpoint_url=env[ENDPOINT_VAR],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
        region_name=os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION,
        config=config,
    )


@contextmanager
def _s3_errors(action: str, client: Any) -> Iterator[None]:
    """Turn botocore/boto3 failures (after boto's own retries) into a StorageError with the fix."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    endpoint = client.meta.endpoint_url
    try:
        yield
    except (BotoConnectionError, HTTPClientError) as e:
        attempts = client.meta.config.retries.get("total_max_attempts", "several")
        raise StorageError(
            f"{action} failed: cannot reach S3 at {endpoint} after {attempts} attempts ({e}); {_FIX}"
        ) from e
    except (ClientError, S3UploadFailedError) as e:
        err = e.__context__ if isinstance(e, S3UploadFailedError) and isinstance(e.__context__, ClientError) else e
        code = err.response.get("Error", {}).get("Code", "?") if isinstance(err, ClientError) else "?"
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
            fix = "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (locally: `source .stack/env`)"
        elif code in ("NoSuchBucket",):
            fix = "create the bucket (`make stack-up` does) or set HYPERFORGET_S3_BUCKET"
        elif code in ("NoSuchKey", "404", "NotFound"):
            fix = "the object does not exist; check the bucket, key and version you asked for"
        else:
            fix = _FIX
        raise StorageError(f"{action} failed at {endpoint}: {code} ({err}); {fix}") from e
    except BotoCoreError as e:
        raise StorageError(f"{action} failed at {endpoint}: {e}; {_FIX}") from e


def upload_file(path: str | Path, bucket: str, key: str, client: Any = None) -> str:
    """Upload `path` to s3://bucket/key with its sha256 in metadata; return the digest."""
    client = client or s3_client()
    digest = sha256_file(path)
    with _s3_errors(f"upload of {path} to s3://{bucket}/{key}", client):
        client.upload_file(str(path), bucket, key, ExtraArgs={"Metadata": {"sha256": digest}})
    return digest


def upload_dir(path: str | Path, bucket: str, prefix: str, client: Any = None) -> dict[str, str]:
    """Upload every file under `path` to s3://bucket/prefix/<relative path>; return key -> sha256."""
    client = client or s3_client()
    root, digests = Path(path), {}
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        key = f"{prefix.strip('/')}/{f.relative_to(root).as_posix()}".lstrip("/")
        digests[key] = upload_file(f, bucket, key, client)
    return digests


def fetch_file(bucket: str, key: str, out_path: str | Path, expected_sha256: str, client: Any = None) -> Path:
    """Download s3://bucket/key to `out_path` only if size and sha256 (expected and metadata) match.

    Raises IntegrityError on any mismatch or truncation and StorageError if S3 fails; in both cases
    neither a partial nor a final file is left behind.
    """
    from botocore.exceptions import IncompleteReadError, ResponseStreamingError

    client = client or s3_client()
    uri, expected = f"s3://{bucket}/{key}", expected_sha256.strip().lower()
    with atomic_path(out_path) as tmp:
        with _s3_errors(f"download of {uri}", client):
            obj = client.get_object(Bucket=bucket, Key=key)
            size, h, body = 0, hashlib.sha256(), obj["Body"]
            try:
                with open(tmp, "wb") as f:
                    for chunk in body.iter_chunks(_CHUNK):
                        f.write(chunk)
                        h.update(chunk)
                        size += len(chunk)
            except (IncompleteReadError, ResponseStreamingError) as e:
                raise IntegrityError(f"download of {uri} was truncated ({e}); retry the fetch") from e
            finally:
                body.close()
        if size != obj["ContentLength"]:
            raise IntegrityError(f"download of {uri} was truncated: got {size} of {obj['ContentLength']} bytes; retry")
        actual, recorded = h.hexdigest(), obj.get("Metadata", {}).get("sha256")
        if actual != expected:
            raise IntegrityError(
                f"checksum mismatch for {uri}: expected sha256 {expected[:12]}…, got {actual[:12]}…; "
                "the object is not the one recorded; check the version you asked for or re-upload it"
            )
        if recorded != actual:
            why = "has no sha256 metadata" if recorded is None else f"has sha256 metadata {recorded[:12]}…"
            raise IntegrityError(
                f"{uri} {why} but its content hashes to {actual[:12]}…: it was replaced or corrupted after "
                "upload (or not uploaded with hyperforget.publish.s3.upload_file); re-upload it"
            )
    return Path(out_path)


def list_keys(bucket: str, prefix: str = "", client: Any = None) -> list[str]:
    """All keys under `prefix`, sorted."""
    client = client or s3_client()
    keys: list[str] = []
    with _s3_errors(f"listing of s3://{bucket}/{prefix}", client):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(o["Key"] for o in page.get("Contents", []))
    return sorted(keys)


def ensure_bucket(bucket: str, client: Any = None) -> None:
    """Create `bucket` unless it exists (idempotent)."""
    from botocore.exceptions import ClientError

    client = client or s3_client()
    with _s3_errors(f"creation of bucket {bucket}", client):
        try:
            client.head_bucket(Bucket=bucket)
            return
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise
        region = client.meta.region_name
        location = {} if region in (None, DEFAULT_REGION) else {"LocationConstraint": region}
        try:
            client.create_bucket(Bucket=bucket, **({"CreateBucketConfiguration": location} if location else {}))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise


def reachable(endpoint: str, timeout: float = 2.0) -> bool:
    """Whether anything answers HTTP at `endpoint` (any status counts: S3 answers 403 to an anonymous GET).
    Used to say which server is down when a call through another one (MLflow's artifact proxy) fails."""
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # our servers are on loopback
    try:
        with opener.open(endpoint, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False
