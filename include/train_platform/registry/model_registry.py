"""The model registry: versions, aliases with their history, and the entry point to the rest.

Versions are numbered 1, 2, ... per model. An alias (``production``, ``candidate``, any
name) points at one version; every move is an event, and ``rollback`` replays those events
as a stack (a promotion pushes, a rollback pops) so that repeated rollbacks walk back
through earlier holders rather than bouncing between the last two.

``ModelRegistry`` also carries the A/B experiment methods (``experiments``) and the live
stats methods (``live_stats``), mixed in from their own modules. All writes run in one
transaction that locks the model's row first (see ``schema``) and checks, on that
connection, that the acting user holds the model role the step needs (``access``); a
refusal is recorded in the history as a ``denied`` event. The acting user is the one given
as ``actor``, else the registry's: the one passed at construction, else the authenticated
user of the process (``identity.acting_user``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.engine import Connection

from train_platform.registry import access, schema
from train_platform.registry.checkpoints import checkpoint_digest
from train_platform.registry.exceptions import (
    AccessDeniedError,
    AliasNotSetError,
    CheckpointInvalidError,
    ModelNotFoundError,
    NothingToRollBackError,
    VersionNotFoundError,
)
from train_platform.registry.experiments import ExperimentsMixin
from train_platform.registry.live_stats import LiveStatsMixin
from train_platform.registry.names import LATEST, PRODUCTION, check_alias, check_name
from train_platform.registry.refs import ModelRef
from train_platform.settings import Settings, get_settings

log = logging.getLogger(__name__)

GATE_STATES = ("pending", "passed", "failed")

# Event kinds that move an alias; rollback replays exactly these.
_ALIAS_KINDS = ("promote", "rollback", "clear")


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: int
    created_at: datetime
    created_by: str
    task: str
    checkpoint_uri: str
    bento_model_tag: str
    bento_tag: str | None
    training_run: str | None
    dataset_snapshot: str | None
    parent_version: int | None
    metrics: dict[str, Any]
    gate_status: str
    gate_report: str | None
    rejected: bool
    aliases: tuple[str, ...] = ()
    # The gate's decision (``gate.GateDecision.to_dict``): passed, reasons, figures, policy.
    gate_detail: dict[str, Any] | None = None

    @property
    def gate_reasons(self) -> list[str]:
        return list((self.gate_detail or {}).get("reasons") or [])

    @property
    def ref(self) -> ModelRef:
        """The reference to this version: ``str(v.ref)`` is ``model:NAME:vN``."""
        return ModelRef(self.model, version=self.version)

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["created_at"] = self.created_at.isoformat()
        data["aliases"] = list(self.aliases)
        return data


@dataclass(frozen=True)
class ModelEvent:
    at: datetime
    kind: str
    alias: str | None
    version: int | None
    previous_version: int | None
    actor: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["at"] = self.at.isoformat()
        return data



class ModelRegistry(ExperimentsMixin, LiveStatsMixin):
    """Entry point to the registry. Cheap to construct; holds no connection."""

    def __init__(self, settings: Settings | None = None, *, database_url: str | None = None,
                 actor: str | None = None):
        self.settings = settings or get_settings()
        self.url = database_url or self.settings.database_uri
        self._actor = access.check_user(actor) if actor else None

    @property
    def actor(self) -> str:
        """Who this registry's steps are recorded as when a call names no ``actor``: the one
        given at construction, else the process's authenticated user (``TP_USER`` only for
        a platform-admin; ``IdentityError`` otherwise)."""
        if self._actor is None:
            from train_platform.registry.identity import acting_user

            self._actor = acting_user(self.settings, database_url=self.url)
        return self._actor

    def _who(self, actor: str | None) -> str:
        return access.check_user(actor) if actor else self.actor

    @contextmanager
    def _writing(self, name: str, operation: str, actor: str | None) -> Iterator[tuple[Connection, int, str]]:
        """A write transaction on model ``name``: its row locked, the acting user's role for
        ``operation`` checked. Yields (connection, model id, acting user); a refusal is
        recorded as a ``denied`` event after the transaction rolled back."""
        who = self._who(actor)
        checked = False
        model_id = None
        try:
            with schema.transaction(self.url) as conn:
                model_id = self._model_id(conn, name, lock=True)
                access.check_model_role(conn, model_id, name, who, operation)
                checked = True
                yield conn, model_id, who
        except AccessDeniedError as exc:
            if not checked and model_id is not None:
                self._record_denied(model_id, who, exc)
            raise

    def _record_denied(self, model_id: int, who: str, exc: AccessDeniedError) -> None:
        with schema.transaction(self.url) as conn:
            self._event(conn, model_id, "denied", actor=who,
                        detail={"operation": exc.operation, "needed": exc.needed, "role": exc.role})

    def check_access(self, name: str, operation: str, actor: str | None = None) -> str:
        """The acting user, when they hold the role ``operation`` (``list``, ``show``,
        ``history``, ``export``, ``package``, ...) needs on ``name``; ``AccessDeniedError``
        otherwise, recorded as a ``denied`` event. For steps checked before they start (a
        Bento build, an upload) and for reads through the CLI."""
        who = self._who(actor)
        with schema.read(self.url) as conn:
            model_id = self._model_id(conn, name)
            try:
                access.check_model_role(conn, model_id, name, who, operation)
            except AccessDeniedError as exc:
                denied = exc
            else:
                return who
        self._record_denied(model_id, who, denied)
        raise denied

    # ------------------------------------------------------------------ internals

    def _model_id(self, conn: Connection, name: str, *, lock: bool = False) -> int:
        query = select(schema.models.c.id).where(schema.models.c.name == check_name(name))
        if lock:
            query = query.with_for_update()
        model_id = conn.execute(query).scalar()
        if model_id is None:
            known = conn.execute(select(schema.models.c.name).order_by(schema.models.c.name)).scalars().all()
            hint = f"; registered models: {', '.join(known)}" if known else "; no model is registered yet"
            raise ModelNotFoundError(f"unknown model {name!r}{hint}")
        return model_id

    def _version_row(self, conn: Connection, model_id: int, name: str, version: int):
        row = conn.execute(
            select(schema.versions).where(
                and_(schema.versions.c.model_id == model_id, schema.versions.c.version == int(version))
            )
        ).mappings().first()
        if row is None:
            numbers = conn.execute(
                select(schema.versions.c.version).where(schema.versions.c.model_id == model_id).order_by(schema.versions.c.version)
            ).scalars().all()
            raise VersionNotFoundError(
                f"model {name!r} has no version {version}; its versions are "
                f"{', '.join(map(str, numbers)) or 'none'}"
            )
        return row

    def _aliases_of(self, conn: Connection, model_id: int) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for alias, version in conn.execute(
            select(schema.aliases.c.alias, schema.aliases.c.version)
            .where(schema.aliases.c.model_id == model_id)
            .order_by(schema.aliases.c.alias)
        ):
            out.setdefault(version, []).append(alias)
        return out

    @staticmethod
    def _to_version(name: str, row, aliases: Iterable[str] = ()) -> ModelVersion:
        return ModelVersion(
            model=name,
            version=row["version"],
            created_at=schema.aware(row["created_at"]),
            created_by=row["created_by"],
            task=row["task"],
            checkpoint_uri=row["checkpoint_uri"],
            bento_model_tag=row["bento_model_tag"],
            bento_tag=row["bento_tag"],
            training_run=row["training_run"],
            dataset_snapshot=row["dataset_snapshot"],
            parent_version=row["parent_version"],
            metrics=dict(row["metrics"] or {}),
            gate_status=row["gate_status"],
            gate_report=row["gate_report"],
            rejected=bool(row["rejected"]),
            aliases=tuple(aliases),
            gate_detail=dict(row["gate_detail"]) if row["gate_detail"] else None,
        )

    def _event(
        self, conn: Connection, model_id: int, kind: str, *, alias: str | None = None,
        version: int | None = None, previous: int | None = None, actor: str | None = None,
        detail: dict[str, Any] | None = None, at: datetime | None = None,
    ) -> None:
        conn.execute(
            insert(schema.events).values(
                model_id=model_id, at=at or schema.utcnow(), kind=kind, alias=alias, version=version,
                previous_version=previous, actor=actor or self.actor, detail=detail or {},
            )
        )

    def _current_alias(self, conn: Connection, model_id: int, alias: str) -> int | None:
        return conn.execute(
            select(schema.aliases.c.version).where(
                and_(schema.aliases.c.model_id == model_id, schema.aliases.c.alias == alias)
            )
        ).scalar()

    def _set_alias(
        self, conn: Connection, model_id: int, alias: str, version: int | None, *, kind: str,
        actor: str | None, detail: dict[str, Any] | None,
    ) -> int | None:
        previous = self._current_alias(conn, model_id, alias)
        now = schema.utcnow()
        if version is None:
            conn.execute(
                schema.aliases.delete().where(
                    and_(schema.aliases.c.model_id == model_id, schema.aliases.c.alias == alias)
                )
            )
        elif previous is None:
            conn.execute(insert(schema.aliases).values(model_id=model_id, alias=alias, version=version, updated_at=now))
        else:
            conn.execute(
                update(schema.aliases)
                .where(and_(schema.aliases.c.model_id == model_id, schema.aliases.c.alias == alias))
                .values(version=version, updated_at=now)
            )
        self._event(conn, model_id, kind, alias=alias, version=version, previous=previous, actor=actor, detail=detail, at=now)
        return previous

    def _holder_stack(self, conn: Connection, model_id: int, alias: str) -> list[int]:
        stack: list[int] = []
        rows = conn.execute(
            select(schema.events.c.kind, schema.events.c.version)
            .where(and_(
                schema.events.c.model_id == model_id,
                schema.events.c.alias == alias,
                schema.events.c.kind.in_(_ALIAS_KINDS),
            ))
            .order_by(schema.events.c.id)
        )
        for kind, version in rows:
            if kind == "promote":
                stack.append(version)
            elif kind == "rollback":
                if stack:
                    stack.pop()
            else:  # clear: the alias starts over
                stack.clear()
        return stack

    # ------------------------------------------------------------------ versions

    def register(
        self, name: str, checkpoint_dir: str | Path, *, training_run: str | None = None,
        dataset_snapshot: str | None = None, metrics: dict[str, Any] | None = None,
        parent_version: int | None = None, gate_status: str = "pending",
        gate_report: str | None = None, task: str | None = None, actor: str | None = None,
        gate_detail: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Adds a new version of ``name`` from a checkpoint folder written by ``ml.train``.

        The folder is checked and copied into a staging entry of the BentoML model store
        before any database lock is taken; inside the write transaction the copy is renamed
        to ``name:v<version>`` and the version recorded. A failed registration leaves
        nothing behind, and one killed at any point leaves nothing that blocks the next
        (see ``bento_store``). The first version's registrant becomes the model's owner;
        later versions need maintainer.
        """
        check_name(name)
        who = self._who(actor)
        checkpoint = Path(checkpoint_dir).expanduser().resolve()
        if gate_status not in GATE_STATES:
            raise CheckpointInvalidError(f"gate status must be one of {', '.join(GATE_STATES)}, not {gate_status!r}")
        metrics = dict(metrics or {})
        for key, value in metrics.items():
            if not isinstance(key, str):
                raise CheckpointInvalidError(f"metric names must be strings, got {key!r}")
            if isinstance(value, float) and value != value:
                raise CheckpointInvalidError(f"metric {key!r} is NaN")
        from sqlalchemy.exc import IntegrityError

        from train_platform.registry import bento_store

        # The slow part, before any database lock: check, copy and hash the checkpoint into
        # a staging entry of the model store (see ``bento_store``).
        staged = bento_store.stage_checkpoint(self.settings, name, checkpoint)
        try:
            task = task or staged.info.task
            for attempt in range(3):
                try:
                    number, row, tag = self._register_once(
                        name, checkpoint, staged, task=task, metrics=metrics, training_run=training_run,
                        dataset_snapshot=dataset_snapshot, parent_version=parent_version,
                        gate_status=gate_status, gate_report=gate_report, actor=who, gate_detail=gate_detail,
                    )
                    break
                except _Denied as denied:
                    self._record_denied(denied.model_id, who, denied.error)
                    raise denied.error from None
                except IntegrityError:
                    # PostgreSQL: a concurrent first registration created the model row (or took
                    # the number) between our read and insert; the retry sees it and locks it.
                    if attempt == 2:
                        raise
        finally:
            bento_store.discard_staged(staged)
        bento_store.mark_latest(self.settings, name)
        bento_store.clean_staging(self.settings)  # a store folder set aside under the lock
        log.info("registered %s version %d (%s)", name, number, tag)
        return self._to_version(name, row)

    def _register_once(self, name: str, checkpoint: Path, staged, *, task: str, metrics: dict[str, Any],
                       training_run: str | None, dataset_snapshot: str | None,
                       parent_version: int | None, gate_status: str, gate_report: str | None,
                       actor: str, gate_detail: dict[str, Any] | None):
        """One try at the database write: takes the number, renames the staged copy into
        the store as that version and records it, in one transaction. Only metadata is
        written under the lock; a failure moves the copy back into its staging entry."""
        from train_platform.registry import bento_store

        digest = staged.info.digest
        with schema.transaction(self.url) as conn:
            model_id = conn.execute(
                select(schema.models.c.id).where(schema.models.c.name == name).with_for_update()
            ).scalar()
            if model_id is None:
                model_id = conn.execute(
                    insert(schema.models).values(name=name, created_at=schema.utcnow())
                ).inserted_primary_key[0]
                access.set_model_role(conn, model_id, name, actor, "owner", actor=actor)
                first = True
            else:
                first = False
                try:
                    access.check_model_role(conn, model_id, name, actor, "register")
                except AccessDeniedError as exc:
                    raise _Denied(model_id, exc) from None
            if parent_version is not None:
                self._version_row(conn, model_id, name, parent_version)
            number = (conn.execute(
                select(func.max(schema.versions.c.version)).where(schema.versions.c.model_id == model_id)
            ).scalar() or 0) + 1
            extra = {k: v for k, v in (("training_run", training_run), ("dataset_snapshot", dataset_snapshot)) if v}
            tag = bento_store.install_staged(
                self.settings, staged, name, number,
                labels={"task": task, "registry_version": str(number)},
                metadata={"checkpoint_uri": str(checkpoint), "checkpoint_digest": digest, "metrics": metrics, **extra},
            )
            try:
                conn.execute(insert(schema.versions).values(
                    model_id=model_id, version=number, created_at=schema.utcnow(),
                    created_by=actor, task=task, checkpoint_uri=str(checkpoint),
                    checkpoint_digest=digest,
                    bento_model_tag=tag, training_run=training_run, dataset_snapshot=dataset_snapshot,
                    parent_version=parent_version, metrics=metrics, gate_status=gate_status,
                    gate_report=gate_report, gate_detail=gate_detail, rejected=False,
                ))
                self._event(conn, model_id, "register", version=number, actor=actor,
                            detail={"checkpoint": str(checkpoint), "bento_model": tag, "gate": gate_status,
                                    **({"owner": actor} if first else {})})
                if gate_detail is not None:
                    self._event(conn, model_id, "gate", version=number, actor=actor,
                                detail={"status": gate_status, "report": gate_report, **gate_detail})
                row = self._version_row(conn, model_id, name, number)
            except BaseException:
                # The database rolls back; the files go back to staging, or a retry collides.
                bento_store.uninstall(self.settings, staged, tag)
                raise
        return number, row, tag

    def get(self, name: str, version: int | str) -> ModelVersion:
        """A version by number (``3`` or ``v3``), alias (``production``) or ``latest``."""
        with schema.read(self.url) as conn:
            model_id = self._model_id(conn, name)
            number = self._resolve(conn, model_id, name, version)
            row = self._version_row(conn, model_id, name, number)
            return self._to_version(name, row, self._aliases_of(conn, model_id).get(number, ()))

    def _resolve(self, conn: Connection, model_id: int, name: str, version: int | str) -> int:
        """The number ``version`` (read as ``ModelRef.of`` reads it) stands for."""
        ref = ModelRef.of(name, version)
        if ref.version is not None:
            return ref.version
        if ref.alias == LATEST:
            number = conn.execute(
                select(func.max(schema.versions.c.version)).where(schema.versions.c.model_id == model_id)
            ).scalar()
            if number is None:
                raise VersionNotFoundError(f"model {name!r} has no versions yet")
            return number
        number = self._current_alias(conn, model_id, ref.alias)
        if number is None:
            raise AliasNotSetError(f"alias {ref.alias!r} of model {name!r} points at no version")
        return number

    def list_versions(self, name: str) -> list[ModelVersion]:
        with schema.read(self.url) as conn:
            model_id = self._model_id(conn, name)
            held = self._aliases_of(conn, model_id)
            rows = conn.execute(
                select(schema.versions).where(schema.versions.c.model_id == model_id).order_by(schema.versions.c.version)
            ).mappings().all()
            return [self._to_version(name, row, held.get(row["version"], ())) for row in rows]

    def find_by_checkpoint(self, name: str, checkpoint_dir: str | Path) -> ModelVersion | None:
        """The version registered from a checkpoint with the same content, if any (keeps
        retries of a deployment task from registering the same checkpoint twice)."""
        digest = checkpoint_digest(Path(checkpoint_dir).expanduser().resolve())
        with schema.read(self.url) as conn:
            model_id = conn.execute(select(schema.models.c.id).where(schema.models.c.name == name)).scalar()
            if model_id is None:
                return None
            row = conn.execute(select(schema.versions).where(and_(
                schema.versions.c.model_id == model_id, schema.versions.c.checkpoint_digest == digest,
            )).order_by(schema.versions.c.version.desc())).mappings().first()
            return None if row is None else self._to_version(name, row)

    def list_models(self) -> list[str]:
        with schema.read(self.url) as conn:
            return list(conn.execute(select(schema.models.c.name).order_by(schema.models.c.name)).scalars())

    def record_gate(self, name: str, version: int, *, passed: bool, report: str | None = None,
                    actor: str | None = None, detail: dict[str, Any] | None = None) -> ModelVersion:
        """Stores the evaluation gate's verdict (and the decision behind it, ``detail``);
        deployment only considers passed versions. Without ``detail`` it is a verdict given
        by hand (``tp model gate``), recorded as such."""
        status = "passed" if passed else "failed"
        gate_detail = detail if detail is not None else {"passed": passed, "reasons": ["set by hand"]}
        with self._writing(name, "gate", actor) as (conn, model_id, who):
            self._version_row(conn, model_id, name, version)
            conn.execute(update(schema.versions).where(and_(
                schema.versions.c.model_id == model_id, schema.versions.c.version == version,
            )).values(gate_status=status, gate_report=report, gate_detail=gate_detail))
            self._event(conn, model_id, "gate", version=version, actor=who,
                        detail={"status": status, "report": report, **gate_detail})
        return self.get(name, version)

    def record_bento(self, name: str, version: int, bento_tag: str, *, actor: str | None = None) -> None:
        with self._writing(name, "package", actor) as (conn, model_id, who):
            self._version_row(conn, model_id, name, version)
            conn.execute(update(schema.versions).where(and_(
                schema.versions.c.model_id == model_id, schema.versions.c.version == version,
            )).values(bento_tag=bento_tag))
            self._event(conn, model_id, "package", version=version, actor=who, detail={"bento": bento_tag})

    def record_event(self, name: str, kind: str, *, version: int | None = None,
                     detail: dict[str, Any] | None = None, actor: str | None = None,
                     operation: str = "deploy") -> None:
        """A step that changes no alias (an export, an A/B check that keeps waiting); the
        acting user needs the role ``operation`` needs."""
        with self._writing(name, operation, actor) as (conn, model_id, who):
            self._event(conn, model_id, kind, version=version, actor=who, detail=detail)

    # ------------------------------------------------------------------ roles

    def grant(self, name: str, user: str, role: str | None, *, actor: str | None = None) -> None:
        """Gives ``user`` ``role`` (reader, maintainer, owner; ``None`` removes it) on ``name``;
        the acting user must be an owner (or a platform-admin)."""
        with self._writing(name, "grant", actor) as (conn, model_id, who):
            previous = access.set_model_role(conn, model_id, name, user, role, actor=who)
            self._event(conn, model_id, "grant", actor=who, detail={"user": user, "role": role, "previous": previous})
        log.info("%s: %s gave %s the role %s", name, self.actor if actor is None else actor, user, role)

    def roles(self, name: str) -> dict[str, str]:
        """User -> role on ``name``."""
        with schema.read(self.url) as conn:
            return access.model_roles(conn, self._model_id(conn, name))

    # ------------------------------------------------------------------ aliases

    def promote(self, name: str, version: int | str, *, alias: str = PRODUCTION,
                actor: str | None = None, reason: str | None = None) -> ModelVersion:
        """Points ``alias`` at ``version`` and records the move. An alias may not be
        ``latest`` or look like a version (``3``, ``v3``): references must read one way."""
        check_alias(alias)
        with self._writing(name, "promote", actor) as (conn, model_id, who):
            number = self._resolve(conn, model_id, name, version)
            self._version_row(conn, model_id, name, number)
            previous = self._set_alias(conn, model_id, alias, number, kind="promote", actor=who,
                                       detail={"reason": reason} if reason else {})
        log.info("%s: alias %s -> version %d (was %s)", name, alias, number, previous)
        return self.get(name, number)

    def rollback(self, name: str, *, alias: str = PRODUCTION, actor: str | None = None,
                 reason: str | None = None) -> ModelVersion:
        """Moves ``alias`` back to the holder before the current one."""
        check_name(alias, "alias")
        with self._writing(name, "rollback", actor) as (conn, model_id, who):
            current = self._current_alias(conn, model_id, alias)
            if current is None:
                raise AliasNotSetError(f"alias {alias!r} of model {name!r} points at no version; nothing to roll back")
            stack = self._holder_stack(conn, model_id, alias)
            if len(stack) < 2:
                raise NothingToRollBackError(
                    f"alias {alias!r} of model {name!r} has no earlier holder than version {current}"
                )
            target = stack[-2]
            self._set_alias(conn, model_id, alias, target, kind="rollback", actor=who,
                            detail={"reason": reason} if reason else {})
        log.info("%s: alias %s rolled back %d -> %d", name, alias, current, target)
        return self.get(name, target)

    def clear_alias(self, name: str, alias: str, *, actor: str | None = None, reason: str | None = None) -> None:
        with self._writing(name, "clear", actor) as (conn, model_id, who):
            if self._current_alias(conn, model_id, check_name(alias, "alias")) is None:
                raise AliasNotSetError(f"alias {alias!r} of model {name!r} points at no version")
            self._set_alias(conn, model_id, alias, None, kind="clear", actor=who,
                            detail={"reason": reason} if reason else {})

    def aliases(self, name: str) -> dict[str, int]:
        with schema.read(self.url) as conn:
            model_id = self._model_id(conn, name)
            return {alias: version for version, names in self._aliases_of(conn, model_id).items() for alias in names}

    def history(self, name: str, *, alias: str | None = None) -> list[ModelEvent]:
        """Every recorded step, oldest first; with ``alias``, only that alias's moves."""
        with schema.read(self.url) as conn:
            model_id = self._model_id(conn, name)
            query = select(schema.events).where(schema.events.c.model_id == model_id)
            if alias is not None:
                query = query.where(schema.events.c.alias == alias)
            rows = conn.execute(query.order_by(schema.events.c.id)).mappings().all()
        return [
            ModelEvent(at=schema.aware(r["at"]), kind=r["kind"], alias=r["alias"], version=r["version"],
                       previous_version=r["previous_version"], actor=r["actor"], detail=dict(r["detail"] or {}))
            for r in rows
        ]


class _Denied(Exception):
    """Carries a refused registration out of its transaction, so that the refusal can be
    recorded after the rollback."""

    def __init__(self, model_id: int, error: AccessDeniedError):
        super().__init__(str(error))
        self.model_id, self.error = model_id, error
