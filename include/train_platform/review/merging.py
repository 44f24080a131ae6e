"""Merging the reviewers' branches into main once a review is approved.

Whose branches: every reviewer with a decision (skips left out) on a sample of the batch
as it stands now. First the reviewers' decisions are compared: when two reviewers decided a
sample differently, nothing is merged and ``ReviewConflictError`` names those samples with
each reviewer's decision. Otherwise each reviewer's branch is merged into main
(``Dataset.merge``, under the dataset's version lock) in reviewer order. A branch that
conflicts with main (main changed the same samples differently, for example by a direct
label) is not merged; the others are, and ``ReviewConflictError`` then names the
conflicting samples with what main and the branch hold, and lists the merges done. To
resolve a conflict, a reviewer changes their decision on the page so that it agrees, and
the review step runs again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from train_platform.datasets.dataset import open_dataset
from train_platform.datasets.exceptions import MergeConflict
from train_platform.datasets.refs import MAIN
from train_platform.review import reading
from train_platform.review.batches import batch_ids_in_review
from train_platform.review.conflicts import disagreements
from train_platform.review.exceptions import ReviewConflictError
from train_platform.review.journal import ReviewJournal
from train_platform.settings import Settings, get_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReviewMergeResult:
    dataset: str
    review_branch: str
    reviewers: list[str]
    merged: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "review_branch": self.review_branch, "reviewers": self.reviewers,
                "merged": self.merged}


def _state(row: dict[str, Any] | None) -> dict[str, Any]:
    if row is None:
        return {"action": "removed", "label": None}
    return {"action": row["status"], "label": row["label"], "annotator": row["annotator"],
            "label_source": row["label_source"]}


def merge_reviews(
    dataset: str,
    review_branch: str,
    *,
    actor: str,
    batch_id: str | None = None,
    approver: str | None = None,
    settings: Settings | None = None,
    wait_s: float | None = 60.0,
) -> ReviewMergeResult:
    """Merge the branches of the reviewers of ``review_branch``'s batch into main, acting
    as ``actor`` (who needs the writer role), as the module describes."""
    settings = settings or get_settings()
    ds = open_dataset(dataset, user=actor, settings=settings)
    review_head = reading.branch_head(ds.refs(), dataset, review_branch)
    table = reading.load_table(ds)
    journal = ReviewJournal(settings.catalog_uri)
    ids, _, _ = batch_ids_in_review(ds, table, review_branch, review_head, batch_id, journal)
    decisions = [d for d in journal.decisions(dataset, review_branch, sample_ids=ids) if d.outcome is not None]
    disagreed = disagreements(decisions)
    if disagreed:
        raise ReviewConflictError(dataset, disagreed)
    branches = sorted({(d.reviewer, d.branch) for d in decisions})
    merged: list[dict[str, Any]] = []
    conflicts: dict[str, dict[str, Any]] = {}
    who = f", approved by {approver}" if approver else ""
    for reviewer, branch in branches:
        try:
            result = ds.merge(branch, message=f"review of {review_branch} by {reviewer}{who}", wait_s=wait_s)
        except MergeConflict as exc:
            fresh = reading.load_table(ds)
            main_rows = {r["sample_id"]: r for r in reading.rows_of(fresh, fresh.metadata.refs[MAIN].snapshot_id, exc.ids).to_pylist()}
            branch_rows = {r["sample_id"]: r for r in reading.rows_of(fresh, fresh.metadata.refs[branch].snapshot_id, exc.ids).to_pylist()}
            for sample_id in exc.ids:
                entry = conflicts.setdefault(sample_id, {MAIN: _state(main_rows.get(sample_id))})
                entry[reviewer] = {**_state(branch_rows.get(sample_id)), "branch": branch}
            log.warning("%s: %s conflicts with main on %s", dataset, branch, ", ".join(exc.ids))
            continue
        merged.append({**result.as_dict(), "reviewer": reviewer, "snapshot_id": str(result.snapshot_id)})
        log.info("%s: merged %s (%s) into main", dataset, branch, result.kind)
    if conflicts:
        raise ReviewConflictError(dataset, conflicts, merged)
    return ReviewMergeResult(dataset, review_branch, [reviewer for reviewer, _ in branches], merged)


__all__ = ["ReviewMergeResult", "merge_reviews"]
