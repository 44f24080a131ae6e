"""What reviewers decided and what review steps asked for, in the catalog's database.

Two tables, created on first use next to the dataset roles and audit:

* ``tp_review_decisions``: each reviewer's latest decision on each sample of a review
  branch (``accept``, ``correct``, ``reject``, ``skip``), the label it gave, and the commit
  on the reviewer's own branch that holds it. The labels themselves live in the dataset; this
  table is how the page knows who decided what without reading every user branch, and how
  the waiting step knows whose branches to merge.
* ``tp_review_requests``: one row per review step of a pipeline run (dag, run, task): the
  dataset and review branch it waits on, whether reviewers may type new classes, the check
  report it points at, and how it ended (``waiting``, ``rejected``, ``merged``,
  ``conflict``, ``failed``) with the details (conflicting samples, merges done).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from sqlalchemy import BigInteger, Boolean, Column, DateTime, Integer, MetaData, String, Table, Text, and_, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from train_platform.datasets.access import AccessStore

ACTIONS = ("accept", "correct", "reject", "skip")
REQUEST_STATES = ("waiting", "rejected", "merged", "conflict", "failed")

_metadata = MetaData()
decisions_table = Table(
    "tp_review_decisions",
    _metadata,
    Column("dataset", String(128), primary_key=True),
    Column("review_branch", String(255), primary_key=True),
    Column("sample_id", String(512), primary_key=True),
    Column("reviewer", String(255), primary_key=True),
    Column("action", String(16), nullable=False),
    Column("label", String(255)),
    # The model's label the reviewer was shown, and the review branch snapshot it came from.
    Column("model_label", String(255)),
    Column("review_snapshot", BigInteger()),
    # The reviewer's branch and its commit holding the decision (none for a skip).
    Column("branch", String(255), nullable=False),
    Column("snapshot_id", BigInteger()),
    Column("decided_at", DateTime(timezone=True), nullable=False),
)
requests_table = Table(
    "tp_review_requests",
    _metadata,
    Column("id", Integer().with_variant(BigInteger(), "postgresql"), primary_key=True, autoincrement=True),
    Column("dataset", String(128), nullable=False, index=True),
    Column("review_branch", String(255), nullable=False),
    Column("batch_id", String(255)),
    Column("allow_new_classes", Boolean(), nullable=False, default=False),
    Column("check_report", Text()),
    Column("dag_id", String(250), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("task_id", String(250), nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("state", String(16), nullable=False),
    Column("detail", Text()),
)

_ready: set[str] = set()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Decision:
    """One reviewer's latest decision on one sample of a review branch."""

    dataset: str
    review_branch: str
    sample_id: str
    reviewer: str
    action: str
    label: str | None
    model_label: str | None
    review_snapshot: int | None
    branch: str
    snapshot_id: int | None
    decided_at: datetime

    @property
    def outcome(self) -> tuple[str, str | None] | None:
        """What the decision does to the sample: ``("label", L)``, ``("reject", None)``, or
        ``None`` for a skip. An accept and a correction to the same label agree."""
        if self.action == "skip":
            return None
        if self.action == "reject":
            return ("reject", None)
        return ("label", self.label)

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "decided_at": self.decided_at.isoformat()}


@dataclass(frozen=True)
class ReviewRequest:
    """A review step of a pipeline run, and how it ended."""

    id: int
    dataset: str
    review_branch: str
    batch_id: str | None
    allow_new_classes: bool
    check_report: str | None
    dag_id: str
    run_id: str
    task_id: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    state: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat()}


class ReviewJournal:
    """Decisions and review requests of every dataset in one catalog database."""

    def __init__(self, catalog_uri: str):
        self.engine: Engine = AccessStore(catalog_uri).engine
        if catalog_uri not in _ready:
            for attempt in range(3):
                try:
                    _metadata.create_all(self.engine, checkfirst=True)
                    break
                except (IntegrityError, OperationalError, ProgrammingError):
                    # Two processes creating the tables at once: the loser sees a duplicate
                    # (SQLite: "table ... already exists"; PostgreSQL: a duplicate type or
                    # relation) and looks again.
                    if attempt == 2:
                        raise
            _ready.add(catalog_uri)

    # ----- decisions ---------------------------------------------------------------------
    def record_decisions(self, decisions: Iterable[Decision]) -> None:
        """Store each decision, replacing that reviewer's earlier one on the same sample."""
        decisions = list(decisions)
        if not decisions:
            return
        c = decisions_table.c
        with self.engine.begin() as conn:
            for d in decisions:
                key = and_(c.dataset == d.dataset, c.review_branch == d.review_branch, c.sample_id == d.sample_id,
                           c.reviewer == d.reviewer)
                values = {"action": d.action, "label": d.label, "model_label": d.model_label,
                          "review_snapshot": d.review_snapshot, "branch": d.branch, "snapshot_id": d.snapshot_id,
                          "decided_at": d.decided_at}
                if conn.execute(update(decisions_table).where(key).values(**values)).rowcount == 0:
                    conn.execute(insert(decisions_table).values(dataset=d.dataset, review_branch=d.review_branch,
                                                                sample_id=d.sample_id, reviewer=d.reviewer, **values))

    def decisions(self, dataset: str, review_branch: str, *, sample_ids: Iterable[str] | None = None,
                  reviewer: str | None = None) -> list[Decision]:
        """Decisions on ``review_branch`` of ``dataset``, oldest first; only those on
        ``sample_ids`` and by ``reviewer`` when given."""
        c = decisions_table.c
        query = select(decisions_table).where(c.dataset == dataset, c.review_branch == review_branch)
        if reviewer is not None:
            query = query.where(c.reviewer == reviewer)
        wanted = None if sample_ids is None else set(sample_ids)
        if wanted is not None and len(wanted) <= 500:
            query = query.where(c.sample_id.in_(sorted(wanted)))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(c.decided_at, c.sample_id, c.reviewer)).mappings().all()
        out = [Decision(**{**row, "decided_at": _aware(row["decided_at"])}) for row in rows]
        return out if wanted is None else [d for d in out if d.sample_id in wanted]

    # ----- requests ----------------------------------------------------------------------
    def open_request(self, *, dataset: str, review_branch: str, batch_id: str | None, allow_new_classes: bool,
                     check_report: str | None, dag_id: str, run_id: str, task_id: str, created_by: str) -> ReviewRequest:
        """The request of one review step, created on its first try and reset to
        ``waiting`` with the step's current settings on a later one (a retry after a
        conflict); how the earlier try ended stays in ``detail["previous"]``."""
        c = requests_table.c
        now = _now()
        values = {"dataset": dataset, "review_branch": review_branch, "batch_id": batch_id,
                  "allow_new_classes": bool(allow_new_classes), "check_report": check_report,
                  "created_by": created_by, "updated_at": now, "state": "waiting", "detail": "{}"}
        with self.engine.begin() as conn:
            key = and_(c.dag_id == dag_id, c.run_id == run_id, c.task_id == task_id)
            found = conn.execute(select(c.id, c.state, c.detail).where(key)).first()
            if found:
                if found[1] != "waiting":
                    values["detail"] = json.dumps({"previous": {"state": found[1], **json.loads(found[2] or "{}")}},
                                                  sort_keys=True, default=str)
                conn.execute(update(requests_table).where(c.id == found[0]).values(**values))
                request_id = found[0]
            else:
                request_id = conn.execute(insert(requests_table).values(
                    dag_id=dag_id, run_id=run_id, task_id=task_id, created_at=now, **values)).inserted_primary_key[0]
        return self.request(int(request_id))

    def finish_request(self, request_id: int, state: str, detail: dict[str, Any] | None = None) -> None:
        if state not in REQUEST_STATES:
            raise ValueError(f"request state {state!r} is not one of {', '.join(REQUEST_STATES)}")
        with self.engine.begin() as conn:
            old = conn.execute(select(requests_table.c.detail).where(requests_table.c.id == request_id)).scalar()
            previous = json.loads(old or "{}").get("previous")
            detail = {**(detail or {}), **({"previous": previous} if previous else {})}
            conn.execute(update(requests_table).where(requests_table.c.id == request_id).values(
                state=state, updated_at=_now(), detail=json.dumps(detail, sort_keys=True, default=str)))

    def request(self, request_id: int) -> ReviewRequest:
        with self.engine.connect() as conn:
            row = conn.execute(select(requests_table).where(requests_table.c.id == request_id)).mappings().first()
        if row is None:
            raise LookupError(f"no review request {request_id}")
        return _request(row)

    def request_for(self, dag_id: str, run_id: str, task_id: str) -> ReviewRequest:
        """The request of the review step ``task_id`` of run ``run_id`` of ``dag_id``."""
        c = requests_table.c
        with self.engine.connect() as conn:
            row = conn.execute(select(requests_table).where(
                c.dag_id == dag_id, c.run_id == run_id, c.task_id == task_id)).mappings().first()
        if row is None:
            raise LookupError(f"no review request of {dag_id}/{run_id}/{task_id}")
        return _request(row)

    def requests(self, dataset: str, review_branch: str | None = None, limit: int = 20) -> list[ReviewRequest]:
        """Requests on ``dataset`` (and ``review_branch``), newest first."""
        c = requests_table.c
        query = select(requests_table).where(c.dataset == dataset)
        if review_branch is not None:
            query = query.where(c.review_branch == review_branch)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(c.id.desc()).limit(limit)).mappings().all()
        return [_request(row) for row in rows]


def _request(row: Any) -> ReviewRequest:
    return ReviewRequest(**{**row, "created_at": _aware(row["created_at"]), "updated_at": _aware(row["updated_at"]),
                            "detail": json.loads(row["detail"] or "{}")})


__all__ = ["ACTIONS", "REQUEST_STATES", "Decision", "ReviewJournal", "ReviewRequest"]
