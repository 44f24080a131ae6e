"""Errors of ``train_platform.review``. Each carries the HTTP status the review page's API
answers with (``status``); nothing is written when one is raised before a commit."""

from __future__ import annotations

from typing import Any

from train_platform.exceptions import TrainPlatformError


def _shown(ids: list[str], limit: int = 20) -> str:
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


class ReviewError(TrainPlatformError):
    """Base of every review error."""

    exit_code = 2
    status = 400


class InvalidDecisionError(ReviewError):
    """A decision is malformed: an unknown action, a correction without a label, the same
    sample twice, no decisions at all. Nothing was written."""

    status = 422


class UnknownLabelError(ReviewError):
    """A label outside the review's label set, where new classes are not allowed. Nothing
    was written."""

    status = 422

    def __init__(self, labels: list[str], allowed: list[str]):
        self.labels = sorted(labels)
        self.allowed = list(allowed)
        super().__init__(
            f"label(s) {', '.join(map(repr, self.labels))} not in the label set "
            f"({', '.join(self.allowed) or 'empty'}); this review does not allow new classes"
        )


class NotInBatchError(ReviewError):
    """Decisions for samples that are not awaiting review on the review branch (unknown ids,
    or samples that were not pending in the snapshot the page showed). Nothing was written."""

    status = 422

    def __init__(self, where: str, ids: list[str]):
        self.ids = sorted(ids)
        super().__init__(f"{where}: not awaiting review there: {_shown(self.ids)}")


class StaleReviewError(ReviewError):
    """The page was rendered from older snapshots, and the samples it decides on changed
    since: newer labels would be overwritten. Nothing was written; reload the page."""

    status = 409

    def __init__(self, where: str, ids: list[str], reason: str | None = None):
        self.ids = sorted(ids)
        what = reason or f"changed since the page was loaded, for sample(s) {_shown(self.ids)}"
        super().__init__(f"{where} {what}; reload the page to see the newer labels (nothing was written)")


class ReviewConflictError(ReviewError):
    """Reviewers disagree on samples, or a reviewer's branch conflicts with main. ``samples``
    maps each sample id to what each side holds; ``merged`` lists the merges that were done
    before the conflict was found (none when reviewers disagree)."""

    status = 409

    def __init__(self, dataset: str, samples: dict[str, dict[str, Any]], merged: list[dict[str, Any]] | None = None):
        self.dataset = dataset
        self.samples = dict(sorted(samples.items()))
        self.merged = list(merged or [])
        ids = list(self.samples)
        done = f"; merged before the conflict: {', '.join(m['branch'] for m in self.merged)}" if self.merged else "; nothing was merged"
        super().__init__(f"{dataset}: review conflicts on {len(ids)} sample(s): {_shown(ids)}{done}")

    @property
    def ids(self) -> list[str]:
        return list(self.samples)
