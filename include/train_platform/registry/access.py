"""Who may do what: model roles, the platform-admin role, and the platform's own audit log.

Model roles are ordered, per model: a ``reader`` may list, show and export its versions and
read its history; a ``maintainer`` may also register versions, record gates, package,
promote, roll back and run A/B experiments; an ``owner`` may also grant roles. The user who
registers a model's first version becomes its owner; the last owner cannot be removed.

A ``platform-admin`` holds every model role and may activate any pipeline, and only a
platform-admin's processes may act as another user (``--as``, ``TP_USER``; see
``identity``). The OS user whose command created the platform database is the first one
(``schema``); admins grant the role to others with ``tp admin grant``, and the last admin
cannot be revoked.

All of it lives in the platform database next to the registry's tables, and each check runs
on the connection of the write it guards, so a role and the step it allows are read in one
transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.engine import Connection

from train_platform.registry import schema
from train_platform.registry.exceptions import AccessDeniedError, RoleError

MODEL_ROLES = ("reader", "maintainer", "owner")
_RANK = {role: rank for rank, role in enumerate(MODEL_ROLES, start=1)}
PLATFORM_ADMIN = "platform-admin"
# What each model operation needs.
NEEDS = {
    "list": "reader", "show": "reader", "history": "reader", "export": "reader",
    "register": "maintainer", "gate": "maintainer", "package": "maintainer", "promote": "maintainer",
    "rollback": "maintainer", "clear": "maintainer", "experiment": "maintainer", "deploy": "maintainer",
    "grant": "owner",
}


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "actor": self.actor, "action": self.action,
                "subject": self.subject, "detail": self.detail}


def check_user(value: str, what: str = "user") -> str:
    """``value`` when it can name a user: non-empty, printable, at most 128 characters."""
    if not isinstance(value, str) or not value.strip() or len(value) > 128 or not value.isprintable():
        raise RoleError(f"invalid {what} name {value!r}: use 1 to 128 printable characters")
    return value.strip()


# ---------------------------------------------------------------------- platform-admin

def is_admin(conn: Connection, user: str) -> bool:
    return conn.execute(select(schema.platform_roles.c.user_name).where(and_(
        schema.platform_roles.c.user_name == user, schema.platform_roles.c.role == PLATFORM_ADMIN,
    ))).first() is not None


def admins(conn: Connection) -> list[str]:
    return list(conn.execute(select(schema.platform_roles.c.user_name).where(
        schema.platform_roles.c.role == PLATFORM_ADMIN).order_by(schema.platform_roles.c.user_name)).scalars())


def audit(conn: Connection, actor: str, action: str, subject: str, detail: dict[str, Any] | None = None) -> None:
    conn.execute(insert(schema.platform_audit).values(at=schema.utcnow(), actor=actor, action=action,
                                                      subject=subject, detail=detail or {}))


def require_admin(conn: Connection, actor: str, what: str) -> None:
    """Raise ``AccessDeniedError`` unless ``actor`` is a platform-admin. The caller
    records the refusal (outside the transaction it rolls back)."""
    if not is_admin(conn, actor):
        raise AccessDeniedError(f"user {actor!r} is not a {PLATFORM_ADMIN}; {what} needs that role "
                                   f"(platform admins: {', '.join(admins(conn)) or 'none'})",
                                   operation=what, needed=PLATFORM_ADMIN)


def set_admin(conn: Connection, user: str, admin: bool, *, actor: str) -> None:
    """Grant (``admin``) or revoke the platform-admin role of ``user`` and audit it; the
    caller has checked that ``actor`` holds the role."""
    user = check_user(user)
    current = is_admin(conn, user)
    if admin and not current:
        conn.execute(insert(schema.platform_roles).values(user_name=user, role=PLATFORM_ADMIN, granted_by=actor,
                                                          granted_at=schema.utcnow()))
    elif not admin and current:
        if admins(conn) == [user]:
            raise RoleError(f"{user!r} is the last {PLATFORM_ADMIN}; grant the role to another user first")
        conn.execute(delete(schema.platform_roles).where(schema.platform_roles.c.user_name == user))
    audit(conn, actor, "admin_grant" if admin else "admin_revoke", user, {"changed": admin != current})


def audit_entries(conn: Connection, limit: int | None = None) -> list[AuditEntry]:
    query = select(schema.platform_audit).order_by(schema.platform_audit.c.id.desc())
    if limit:
        query = query.limit(limit)
    return [AuditEntry(at=schema.aware(r["at"]), actor=r["actor"], action=r["action"], subject=r["subject"],
                       detail=dict(r["detail"] or {})) for r in conn.execute(query).mappings()]


# ---------------------------------------------------------------------- model roles

def model_role(conn: Connection, model_id: int, user: str) -> str | None:
    return conn.execute(select(schema.model_roles.c.role).where(and_(
        schema.model_roles.c.model_id == model_id, schema.model_roles.c.user_name == user,
    ))).scalar()


def model_roles(conn: Connection, model_id: int) -> dict[str, str]:
    rows = conn.execute(select(schema.model_roles.c.user_name, schema.model_roles.c.role)
                        .where(schema.model_roles.c.model_id == model_id)
                        .order_by(schema.model_roles.c.user_name))
    return {user: role for user, role in rows}


def check_model_role(conn: Connection, model_id: int, name: str, actor: str, operation: str) -> None:
    """Raise ``AccessDeniedError`` unless ``actor`` holds the role ``operation`` needs on
    model ``name`` (or is a platform-admin). The caller records the refusal."""
    needed = NEEDS[operation]
    role = model_role(conn, model_id, actor)
    if role is not None and _RANK[role] >= _RANK[needed]:
        return
    if is_admin(conn, actor):
        return
    held = f"has role {role!r}" if role else "has no role"
    raise AccessDeniedError(
        f"user {actor!r} {held} on model {name!r}; {operation} needs {needed} "
        f"(an owner grants it: tp model grant {name} {actor} {needed})",
        operation=operation, needed=needed, role=role)


def set_model_role(conn: Connection, model_id: int, name: str, user: str, role: str | None, *, actor: str) -> str | None:
    """Give ``user`` ``role`` on the model (``None`` removes it); returns the role they held.
    The last owner cannot be removed or demoted."""
    user = check_user(user)
    if role is not None and role not in MODEL_ROLES:
        raise RoleError(f"role {role!r} is not one of {', '.join(MODEL_ROLES)} (or 'none' to remove)")
    current = model_role(conn, model_id, user)
    if current == "owner" and role != "owner":
        owners = [u for u, r in model_roles(conn, model_id).items() if r == "owner"]
        if owners == [user]:
            raise RoleError(f"{user!r} is the last owner of model {name!r}; grant another owner first")
    table = schema.model_roles
    where = and_(table.c.model_id == model_id, table.c.user_name == user)
    if role is None:
        conn.execute(delete(table).where(where))
    elif current is None:
        conn.execute(insert(table).values(model_id=model_id, user_name=user, role=role, granted_by=actor,
                                          granted_at=schema.utcnow()))
    else:
        conn.execute(update(table).where(where).values(role=role, granted_by=actor, granted_at=schema.utcnow()))
    return current
