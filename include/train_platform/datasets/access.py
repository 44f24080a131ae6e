"""Per-dataset roles and the audit log, kept in the catalog's database in their own tables.

Roles are ordered: a ``reader`` may read, log and diff; a ``writer`` may also branch, tag,
label, import and merge; an ``owner`` may also revert, expire, drop and grant roles. The user
who creates a dataset becomes its owner. Every write (and every refused one) is appended to
the audit log with who, when, what, on which ref and the snapshot it produced.

A write is checked twice: ``require`` before any work (a refusal is audited), and
``require_in`` inside the catalog transaction that commits it, where ``record_in`` also
writes its audit row (``Dataset`` runs both through ``catalog.inside_commit``). A role
revoked while a commit is being prepared therefore stops that commit, and a commit and its
audit row are one database transaction: neither exists without the other. On PostgreSQL
the in-commit check takes a share lock on the role's row, so a revocation either commits
before it (and the commit is refused) or waits until the commit is done.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from sqlalchemy.engine import Connection

from train_platform.datasets.exceptions import DatasetError, PermissionDeniedError

log = logging.getLogger(__name__)

ROLES = ("reader", "writer", "owner")
_RANK = {role: rank for rank, role in enumerate(ROLES, start=1)}

_metadata = MetaData()
roles_table = Table(
    "tp_dataset_roles",
    _metadata,
    Column("dataset", String(128), primary_key=True),
    Column("user_name", String(255), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("granted_by", String(255), nullable=False),
    Column("granted_at", DateTime(timezone=True), nullable=False),
)
audit_table = Table(
    "tp_dataset_audit",
    _metadata,
    Column("id", Integer().with_variant(BigInteger(), "postgresql"), primary_key=True, autoincrement=True),
    Column("dataset", String(128), nullable=False, index=True),
    Column("user_name", String(255), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("operation", String(32), nullable=False),
    Column("ref", String(255)),
    Column("snapshot_id", BigInteger()),
    # "ok", "denied" or "conflict": refused writes are audited too.
    Column("outcome", String(16), nullable=False),
    Column("detail", Text()),
)

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


@dataclass(frozen=True)
class AuditEntry:
    id: int
    dataset: str
    user: str
    at: datetime
    operation: str
    ref: str | None
    snapshot_id: int | None
    outcome: str
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "at": self.at.isoformat()}


def _engine(url: str) -> Engine:
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = create_engine(url, pool_pre_ping=True)
            if url.startswith("sqlite"):
                from sqlalchemy import event

                @event.listens_for(engine, "connect")
                def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
                    cursor = dbapi_connection.cursor()
                    cursor.execute("PRAGMA busy_timeout = 30000")
                    cursor.close()

            for attempt in range(3):
                try:
                    _metadata.create_all(engine, checkfirst=True)
                    break
                except (IntegrityError, OperationalError, ProgrammingError):
                    # Two processes creating the tables at once: the loser sees a duplicate.
                    if attempt == 2:
                        raise
            _engines[url] = engine
        return engine


def _now() -> datetime:
    return datetime.now(timezone.utc)


class RoleRevokedError(PermissionDeniedError):
    """The acting user's role was revoked (or lowered) after the operation started: the
    check inside the commit refused it and nothing was committed."""


def _denied_message(dataset: str, user: str, role: str | None, needed: str, operation: str) -> str:
    held = f"has role {role!r}" if role else "has no role"
    return f"user {user!r} {held} on dataset {dataset!r}; {operation} needs {needed}"


def _allowed(role: str | None, needed: str) -> bool:
    return role is not None and _RANK[role] >= _RANK[needed]


class AccessStore:
    """Roles and audit of every dataset in one catalog database."""

    def __init__(self, url: str):
        self.url = url
        self.engine = _engine(url)

    # ----- roles -------------------------------------------------------------------------
    def role_of(self, dataset: str, user: str) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(roles_table.c.role).where(roles_table.c.dataset == dataset, roles_table.c.user_name == user)
            ).first()
        return row[0] if row else None

    def roles(self, dataset: str) -> dict[str, str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(roles_table.c.user_name, roles_table.c.role).where(roles_table.c.dataset == dataset)
            ).all()
        return {user: role for user, role in rows}

    def require(self, dataset: str, user: str, needed: str, operation: str) -> None:
        """Raise ``PermissionDeniedError`` (and audit the refusal) unless ``user`` holds
        ``needed`` or a higher role on ``dataset``."""
        role = self.role_of(dataset, user)
        if _allowed(role, needed):
            return
        self.record(dataset, user, operation, outcome="denied", detail={"needed": needed, "role": role})
        raise PermissionDeniedError(_denied_message(dataset, user, role, needed, operation))

    def require_in(self, conn: Connection, dataset: str, user: str, needed: str, operation: str) -> None:
        """``require`` inside the caller's transaction ``conn`` (a commit's), reading the
        role under a share lock on PostgreSQL; ``RoleRevokedError`` when it no longer
        suffices. Audits nothing: the transaction is about to be rolled back."""
        row = conn.execute(
            select(roles_table.c.role)
            .where(roles_table.c.dataset == dataset, roles_table.c.user_name == user)
            .with_for_update(read=True)
        ).first()
        role = row[0] if row else None
        if not _allowed(role, needed):
            raise RoleRevokedError(_denied_message(dataset, user, role, needed, operation) + " (role changed during the operation; nothing was written)")

    def set_role(
        self,
        dataset: str,
        user: str,
        role: str | None,
        granted_by: str,
        *,
        granter_needs: str | None = None,
        audit: dict[str, Any] | None = None,
    ) -> None:
        """Give ``user`` ``role`` on ``dataset``; ``None`` removes their role. The last owner
        cannot be removed or demoted, so a dataset always has someone who can grant. With
        ``granter_needs``, ``granted_by`` must hold that role at the moment of the change;
        with ``audit``, an audit row ``grant`` with that detail is written in the same
        transaction."""
        if role is not None and role not in ROLES:
            raise DatasetError(f"role {role!r} is not one of {', '.join(ROLES)} (or 'none' to remove)")
        with self.engine.begin() as conn:
            if granter_needs is not None:
                self.require_in(conn, dataset, granted_by, granter_needs, "grant")
            current = conn.execute(
                select(roles_table.c.role).where(roles_table.c.dataset == dataset, roles_table.c.user_name == user)
            ).first()
            if current and current[0] == "owner" and role != "owner":
                owners = conn.execute(
                    select(roles_table.c.user_name).where(roles_table.c.dataset == dataset, roles_table.c.role == "owner")
                ).all()
                if len(owners) <= 1:
                    raise DatasetError(f"{user!r} is the last owner of {dataset!r}; grant another owner first")
            if role is None:
                conn.execute(delete(roles_table).where(roles_table.c.dataset == dataset, roles_table.c.user_name == user))
            elif current:
                conn.execute(
                    update(roles_table)
                    .where(roles_table.c.dataset == dataset, roles_table.c.user_name == user)
                    .values(role=role, granted_by=granted_by, granted_at=_now())
                )
            else:
                conn.execute(
                    insert(roles_table).values(
                        dataset=dataset, user_name=user, role=role, granted_by=granted_by, granted_at=_now()
                    )
                )
            if audit is not None:
                self.record_in(conn, dataset, granted_by, "grant", detail=audit)

    def drop_dataset(self, dataset: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(roles_table).where(roles_table.c.dataset == dataset))

    # ----- audit -------------------------------------------------------------------------
    def record(
        self,
        dataset: str,
        user: str,
        operation: str,
        *,
        ref: str | None = None,
        snapshot_id: int | None = None,
        outcome: str = "ok",
        detail: dict[str, Any] | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            self.record_in(conn, dataset, user, operation, ref=ref, snapshot_id=snapshot_id, outcome=outcome, detail=detail)

    def record_in(
        self,
        conn: Connection,
        dataset: str,
        user: str,
        operation: str,
        *,
        ref: str | None = None,
        snapshot_id: int | None = None,
        outcome: str = "ok",
        detail: dict[str, Any] | None = None,
    ) -> None:
        """``record`` inside the caller's transaction ``conn``."""
        conn.execute(
            insert(audit_table).values(
                dataset=dataset,
                user_name=user,
                at=_now(),
                operation=operation,
                ref=ref,
                snapshot_id=snapshot_id,
                outcome=outcome,
                detail=json.dumps(detail or {}, sort_keys=True, default=str),
            )
        )

    def audit(self, dataset: str, limit: int | None = None) -> list[AuditEntry]:
        """Audit entries of ``dataset``, newest first."""
        query = select(audit_table).where(audit_table.c.dataset == dataset).order_by(audit_table.c.id.desc())
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            AuditEntry(
                id=row["id"],
                dataset=row["dataset"],
                user=row["user_name"],
                at=row["at"] if row["at"].tzinfo else row["at"].replace(tzinfo=timezone.utc),
                operation=row["operation"],
                ref=row["ref"],
                snapshot_id=row["snapshot_id"],
                outcome=row["outcome"],
                detail=json.loads(row["detail"] or "{}"),
            )
            for row in rows
        ]
