"""Export of a model version to S3 (or MinIO): the BentoML archive of the stored model,
uploaded with boto3 to ``TP_S3_ENDPOINT`` (AWS itself when unset)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from train_platform.registry import bento_store
from train_platform.registry.exceptions import ExportError
from train_platform.registry.model_registry import ModelRegistry

log = logging.getLogger(__name__)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ExportError(f"export destination must be s3://bucket[/prefix], not {uri!r}")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ExportError(f"export destination {uri!r} names no bucket")
    return bucket, prefix.strip("/")


def export_version(registry: ModelRegistry, name: str, version: int | str, destination: str, *,
                   actor: str | None = None) -> str:
    """Uploads ``name`` version ``version`` as ``<prefix>/<name>/v<version>.bentomodel``;
    returns the object's URI and records the export in the model's history. The acting user
    needs the reader role, checked before anything is uploaded."""
    import boto3
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = parse_s3_uri(destination)
    actor = registry.check_access(name, "export", actor)
    found = registry.get(name, version)
    key = "/".join(part for part in (prefix, name, f"v{found.version}.bentomodel") if part)
    client = boto3.client("s3", endpoint_url=registry.settings.s3_endpoint)
    with tempfile.TemporaryDirectory(prefix="tp-export-") as tmp:
        archive = bento_store.export_model(registry.settings, found.bento_model_tag,
                                           str(Path(tmp) / f"{name}-v{found.version}.bentomodel"))
        try:
            client.upload_file(archive, bucket, key)
        except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
            raise ExportError(f"uploading {name} v{found.version} to s3://{bucket}/{key} failed: {exc}") from exc
    uri = f"s3://{bucket}/{key}"
    registry.record_event(name, "export", version=found.version, detail={"uri": uri}, actor=actor,
                          operation="export")
    log.info("exported %s v%d to %s", name, found.version, uri)
    return uri
