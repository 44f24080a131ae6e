"""The Iceberg catalog datasets live in, built from settings.

Embedded shape: an SQL catalog on SQLite under TP_HOME and a warehouse folder next to it.
Scale shape: the same SQL catalog on PostgreSQL (TP_CATALOG_URL) and the warehouse on
S3/MinIO (TP_WAREHOUSE=s3://bucket/prefix, TP_S3_ENDPOINT, credentials from AWS_*).

Every Iceberg commit ends in one database transaction of the catalog: the update that swaps
the table's metadata pointer, guarded by the pointer it started from. ``inside_commit``
runs a function of ours in that same transaction (the datasets' role check and audit row,
whose tables live in the same database), so what it writes commits with the pointer swap
or not at all, and what it raises aborts the swap.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from train_platform.datasets.exceptions import DatasetError
from train_platform.settings import Settings, redact

log = logging.getLogger(__name__)

# All datasets share one Iceberg namespace, so the catalog can hold other tables too.
NAMESPACE = "datasets"
# Dataset names become table names, folder names and lock keys: keep them portable.
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# pyiceberg's SqlCatalog is not documented as thread-safe; one per process and settings.
_catalogs: dict[tuple[str, str, str | None], SqlCatalog] = {}
_lock = threading.Lock()


@dataclass
class CommitHook:
    """A function run inside the database transaction of each catalog commit made while
    ``inside_commit`` is active: ``run(connection, updates)`` gets that transaction's
    connection and the commit's Iceberg table updates, and returns whether the commit was
    one it handles. ``handled`` counts those."""

    run: Callable[[Connection, tuple[Any, ...]], bool]
    handled: int = 0
    _pending: tuple[Any, tuple[Any, ...]] | None = None


_hook: ContextVar[CommitHook | None] = ContextVar("train_platform_commit_hook", default=None)


@contextmanager
def inside_commit(run: Callable[[Connection, tuple[Any, ...]], bool]) -> Iterator[CommitHook]:
    """Run ``run`` inside every catalog commit of this thread for the ``with`` block (see
    ``CommitHook``). What ``run`` raises aborts that commit (the metadata pointer keeps its
    old value) and propagates out of the Iceberg commit."""
    hook = CommitHook(run)
    token = _hook.set(hook)
    try:
        yield hook
    finally:
        _hook.reset(token)


class _Catalog(SqlCatalog):
    """pyiceberg's SQL catalog, remembering the updates of the commit in progress for the
    hook (``_before_commit``) that runs in its pointer-swap transaction."""

    def commit_table(self, table, requirements, updates):  # type: ignore[no-untyped-def]
        hook = _hook.get()
        if hook is None:
            return super().commit_table(table, requirements, updates)
        hook._pending = (self.engine, tuple(updates))
        try:
            return super().commit_table(table, requirements, updates)
        finally:
            hook._pending = None


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    hook = _hook.get()
    if hook is None or hook._pending is None:
        return
    engine, updates = hook._pending
    if session.get_bind() is not engine:
        return
    hook._pending = None  # once per pointer swap
    if hook.run(session.connection(), updates):
        hook.handled += 1


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
            catalog = _Catalog("train_platform", **catalog_properties(settings))
            if settings.catalog_uri.startswith("sqlite"):
                _tune_sqlite(catalog)
            try:
                catalog.create_namespace_if_not_exists(NAMESPACE)
            except NamespaceAlreadyExistsError:  # another process created it between check and insert
                pass
            _catalogs[key] = catalog
            log.debug("Iceberg catalog on %s, warehouse %s", redact(settings.catalog_uri), settings.warehouse_uri)
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
