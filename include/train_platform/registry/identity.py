"""Who acts: the authenticated user behind a command, a task or a web request.

* A command acts as the OS user it runs as (``Settings.os_user``: the kernel's uid looked up
  in the password database, never ``$USER``). Acting as someone else (``--as USER`` on the
  CLI, else ``TP_USER`` in the environment) is reserved to a ``platform-admin``: anyone
  else asking gets ``IdentityError`` (exit 2) naming the rule.
* A task acts as its pipeline's owner: the operator sets ``TP_USER`` after the task's own
  ``env:``, and the account tasks run as (the Airflow worker's OS user, the image's user in
  a pod) holds platform-admin, which is what lets it act for the pipelines' owners.
* A web request to the inference endpoint acts as its bearer token's name
  (``TP_API_TOKENS`` entries ``NAME:SCOPES=TOKEN``), recorded as ``token:NAME``.

The platform-admin role lives in the platform database (``access``); this module also
holds the commands' side of it: granting, revoking, listing, and the audit of steps that
belong to no model (admin grants, pipeline activations).
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from train_platform.registry import access, schema
from train_platform.registry.access import PLATFORM_ADMIN, AuditEntry
from train_platform.registry.exceptions import IdentityError, AccessDeniedError
from train_platform.settings import ApiClient, Settings, get_settings

log = logging.getLogger(__name__)


def acting_user(settings: Settings | None = None, requested: str | None = None, *,
                database_url: str | None = None) -> str:
    """The user a command acts as: the OS user, or ``requested`` (``--as``; else
    ``TP_USER``) when the OS user is a platform-admin of the platform database at
    ``database_url`` (default: the settings' one)."""
    settings = settings or get_settings()
    me = settings.os_user
    asked, how = (requested, "--as") if requested else (settings.requested_user, "TP_USER")
    if not asked or asked == me:
        return me
    asked = access.check_user(asked)
    with schema.read(database_url or settings.database_uri) as conn:
        if access.is_admin(conn, me):
            log.debug("OS user %s (platform-admin) acts as %s", me, asked)
            return asked
        holders = access.admins(conn)
    raise IdentityError(
        f"{how} {asked}: acting as another user is reserved to the {PLATFORM_ADMIN} role, which OS user "
        f"{me!r} does not hold (platform admins: {', '.join(holders) or 'none'}; one of them grants it with "
        f"`tp admin grant {me}`). Without {how}, commands act as {me!r}.")


def authenticate_bearer(settings: Settings, authorization: str | None) -> ApiClient | None:
    """The client whose token an ``Authorization: Bearer TOKEN`` header carries, or None.
    Every configured token is compared in constant time, so the answer's timing tells
    nothing about which token, or which prefix, came close."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    given = token.strip().encode()
    found = None
    for client in settings.api_clients:
        if hmac.compare_digest(given, client.token.encode()) and found is None:
            found = client
    return found


def token_actor(client: ApiClient) -> str:
    """How the registry's history names what a web client did: ``token:NAME``, apart from
    any user of that name."""
    return f"token:{client.name}"


# ---------------------------------------------------------------------- the admin role

def _denied(url: str, actor: str, what: str, exc: AccessDeniedError) -> None:
    with schema.transaction(url) as conn:
        access.audit(conn, actor, "denied", what, {"needed": exc.needed})


def grant_admin(user: str, *, actor: str, database_url: str) -> None:
    """Give ``user`` the platform-admin role; ``actor`` must hold it."""
    _set_admin(user, True, actor=actor, database_url=database_url)


def revoke_admin(user: str, *, actor: str, database_url: str) -> None:
    """Take the platform-admin role from ``user``; the last admin keeps it."""
    _set_admin(user, False, actor=actor, database_url=database_url)


def _set_admin(user: str, admin: bool, *, actor: str, database_url: str) -> None:
    operation = "admin grant" if admin else "admin revoke"
    try:
        with schema.transaction(database_url) as conn:
            access.require_admin(conn, actor, operation)
            access.set_admin(conn, user, admin, actor=actor)
    except AccessDeniedError as exc:
        _denied(database_url, actor, f"{operation} {user}", exc)
        raise
    log.info("%s %s %s %s %s", actor, "granted" if admin else "revoked", PLATFORM_ADMIN,
             "to" if admin else "from", user)


def list_admins(database_url: str) -> list[str]:
    with schema.read(database_url) as conn:
        return access.admins(conn)


def is_admin(user: str, database_url: str) -> bool:
    with schema.read(database_url) as conn:
        return access.is_admin(conn, user)


def record(actor: str, action: str, subject: str, detail: dict[str, Any] | None = None, *,
           database_url: str) -> None:
    """A step that belongs to no model (a pipeline activation) in the platform audit log."""
    with schema.transaction(database_url) as conn:
        access.audit(conn, actor, action, subject, detail)


def audit_log(database_url: str, limit: int | None = None) -> list[AuditEntry]:
    """The platform audit log, newest first."""
    with schema.read(database_url) as conn:
        return access.audit_entries(conn, limit)


def authorize_pipeline_activation(actor: str, owner: str | None, pipeline: str, version: str | None, *,
                                  database_url: str) -> None:
    """Pinning which version of a pipeline runs needs the pipeline's owner (its active
    version's ``default_args.owner``, else ``metadata.owner``) or a platform-admin; a
    refusal goes to the platform audit log (the caller records the activation once done)."""
    if actor == owner or is_admin(actor, database_url):
        return
    record(actor, "denied", f"pipeline {pipeline}",
           {"version": version, "owner": owner, "needed": f"owner {owner} or {PLATFORM_ADMIN}"},
           database_url=database_url)
    raise AccessDeniedError(
        f"user {actor!r} may not activate pipeline {pipeline!r}: activation needs its owner {owner!r} or a "
        f"{PLATFORM_ADMIN} (platform admins: {', '.join(list_admins(database_url)) or 'none'})",
        operation="pipeline activate", needed="owner")
