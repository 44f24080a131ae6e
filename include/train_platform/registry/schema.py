"""Tables of the model registry in the platform database, and the engine that reaches it.

SQLAlchemy Core keeps the schema explicit and the same on SQLite (embedded shape) and
PostgreSQL (scale shape). Every write runs in one transaction that first locks the model's
row, so two processes registering or promoting the same model serialise instead of racing
(``SELECT ... FOR UPDATE`` on PostgreSQL; ``BEGIN IMMEDIATE`` takes SQLite's write lock).

The tables below are the newest revision of the registry's Alembic migrations
(``train_platform.registry.migrations``; a test checks the two agree). The first use of a
database in a process brings it to that revision, under the database's write lock, so
concurrent openers of a fresh or older database migrate it once. The command that creates
the tables makes the OS user it runs as the first platform-admin (see ``access``), as a
dataset's creator is its first owner.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Connection, Engine

metadata = MetaData()

models = Table(
    "tp_models",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(63), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

versions = Table(
    "tp_model_versions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_id", Integer, ForeignKey("tp_models.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("task", String(32), nullable=False),
    Column("checkpoint_uri", String(1024), nullable=False),
    # sha256 of the checkpoint's files: the same folder path is reused by daily pipelines,
    # so identity is the content.
    Column("checkpoint_digest", String(64), nullable=False),
    # "name:version" in the BentoML model store.
    Column("bento_model_tag", String(160), nullable=False),
    # Set by packaging: the Bento built for this version.
    Column("bento_tag", String(160)),
    Column("training_run", String(256)),
    Column("dataset_snapshot", String(256)),
    Column("parent_version", Integer),
    Column("metrics", JSON, nullable=False),
    # pending | passed | failed: the evaluation gate's verdict, which deployment requires.
    Column("gate_status", String(16), nullable=False),
    Column("gate_report", String(1024)),
    # The gate's decision: passed, reasons, figures compared (main metric, floor, accuracy on
    # the classes production knew), the policy and the data evaluated (see ``gate``).
    Column("gate_detail", JSON),
    # A version that lost an A/B test is never offered as candidate again.
    Column("rejected", Boolean, nullable=False, default=False),
    UniqueConstraint("model_id", "version", name="uq_tp_model_version"),
)

aliases = Table(
    "tp_model_aliases",
    metadata,
    Column("model_id", Integer, ForeignKey("tp_models.id"), primary_key=True),
    Column("alias", String(63), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Every step on a model, in order: registration, alias moves, gates, packaging, exports,
# A/B phases and the deployment decisions. Alias history is the subset with `alias` set.
events = Table(
    "tp_model_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_id", Integer, ForeignKey("tp_models.id"), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("alias", String(63)),
    Column("version", Integer),
    Column("previous_version", Integer),
    Column("actor", String(128), nullable=False),
    Column("detail", JSON, nullable=False),
    Index("ix_tp_model_events_model", "model_id", "id"),
)

# Who may do what to one model: reader < maintainer < owner (see ``access``).
model_roles = Table(
    "tp_model_roles",
    metadata,
    Column("model_id", Integer, ForeignKey("tp_models.id"), primary_key=True),
    Column("user_name", String(128), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("granted_by", String(128), nullable=False),
    Column("granted_at", DateTime(timezone=True), nullable=False),
)

# Platform-wide roles; the one there is: platform-admin (may act as another user, and holds
# every model role and pipeline activation).
platform_roles = Table(
    "tp_platform_roles",
    metadata,
    Column("user_name", String(128), primary_key=True),
    Column("role", String(32), nullable=False),
    Column("granted_by", String(128), nullable=False),
    Column("granted_at", DateTime(timezone=True), nullable=False),
)

# Steps that belong to no model: platform-admin grants and revocations, pipeline activations.
platform_audit = Table(
    "tp_platform_audit",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(32), nullable=False),
    Column("subject", String(256), nullable=False),
    Column("detail", JSON, nullable=False),
)

experiments = Table(
    "tp_experiments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_id", Integer, ForeignKey("tp_models.id"), nullable=False),
    Column("control_version", Integer, nullable=False),
    Column("candidate_version", Integer, nullable=False),
    # Share of traffic sent to the candidate, in (0, 1).
    Column("candidate_weight", Float, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    Column("outcome", String(32)),
    Index("ix_tp_experiments_active", "model_id", "ended_at"),
)

# Live figures the inference service flushes every few seconds, one row per replica and
# window, so several replicas add up and the deployment step can sum any time range.
serving_stats = Table(
    "tp_serving_stats",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_id", Integer, ForeignKey("tp_models.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("replica", String(128), nullable=False),
    Column("window_end", DateTime(timezone=True), nullable=False),
    Column("requests", Integer, nullable=False),
    Column("errors", Integer, nullable=False),
    Column("latency_ms_sum", Float, nullable=False),
    # Counts per bucket of LATENCY_BUCKETS_MS (last bucket: above the highest bound).
    Column("latency_buckets", JSON, nullable=False),
    Column("labelled", Integer, nullable=False),
    Column("correct", Integer, nullable=False),
    Index("ix_tp_serving_stats_version", "model_id", "version", "window_end"),
)

# Upper bounds (ms) of the latency histogram the service keeps per version; wide enough
# for CPU inference under load, fine enough to tell 10 ms from 25 ms at p95.
LATENCY_BUCKETS_MS = (1, 2, 5, 10, 15, 25, 40, 60, 100, 150, 250, 500, 1000, 2500)


def utcnow() -> datetime:
    """The time every registry row is stamped with: aware, in UTC."""
    return datetime.now(timezone.utc)


def aware(value: datetime | None) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite hands back naive ones)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


_engines: dict[tuple[str, bool], Engine] = {}
_engines_lock = threading.Lock()
# Database URLs whose schema this process has seen at the migrations' head.
_migrated: set[str] = set()


def get_engine(url: str, *, for_write: bool = True) -> Engine:
    """One engine per database URL (and, on SQLite, per read/write use) per process; the
    first call for a URL brings its tables to the newest revision (``migrations``)."""
    for_write = for_write or not url.startswith("sqlite")
    with _engines_lock:
        engine = _engine(url, for_write)
        if url not in _migrated:
            _migrate(url)
            _migrated.add(url)
        return engine


def _engine(url: str, for_write: bool) -> Engine:
    engine = _engines.get((url, for_write))
    if engine is None:
        engine = _create_engine(url, immediate=for_write)
        _engines[(url, for_write)] = engine
    return engine


def _migrate(url: str) -> None:
    """Runs the migrations unless the database already records their head (one query on a
    reading connection; Alembic is imported only when there is something to do)."""
    from train_platform.registry import migrations

    reader = _engine(url, not url.startswith("sqlite"))
    with reader.connect() as conn:
        if migrations.stored_revision(conn) == migrations.HEAD:
            return
    migrations.upgrade(_engine(url, True), on_create=_bootstrap_admin)


def dispose(url: str) -> None:
    """Closes this process's engines of ``url`` and forgets that it was migrated (a test
    that drops or replaces the database)."""
    with _engines_lock:
        for key in [k for k in _engines if k[0] == url]:
            _engines.pop(key).dispose()
        _migrated.discard(url)


def _bootstrap_admin(conn: Connection) -> None:
    """The OS user whose command created the tables becomes the first platform-admin (run
    in the transaction that created them)."""
    from sqlalchemy import insert, select

    from train_platform.settings import os_user

    user = os_user()
    if conn.execute(select(platform_roles.c.user_name)).first() is None:
        conn.execute(insert(platform_roles).values(
            user_name=user, role="platform-admin", granted_by=user, granted_at=utcnow()))
        conn.execute(insert(platform_audit).values(
            at=utcnow(), actor=user, action="admin_grant", subject=user,
            detail={"reason": "created the platform database"}))


def _create_engine(url: str, *, immediate: bool) -> Engine:
    if url.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        database = make_url(url).database
        if database and database != ":memory:":
            # The embedded shape's first command must work on a fresh TP_HOME.
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # 30 s busy timeout: concurrent writers wait for the lock instead of failing.
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _no_implicit_begin(dbapi_conn, _record):  # pragma: no cover - driver hook
            # pysqlite's own BEGIN handling defers the lock; take control of it.
            dbapi_conn.isolation_level = None
            dbapi_conn.execute("PRAGMA journal_mode=WAL")

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn):  # pragma: no cover - driver hook
            # Writers lock up front (no upgrade deadlocks); readers, in WAL mode, never block.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    # pre_ping: the service keeps its pool for days; a restarted PostgreSQL must not break it.
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


@contextmanager
def transaction(url: str) -> Iterator[Connection]:
    engine = get_engine(url)
    with engine.begin() as conn:
        yield conn


@contextmanager
def read(url: str) -> Iterator[Connection]:
    """A read-only transaction: one consistent view, never blocked by SQLite writers."""
    engine = get_engine(url, for_write=False)
    with engine.begin() as conn:
        yield conn
