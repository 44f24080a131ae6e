"""A review batch: the samples of a review branch awaiting review, as one reviewer sees them.

**Which samples.** The samples whose status is ``pending`` at the review branch's head
(marked for review by ``tp dataset sample --to BRANCH``, pre-labelled by ``tp dataset
prelabel``), optionally only those of one ingestion ``batch_id``. Reviewers' decisions go to
their own branches, so on a review branch other than ``main`` the samples stay pending after
their review is merged: those that main already holds as their reviewers decided
(``merged_ids``) are left out. On ``main`` itself a merged review confirms or removes the
sample, which ends its pending state. Samples are in sample-id order; a page shows a window
of them (``offset``, ``limit``) with their series, and counts cover all.

**What the reviewer sees.** For each sample: its channels over time (and, when its series
lives in object storage, ``series_uri`` ``s3://…``, a presigned link to that raw file,
valid for ``RAW_LINK_TTL``), the label it is shown
with (the model's pre-label, or a person's label sent back for review) with its source and
confidence, the model's runners-up with their probabilities (``alternatives``, stored by
``tp dataset prelabel``), what each reviewer decided so far (from the journal), and the check report's
findings when the review step names one. For the batch: the label set (the dataset's
classes, i.e. the labels of confirmed samples on main, plus the labels samples of the
batch are shown with), whether new classes may be typed (the review step's ``allow_new_classes``; no
otherwise), progress, and the samples reviewers disagree on.

**Optimistic concurrency.** A batch carries the snapshot ids it was read from: the review
branch's head and the reviewer's own branch's head (``None`` before it exists). The page
sends them back with its decisions; ``submit`` refuses decisions on samples that changed
since (``StaleReviewError``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from train_platform.datasets import schema as sample_schema
from train_platform.datasets.dataset import Dataset, open_dataset
from train_platform.datasets.refs import MAIN, user_branch
from train_platform.review import reading
from train_platform.review.conflicts import disagreements
from train_platform.review.findings import NO_REPORT, CheckFindings, Finding, read_findings
from train_platform.review.journal import Decision, ReviewJournal, ReviewRequest
from train_platform.settings import Settings, get_settings

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 20
# How long a presigned link to a sample's raw file works: a review session, not forever.
RAW_LINK_TTL = timedelta(hours=1)
MAX_LIMIT = 200
_ROLE_RANK = {"reader": 1, "writer": 2, "owner": 3}


@dataclass(frozen=True)
class BatchSample:
    sample_id: str
    series: np.ndarray | None  # (T, C) float32; None when stored outside the table
    n_channels: int
    start_time: datetime | None
    end_time: datetime | None
    model_label: str | None
    confidence: float | None
    label_source: str | None
    batch_id: str | None
    decisions: dict[str, Decision] = field(default_factory=dict)  # by reviewer
    # The model's next most likely labels, most probable first: {"label", "probability"}.
    alternatives: list[dict[str, Any]] = field(default_factory=list)
    series_uri: str | None = None  # where the series is stored when not in the table
    raw_url: str | None = None  # a presigned download link of series_uri (s3:// only)
    findings: list[Finding] = field(default_factory=list)

    def decision_of(self, reviewer: str) -> Decision | None:
        return self.decisions.get(reviewer)

    def as_dict(self, *, with_series: bool = False) -> dict[str, Any]:
        data = {
            "sample_id": self.sample_id, "n_channels": self.n_channels,
            "length": None if self.series is None else int(self.series.shape[0]),
            "start_time": self.start_time.isoformat() if self.start_time else None,
            "end_time": self.end_time.isoformat() if self.end_time else None,
            "model_label": self.model_label, "confidence": self.confidence, "label_source": self.label_source,
            "batch_id": self.batch_id,
            "alternatives": [{"label": a["label"], "probability": a["probability"]} for a in self.alternatives],
            "series_uri": self.series_uri, "raw_url": self.raw_url,
            "decisions": {reviewer: {"action": d.action, "label": d.label, "decided_at": d.decided_at.isoformat()}
                          for reviewer, d in self.decisions.items()},
            "findings": [f.as_dict() for f in self.findings],
        }
        if with_series:
            data["series"] = None if self.series is None else self.series.tolist()
        return data


@dataclass(frozen=True)
class Batch:
    dataset: str
    review_branch: str
    reviewer: str
    role: str | None
    batch_id: str | None
    review_snapshot: int
    branch: str  # the reviewer's own branch, where their decisions go
    branch_snapshot: int | None
    ids: list[str]
    samples: list[BatchSample]
    offset: int
    limit: int
    labels: list[str]
    allow_new_classes: bool
    batch_ids: list[str]
    reviewed_by_me: int
    reviewed_by_anyone: int
    disagreements: dict[str, dict[str, dict[str, Any]]]
    request: ReviewRequest | None
    findings: CheckFindings = NO_REPORT

    @property
    def total(self) -> int:
        return len(self.ids)

    @property
    def can_label(self) -> bool:
        return _ROLE_RANK.get(self.role or "", 0) >= _ROLE_RANK["writer"]

    def as_dict(self, *, with_series: bool = False) -> dict[str, Any]:
        return {
            "dataset": self.dataset, "review_branch": self.review_branch, "reviewer": self.reviewer,
            "role": self.role, "can_label": self.can_label, "batch_id": self.batch_id,
            "review_snapshot": str(self.review_snapshot), "branch": self.branch,
            "branch_snapshot": None if self.branch_snapshot is None else str(self.branch_snapshot),
            "total": self.total, "offset": self.offset, "limit": self.limit,
            "reviewed_by_me": self.reviewed_by_me, "reviewed_by_anyone": self.reviewed_by_anyone,
            "labels": self.labels, "allow_new_classes": self.allow_new_classes, "batch_ids": self.batch_ids,
            "samples": [s.as_dict(with_series=with_series) for s in self.samples],
            "disagreements": self.disagreements,
            "request": None if self.request is None else self.request.as_dict(),
            "check_report": self.findings.summary(),
        }


def role_of(ds: Dataset) -> str | None:
    """The acting user's role on ``ds`` (which needs the reader role to ask)."""
    return ds.roles().get(ds.user)


def latest_request(journal: ReviewJournal, dataset: str, review_branch: str) -> ReviewRequest | None:
    found = journal.requests(dataset, review_branch, limit=1)
    return found[0] if found else None


def merged_ids(table: Any, main_head: int, dataset: str, review_branch: str, ids: list[str],
               journal: ReviewJournal) -> set[str]:
    """Which of ``ids`` (samples of a review branch other than main) main already holds as
    their reviewers decided: every reviewer who decided agrees, and main has the sample
    confirmed with that label by one of them, or no longer has it when they rejected it."""
    outcomes: dict[str, set[tuple[str, str | None]]] = {}
    reviewers: dict[str, set[str]] = {}
    for d in journal.decisions(dataset, review_branch, sample_ids=ids):
        if d.outcome is not None:
            outcomes.setdefault(d.sample_id, set()).add(d.outcome)
            reviewers.setdefault(d.sample_id, set()).add(d.reviewer)
    agreed = {i: next(iter(o)) for i, o in outcomes.items() if len(o) == 1}
    if not agreed:
        return set()
    on_main = reading.annotations_of(table, main_head, sorted(agreed))
    merged = set()
    for sample_id, (action, label) in agreed.items():
        row = on_main.get(sample_id)
        if action == "reject":
            if row is None:
                merged.add(sample_id)
        elif row is not None and row["status"] == "confirmed" and row["label"] == label \
                and row["annotator"] in reviewers[sample_id]:
            merged.add(sample_id)
    return merged


def batch_ids_in_review(ds: Dataset, table: Any, review_branch: str, review_snapshot: int, batch_id: str | None,
                        journal: ReviewJournal) -> tuple[list[str], list[str], dict[str, str | None]]:
    """``(ids, batch_ids, labels)``: the batch's sample ids in order (see the module's
    docstring), the batch ids of every pending sample (for choosing one), and the label
    each sample of the batch is shown with."""
    rows = reading.pending(table, review_snapshot)
    ids = rows.column("sample_id").to_pylist()
    batches = rows.column("batch_id").to_pylist()
    shown = rows.column("label").to_pylist()
    all_batch_ids = sorted({b for b in batches if b is not None})
    chosen = [(i, lab) for i, b, lab in zip(ids, batches, shown) if batch_id is None or b == batch_id]
    if review_branch != MAIN and chosen:
        main_head = ds.resolve(MAIN, table=table).snapshot_id
        merged = merged_ids(table, main_head, ds.name, review_branch, [i for i, _ in chosen], journal)
        chosen = [(i, lab) for i, lab in chosen if i not in merged]
    return [i for i, _ in chosen], all_batch_ids, dict(chosen)


def label_set(ds: Dataset, table: Any, model_labels: dict[str, str | None]) -> list[str]:
    """The dataset's classes (labels of confirmed samples on main) and the batch's labels."""
    main_head = ds.resolve(MAIN, table=table).snapshot_id
    labels = set(reading.confirmed_labels(table, main_head, ds.name))
    labels.update(v for v in model_labels.values() if v is not None)
    return sorted(labels)


def raw_link(settings: Settings, uri: str | None) -> str | None:
    """A presigned link to the raw file ``uri`` when it is an ``s3://`` object, signed with
    the platform's S3 settings (``train_platform.storage.object_store``); ``None`` for other
    URIs, and when no link can be signed (no endpoint configured): the page then shows the
    URI alone."""
    if not uri or not uri.startswith("s3://"):
        return None
    from train_platform.storage.exceptions import ObjectStoreError
    from train_platform.storage.object_store import presigned_get_url

    try:
        return presigned_get_url(settings, uri, expires=RAW_LINK_TTL)
    except ObjectStoreError as exc:
        log.warning("no link to %s: %s", uri, exc)
        return None


def with_alternatives(labels: list[str], samples: list[BatchSample]) -> list[str]:
    """``labels`` and the model's alternatives of ``samples``: a runner-up is a label the model
    knows, so a reviewer may pick it even before any sample is confirmed with it."""
    return sorted(set(labels) | {a["label"] for s in samples for a in s.alternatives})


def load_batch(
    dataset: str,
    review_branch: str,
    *,
    reviewer: str,
    batch_id: str | None = None,
    offset: int = 0,
    limit: int = DEFAULT_LIMIT,
    settings: Settings | None = None,
) -> Batch:
    """The batch of ``review_branch`` as ``reviewer`` sees it, with the samples of the
    window ``[offset, offset + limit)``. The reviewer needs the reader role; an unknown
    dataset or branch raises ``DatasetNotFoundError`` or ``RefNotFoundError``."""
    settings = settings or get_settings()
    offset, limit = max(0, int(offset)), max(1, min(MAX_LIMIT, int(limit)))
    ds = open_dataset(dataset, user=reviewer, settings=settings)
    refs = ds.refs()
    review_snapshot = reading.branch_head(refs, dataset, review_branch)
    own = user_branch(reviewer)
    branch_snapshot = refs[own]["snapshot_id"] if own in refs and refs[own]["type"] == "branch" else None
    journal = ReviewJournal(settings.catalog_uri)
    request = latest_request(journal, dataset, review_branch)
    if batch_id is None and request is not None:
        batch_id = request.batch_id
    table = reading.load_table(ds)
    ids, all_batch_ids, model_labels = batch_ids_in_review(ds, table, review_branch, review_snapshot, batch_id, journal)
    decisions = journal.decisions(dataset, review_branch, sample_ids=ids)
    by_sample: dict[str, dict[str, Decision]] = {}
    for decision in decisions:
        by_sample.setdefault(decision.sample_id, {})[decision.reviewer] = decision
    findings = read_findings(request.check_report if request else None)
    window = ids[offset: offset + limit]
    rows = reading.rows_of(table, review_snapshot, window)
    series = sample_schema.series_of(rows)
    samples = []
    for index, row in enumerate(rows.to_pylist()):
        samples.append(BatchSample(
            sample_id=row["sample_id"], series=series[index], n_channels=int(row["n_channels"]),
            start_time=row["start_time"], end_time=row["end_time"], model_label=row["label"],
            confidence=row["confidence"], label_source=row["label_source"], batch_id=row["batch_id"],
            decisions=by_sample.get(row["sample_id"], {}), findings=findings.of(row["sample_id"]),
            alternatives=list(row.get("alternatives") or ()), series_uri=row["series_uri"],
            raw_url=raw_link(settings, row["series_uri"]),
        ))
    decided = {d.sample_id for d in decisions if d.outcome is not None}
    return Batch(
        dataset=dataset, review_branch=review_branch, reviewer=reviewer, role=role_of(ds), batch_id=batch_id,
        review_snapshot=review_snapshot, branch=own, branch_snapshot=branch_snapshot, ids=ids, samples=samples,
        offset=offset, limit=limit, labels=with_alternatives(label_set(ds, table, model_labels), samples),
        allow_new_classes=bool(request.allow_new_classes) if request else False, batch_ids=all_batch_ids,
        reviewed_by_me=len({d.sample_id for d in decisions if d.reviewer == reviewer and d.outcome is not None}),
        reviewed_by_anyone=len(decided), disagreements=disagreements(decisions), request=request, findings=findings,
    )


__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "Batch", "BatchSample", "batch_ids_in_review", "label_set", "load_batch",
           "merged_ids", "raw_link", "role_of", "with_alternatives"]
