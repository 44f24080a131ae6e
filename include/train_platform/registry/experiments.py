"""A/B experiments, and the serving state an inference replica reads from them.

An experiment sends a share of the traffic (``candidate_weight``) to a candidate version and
the rest to production; it ends cleared, with the candidate promoted, or rolled back (the
candidate is marked rejected). Starting one points the ``candidate`` alias at the
candidate, so the move is in the alias history; ending one clears that alias again.
``ServingState`` is what a replica polls: the production version and the running
experiment, in one read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.engine import Connection

from train_platform.registry import schema
from train_platform.registry.exceptions import ExperimentError
from train_platform.registry.names import CANDIDATE, PRODUCTION


@dataclass(frozen=True)
class Experiment:
    id: int
    model: str
    control_version: int
    candidate_version: int
    candidate_weight: float
    started_at: datetime
    ended_at: datetime | None = None
    outcome: str | None = None


@dataclass(frozen=True)
class ServingState:
    """What an inference replica needs, read in one cheap query: the production version and
    the running experiment, if any."""

    model: str
    production: int | None
    experiment: Experiment | None


class ExperimentsMixin:
    """The experiment and serving-state methods of ``ModelRegistry`` (mixed in there; they
    use its ``url`` and its helpers ``_writing``, ``_model_id``, ``_resolve``,
    ``_version_row``, ``_current_alias``, ``_set_alias`` and ``_event``). Starting, ending
    and concluding an experiment need the maintainer role on the model."""

    def start_experiment(self, name: str, candidate: int | str, *, weight: float,
                         actor: str | None = None, reason: str | None = None) -> Experiment:
        """Sends ``weight`` of the traffic to ``candidate``, the rest to production. Points
        the ``candidate`` alias at it too, so the move is in the alias history."""
        if not isinstance(weight, (int, float)) or not 0.0 < float(weight) < 1.0:
            raise ExperimentError(f"candidate weight must be strictly between 0 and 1, not {weight!r}")
        with self._writing(name, "experiment", actor) as (conn, model_id, actor):
            number = self._resolve(conn, model_id, name, candidate)
            self._version_row(conn, model_id, name, number)
            production = self._current_alias(conn, model_id, PRODUCTION)
            if production is None:
                raise ExperimentError(f"model {name!r} has no production version to compare version {number} with")
            if production == number:
                raise ExperimentError(f"version {number} of {name!r} is already production; an A/B test needs two versions")
            running = self._active_experiment(conn, model_id, name)
            if running is not None:
                raise ExperimentError(
                    f"model {name!r} already runs experiment {running.id} "
                    f"(v{running.control_version} vs v{running.candidate_version}); clear it first"
                )
            now = schema.utcnow()
            exp_id = conn.execute(insert(schema.experiments).values(
                model_id=model_id, control_version=production, candidate_version=number,
                candidate_weight=float(weight), started_at=now,
            )).inserted_primary_key[0]
            if self._current_alias(conn, model_id, CANDIDATE) != number:
                self._set_alias(conn, model_id, CANDIDATE, number, kind="promote", actor=actor,
                                detail={"reason": "A/B experiment started"})
            self._event(conn, model_id, "ab_start", version=number, previous=production, actor=actor,
                        detail={"experiment": exp_id, "weight": float(weight), **({"reason": reason} if reason else {})})
            return self._active_experiment(conn, model_id, name)

    def end_experiment(self, name: str, *, outcome: str = "cleared", actor: str | None = None,
                       detail: dict[str, Any] | None = None) -> Experiment:
        with self._writing(name, "experiment", actor) as (conn, model_id, actor):
            ended = self._end_experiment(conn, model_id, name, outcome=outcome, actor=actor, detail=detail)
            if self._current_alias(conn, model_id, CANDIDATE) == ended.candidate_version:
                self._set_alias(conn, model_id, CANDIDATE, None, kind="clear", actor=actor,
                                detail={"reason": f"A/B experiment {outcome}"})
            return ended

    def _end_experiment(self, conn: Connection, model_id: int, name: str, *, outcome: str,
                        actor: str | None, detail: dict[str, Any] | None) -> Experiment:
        running = self._active_experiment(conn, model_id, name)
        if running is None:
            raise ExperimentError(f"model {name!r} runs no A/B experiment")
        now = schema.utcnow()
        conn.execute(update(schema.experiments).where(schema.experiments.c.id == running.id)
                     .values(ended_at=now, outcome=outcome))
        self._event(conn, model_id, "ab_end", version=running.candidate_version,
                    previous=running.control_version, actor=actor,
                    detail={"experiment": running.id, "outcome": outcome, **(detail or {})}, at=now)
        return Experiment(**{**running.__dict__, "ended_at": now, "outcome": outcome})

    def _active_experiment(self, conn: Connection, model_id: int, name: str) -> Experiment | None:
        row = conn.execute(
            select(schema.experiments).where(and_(
                schema.experiments.c.model_id == model_id, schema.experiments.c.ended_at.is_(None),
            )).order_by(schema.experiments.c.id.desc())
        ).mappings().first()
        if row is None:
            return None
        return Experiment(id=row["id"], model=name, control_version=row["control_version"],
                          candidate_version=row["candidate_version"], candidate_weight=row["candidate_weight"],
                          started_at=schema.aware(row["started_at"]))

    def active_experiment(self, name: str) -> Experiment | None:
        with schema.read(self.url) as conn:
            return self._active_experiment(conn, self._model_id(conn, name), name)

    def conclude_experiment(self, name: str, *, promote: bool, actor: str | None = None,
                            detail: dict[str, Any] | None = None) -> Experiment:
        """Ends the running experiment in one transaction: the candidate becomes production
        (``promote``) or is marked rejected and production stays (rollback of the A/B)."""
        with self._writing(name, "experiment", actor) as (conn, model_id, actor):
            running = self._active_experiment(conn, model_id, name)
            if running is None:
                raise ExperimentError(f"model {name!r} runs no A/B experiment")
            outcome = "promoted" if promote else "rolled_back"
            ended = self._end_experiment(conn, model_id, name, outcome=outcome, actor=actor, detail=detail)
            if promote:
                self._set_alias(conn, model_id, PRODUCTION, running.candidate_version, kind="promote",
                                actor=actor, detail={"reason": "A/B experiment won", **(detail or {})})
            else:
                conn.execute(update(schema.versions).where(and_(
                    schema.versions.c.model_id == model_id,
                    schema.versions.c.version == running.candidate_version,
                )).values(rejected=True))
            if self._current_alias(conn, model_id, CANDIDATE) is not None:
                self._set_alias(conn, model_id, CANDIDATE, None, kind="clear", actor=actor,
                                detail={"reason": f"A/B experiment {outcome}"})
            return ended

    def serving_state(self, name: str) -> ServingState:
        """One read for the inference service's poll."""
        with schema.read(self.url) as conn:
            model_id = self._model_id(conn, name)
            return ServingState(model=name, production=self._current_alias(conn, model_id, PRODUCTION),
                                experiment=self._active_experiment(conn, model_id, name))
