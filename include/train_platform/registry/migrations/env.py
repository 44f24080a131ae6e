"""Alembic's environment for the registry's tables: migrates the connection the caller
passes in ``config.attributes["connection"]`` (``migrations.upgrade`` does, inside its
locked transaction), or a database URL given as ``config.attributes["url"]``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from train_platform.registry import schema
from train_platform.registry.migrations import VERSION_TABLE

REGISTRY_TABLES = set(schema.metadata.tables)


def include_object(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    """Autogenerate compares the registry's tables only: the platform database may hold
    others (datasets' roles and audit, Iceberg's catalog) that these scripts do not own."""
    if type_ == "table":
        return name in REGISTRY_TABLES
    table = getattr(obj, "table", None)
    return table is None or table.name in REGISTRY_TABLES


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=schema.metadata,
        version_table=VERSION_TABLE,
        include_object=include_object,
        # SQLite alters most things by copying a table; batch mode does that for us.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


config = context.config
connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
elif config.attributes.get("url"):
    engine = create_engine(config.attributes["url"])
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()
else:
    raise RuntimeError("the registry's migrations need a connection or a URL: use "
                       "train_platform.registry.migrations.alembic_config(connection=...|url=...)")
