"""The Iceberg catalog datasets live in, built from settings.

Embedded shape: an SQL catalog on SQLite under TP_HOME and a warehouse folder next to it.
Scale shape: the same SQL catalog on PostgreSQL (TP_CATALOG_URL) and the warehouse on
S3/MinIO (TP_WAREHOUSE=s3://bucket/prefix, TP_S3_ENDPOINT, credentials from AWS_*).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path

from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError

from train_platform.datasets.exceptions import DatasetError
from train_platform.settings import Settings

log = logging.getLogger(__name__)

# All datasets share one Iceberg namespace, so the catalog can hold other tables too.
NAMESPACE = "datasets"
# Dataset names become table names, folder names and lock keys: keep them portable.
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# pyiceberg's SqlCatalog is not documented as thread-safe; one per process and settings.
_catalogs: dict[tuple[str, str, str | None], SqlCatalog] = {}
_lock = threading.Lock()


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise DatasetError(
            f"dataset name {name!r} is invalid: use 1-63 lower-case letters, digits and '_', starting with a letter"
        )
    return name


def catalog_properties(settings: Settings) -> dict[str, str]:
    """Properties for ``SqlCatalog``: the SQLAlchemy URL, the warehouse and, for an s3://
    warehouse, the endpoint and credentials."""
    props = {"uri": settings.catalog_uri, "warehouse": settings.warehouse_uri}
    if settings.warehouse_uri.startswith("s3://"):
        if settings.s3_endpoint:
            props["s3.endpoint"] = settings.s3_endpoint
        env_keys = {
            "AWS_ACCESS_KEY_ID": "s3.access-key-id",
            "AWS_SECRET_ACCESS_KEY": "s3.secret-access-key",
            "AWS_SESSION_TOKEN": "s3.session-token",
            "AWS_REGION": "s3.region",
            "AWS_DEFAULT_REGION": "s3.region",
        }
        for env, prop in env_keys.items():
            if os.environ.get(env) and prop not in props:
                props[prop] = os.environ[env]
        # MinIO and moto serve buckets under the endpoint's path, not as sub-domains.
        props.setdefault("s3.force-virtual-addressing", "false")
    return props


def get_catalog(settings: Settings) -> SqlCatalog:
    key = (settings.catalog_uri, settings.warehouse_uri, settings.s3_endpoint)
    with _lock:
        catalog = _catalogs.get(key)
        if catalog is None:
            if settings.catalog_uri.startswith("sqlite:///"):
                Path(settings.catalog_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            if settings.warehouse_uri.startswith("file://"):
                Path(settings.warehouse_uri.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
            catalog = SqlCatalog("train_platform", **catalog_properties(settings))
            if settings.catalog_uri.startswith("sqlite"):
                _tune_sqlite(catalog)
            try:
                catalog.create_namespace_if_not_exists(NAMESPACE)
            except NamespaceAlreadyExistsError:  # another process created it between check and insert
                pass
            _catalogs[key] = catalog
            log.debug("Iceberg catalog on %s, warehouse %s", settings.catalog_uri, settings.warehouse_uri)
        return catalog


def _tune_sqlite(catalog: SqlCatalog) -> None:
    """Many writer processes share one SQLite file on the embedded shape: wait for the
    file lock instead of failing at once, and use WAL so readers never block writers."""
    from sqlalchemy import event

    @event.listens_for(catalog.engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()

    catalog.engine.dispose()  # connections opened before the listener lack the pragmas


def identifier(name: str) -> tuple[str, str]:
    return (NAMESPACE, check_name(name))
