"""Versioned migrations of the registry's tables (Alembic).

The scripts live in this package (``env.py``, ``versions/``) and ship with it. A process
opening the registry runs ``upgrade`` once per database (``schema.get_engine``): when the
database's revision, read from ``VERSION_TABLE``, is already ``HEAD`` nothing else happens
and Alembic is not even imported; otherwise the upgrade runs in one transaction that holds
the database's write lock for its whole length (``BEGIN IMMEDIATE`` on SQLite, an advisory
transaction lock on PostgreSQL), so openers starting together migrate one after the other
and the later ones find the work done. SQLite and PostgreSQL both run DDL inside a
transaction: a process killed mid-upgrade leaves the database as it was.

A database made before the registry had migrations (its tables, no ``VERSION_TABLE``) is
adopted by the first revision, which creates only the tables that are missing and adds
the nullable columns an older table lacks, then records the revision.

The version table is the registry's own (``tp_registry_alembic_version``), not Alembic's
default ``alembic_version``, so that other tables sharing the platform database can have
their own migrations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from train_platform.registry.exceptions import RegistryError

log = logging.getLogger(__name__)

VERSION_TABLE = "tp_registry_alembic_version"
# The newest revision in versions/ (a test checks it is Alembic's head).
HEAD = "0001"
SCRIPTS = Path(__file__).resolve().parent
# Key of the PostgreSQL advisory lock that serialises upgrades: "tpregist" as a number.
_PG_LOCK_KEY = int.from_bytes(b"tpregist", "big") & 0x7FFFFFFFFFFFFFFF


def stored_revision(conn: Connection) -> str | None:
    """The revision the database records, or None (no version table: a fresh database or
    one made before migrations). Cheap: one query, no Alembic import."""
    from sqlalchemy.exc import DBAPIError

    try:
        rows = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    except DBAPIError:
        return None
    return rows[0] if len(rows) == 1 else None


def alembic_config(*, connection: Connection | None = None, url: str | None = None):
    """An Alembic ``Config`` for these scripts, with the connection (or database URL) that
    ``env.py`` migrates: for ``alembic.command`` calls (``upgrade``, ``current``,
    ``revision --autogenerate``)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.set_main_option("version_table", VERSION_TABLE)
    if connection is not None:
        config.attributes["connection"] = connection
    if url is not None:
        config.attributes["url"] = url
    return config


def upgrade(engine: Engine, *, on_create: Callable[[Connection], Any] | None = None) -> bool:
    """Brings the database to ``HEAD`` under its write lock; ``on_create(conn)`` runs in the
    same transaction when this call created the registry's tables. Returns whether any
    revision was applied."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import inspect

    with engine.begin() as conn:  # BEGIN IMMEDIATE on SQLite: the write lock, now
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        current = context.get_current_revision()
        if current == HEAD:
            return False  # another opener migrated while we waited for the lock
        config = alembic_config(connection=conn)
        if current is not None:
            try:
                ScriptDirectory.from_config(config).get_revision(current)
            except Exception as exc:  # alembic's ResolutionError / CommandError
                raise RegistryError(
                    f"the registry database is at schema revision {current!r}, which this version of "
                    f"train-platform does not know (its newest is {HEAD!r}): upgrade train-platform") from exc
        fresh = not inspect(conn).has_table("tp_platform_roles")
        adopting = current is None and inspect(conn).has_table("tp_models")
        command.upgrade(config, "head")
        log.info("registry database %s from revision %s to %s%s", "adopted and migrated" if adopting else "migrated",
                 current, HEAD, " (tables created)" if fresh and not adopting else "")
        if fresh and on_create is not None:
            on_create(conn)
        return True
