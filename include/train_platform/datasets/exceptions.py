"""Errors of ``train_platform.datasets``. Library errors (pyiceberg, SQLAlchemy, redis) are
translated into these at the boundary, with ``raise ... from``."""

from __future__ import annotations

from train_platform.exceptions import TrainPlatformError


class DatasetError(TrainPlatformError):
    """Base of every dataset error."""


class DatasetNotFoundError(DatasetError):
    """No dataset of that name in the catalog."""


class DatasetExistsError(DatasetError):
    """A dataset of that name already exists."""


class RefNotFoundError(DatasetError):
    """No branch, tag or snapshot of that name or id in the dataset."""


class RefExistsError(DatasetError):
    """A branch or tag of that name already exists."""


class InvalidSamplesError(DatasetError, ValueError):
    """Rows to write, or a file to import, do not fit the sample schema. Nothing was written."""

    exit_code = 2


class UnknownSamplesError(DatasetError):
    """Labels were given for sample ids that the branch does not hold. Nothing was written."""

    exit_code = 2

    def __init__(self, ref: str, ids: list[str]):
        self.ids = list(ids)
        shown = ", ".join(self.ids[:20]) + (f" and {len(self.ids) - 20} more" if len(self.ids) > 20 else "")
        super().__init__(f"{ref} has no samples with id {shown}")


class ProtectedSamplesError(DatasetError):
    """An annotation would change samples whose current annotation the caller asked to keep
    (a person's label that a model's pre-label must not replace, say): they changed after
    the caller read them. Nothing was written; ``ids`` lists them."""

    exit_code = 3

    def __init__(self, ref: str, ids: list[str]):
        self.ids = sorted(ids)
        shown = ", ".join(self.ids[:20]) + (f" and {len(self.ids) - 20} more" if len(self.ids) > 20 else "")
        super().__init__(f"{ref}: sample(s) {shown} now carry an annotation this change may not replace; nothing was written")


class MergeConflict(DatasetError):
    """Both main and the branch changed the same samples differently since they diverged.
    Main is left unchanged; ``ids`` lists the conflicting sample ids."""

    exit_code = 3

    def __init__(self, dataset: str, branch: str, ids: list[str]):
        self.dataset = dataset
        self.branch = branch
        self.ids = sorted(ids)
        super().__init__(
            f"merging {branch!r} into main of {dataset!r} conflicts on {len(self.ids)} sample(s): " + ", ".join(self.ids)
        )


class ConcurrentAccessError(DatasetError):
    """Another process holds the dataset's version lock (merge, revert, expire)."""

    exit_code = 4

    def __init__(self, key: str, holder: str):
        self.key = key
        self.holder = holder
        super().__init__(f"{key} is locked by {holder}")


class PermissionDeniedError(DatasetError):
    """The acting user lacks the role an operation needs. Nothing was written."""

    exit_code = 5


class CommitRetriesExhaustedError(DatasetError):
    """Concurrent writers kept winning the race for a branch; the commit was not made."""
