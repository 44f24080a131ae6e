"""The platform's object storage through the MinIO SDK: its buckets and presigned links.

The endpoint is ``TP_S3_ENDPOINT`` (``http://host:port`` or ``https://…``; MinIO, moto or
any S3-compatible server); the credentials are the standard ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY`` and optional ``AWS_SESSION_TOKEN``, the region ``AWS_REGION`` (or
``AWS_DEFAULT_REGION``, else ``us-east-1``), as the Iceberg warehouse and model exports use
them. The buckets (``platform_buckets``) come from settings:

| role | setting | default |
|---|---|---|
| ``warehouse`` | ``TP_WAREHOUSE_BUCKET`` | the bucket of an ``s3://`` ``TP_WAREHOUSE``, else ``tp-warehouse`` |
| ``artifacts`` | ``TP_ARTIFACTS_BUCKET`` | ``tp-artifacts`` |
| ``intake`` | ``TP_INTAKE_BUCKET`` | ``tp-intake`` |

``init_buckets`` (``tp storage init``) creates the missing ones and checks each by writing,
reading back and deleting a small object; running it again changes nothing. An endpoint
that does not answer fails after a few seconds, not after minutes of retries.
``presigned_get_url`` signs a time-limited download link of an ``s3://`` object locally
(no request is made), for the review page's links to raw files.

Errors are ``ObjectStoreError`` naming the endpoint (without any user:password part) and
the bucket; no message ever holds a secret.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from train_platform.settings import Settings
from train_platform.storage.exceptions import ObjectStoreError

if TYPE_CHECKING:
    from minio import Minio

log = logging.getLogger(__name__)

BUCKET_ROLES = ("warehouse", "artifacts", "intake")
CHECK_OBJECT = ".tp-storage-check"
DEFAULT_REGION = "us-east-1"
# Seconds to connect or read before a request counts as failed, and how often a failed
# request is tried again: an unreachable endpoint fails in seconds.
TIMEOUT_S = 5.0
RETRIES = 1
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken"}


@dataclass(frozen=True)
class Endpoint:
    host: str  # host[:port]
    secure: bool
    shown: str  # the endpoint as messages show it: scheme://host[:port]


def endpoint_of(settings: Settings) -> Endpoint:
    """``TP_S3_ENDPOINT`` split for the MinIO client; ``ObjectStoreError`` when it is unset
    or not an ``http(s)://host[:port]`` URL."""
    raw = settings.s3_endpoint
    if not raw:
        raise ObjectStoreError("TP_S3_ENDPOINT is not set: the object store's URL, e.g. http://minio:9000")
    parts = urlsplit(raw)
    host = parts.hostname or ""
    shown = f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}" if host else "(unparsable)"
    if parts.scheme not in ("http", "https") or not host or parts.path not in ("", "/") or parts.query:
        raise ObjectStoreError(f"TP_S3_ENDPOINT must be http(s)://host[:port] without a path, got {shown}")
    return Endpoint(host=f"{host}:{parts.port}" if parts.port else host, secure=parts.scheme == "https", shown=shown)


def region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def client(settings: Settings, *, timeout_s: float = TIMEOUT_S, retries: int = RETRIES) -> Minio:
    """A MinIO client of the platform's endpoint with its credentials and region (the
    region is given, so signing a link makes no request)."""
    import urllib3
    from minio import Minio

    endpoint = endpoint_of(settings)
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
        retries=urllib3.Retry(total=retries, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
    )
    return Minio(endpoint.host, access_key=os.environ.get("AWS_ACCESS_KEY_ID") or None,
                 secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
                 session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
                 secure=endpoint.secure, region=region(), http_client=http)


def platform_buckets(settings: Settings) -> dict[str, str]:
    """Bucket name by role (see the module's table)."""
    return {"warehouse": settings.warehouse_bucket, "artifacts": settings.artifacts_bucket,
            "intake": settings.intake_bucket}


@dataclass(frozen=True)
class BucketStatus:
    role: str
    name: str
    created: bool  # False when it existed already

    def as_dict(self) -> dict[str, object]:
        return {"role": self.role, "bucket": self.name, "created": self.created, "checked": True}


def _explain(exc: BaseException, endpoint: Endpoint, bucket: str, doing: str) -> ObjectStoreError:
    """One clear message for what the SDK raised; never the credentials themselves."""
    from minio.error import S3Error
    from urllib3.exceptions import HTTPError

    if isinstance(exc, S3Error):
        if exc.code in _CREDENTIAL_CODES:
            return ObjectStoreError(f"{endpoint.shown} refused the credentials ({exc.code}) while {doing} bucket "
                                    f"{bucket!r}: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        return ObjectStoreError(f"{endpoint.shown}: {doing} bucket {bucket!r} failed: {exc.code}: {exc.message}")
    if isinstance(exc, HTTPError):
        reason = getattr(exc, "reason", None) or exc
        text = str(reason)
        if "refused" in text.lower():
            text = "connection refused"
        elif "timed out" in text.lower() or "timeout" in text.lower():
            text = "timed out"
        elif "resolution" in text.lower() or "name or service" in text.lower():
            text = "unknown host"
        return ObjectStoreError(f"cannot reach the S3 endpoint {endpoint.shown} (TP_S3_ENDPOINT) while {doing} "
                                f"bucket {bucket!r}: {text}")
    if isinstance(exc, ValueError):  # the SDK's own check of a bucket name
        return ObjectStoreError(f"bucket name {bucket!r} is invalid: {exc}")
    return ObjectStoreError(f"{endpoint.shown}: {doing} bucket {bucket!r} failed: {type(exc).__name__}")


def init_buckets(settings: Settings) -> list[BucketStatus]:
    """Create the platform's missing buckets and check every one (write, read back, delete
    ``CHECK_OBJECT``). Idempotent. Stops at the first bucket that fails, with an
    ``ObjectStoreError``; buckets created before it stay (creating them again is a no-op)."""
    import io

    from minio.error import S3Error
    from urllib3.exceptions import HTTPError

    endpoint = endpoint_of(settings)
    minio = client(settings)
    statuses = []
    payload = b"train-platform storage check\n"
    for role, name in platform_buckets(settings).items():
        doing = "looking up"
        try:
            created = False
            if not minio.bucket_exists(name):
                doing = "creating"
                try:
                    minio.make_bucket(name)
                    created = True
                except S3Error as exc:
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
                    # Created by someone else between the look-up and now; checked below.
            doing = "checking"
            minio.put_object(name, CHECK_OBJECT, io.BytesIO(payload), len(payload), content_type="text/plain")
            response = minio.get_object(name, CHECK_OBJECT)
            try:
                back = response.read()
            finally:
                response.close()
                response.release_conn()
            minio.remove_object(name, CHECK_OBJECT)
        except (S3Error, HTTPError, ValueError) as exc:
            raise _explain(exc, endpoint, name, doing) from None
        if back != payload:
            raise ObjectStoreError(f"{endpoint.shown}: bucket {name!r} gave back other bytes than were written")
        log.info("bucket %s (%s) on %s: %s and checked", name, role, endpoint.shown, "created" if created else "present")
        statuses.append(BucketStatus(role=role, name=name, created=created))
    return statuses


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``(bucket, key)`` of ``s3://bucket/key``; ``ObjectStoreError`` for anything else."""
    if not uri.startswith("s3://"):
        raise ObjectStoreError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket or not key:
        raise ObjectStoreError(f"{uri!r} must be s3://BUCKET/KEY")
    return bucket, key


def presigned_get_url(settings: Settings, uri: str, *, expires: timedelta = timedelta(hours=1)) -> str:
    """A link that downloads the object ``s3://bucket/key`` until ``expires`` from now,
    signed with the platform's credentials; computed locally."""
    bucket, key = parse_s3_uri(uri)
    try:
        return client(settings).presigned_get_object(bucket, key, expires=expires)
    except ValueError as exc:
        raise ObjectStoreError(f"cannot sign a link to {uri}: {exc}") from None


__all__ = ["BUCKET_ROLES", "CHECK_OBJECT", "BucketStatus", "Endpoint", "endpoint_of", "init_buckets",
           "parse_s3_uri", "platform_buckets", "presigned_get_url", "region"]
