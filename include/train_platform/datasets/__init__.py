"""Versioned datasets of time-series samples on Apache Iceberg.

Importing this package is cheap: pyiceberg, pyarrow and SQLAlchemy load on first use of a
name below (``from train_platform.datasets import open_dataset`` loads them then). The
Airflow-free reader for ``tp://NAME@REF`` refs is ``train_platform.datasets.reader``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from train_platform.datasets.exceptions import (
    CommitRetriesExhaustedError,
    ConcurrentAccessError,
    DatasetError,
    DatasetExistsError,
    DatasetNotFoundError,
    InvalidSamplesError,
    MergeConflict,
    PermissionDeniedError,
    RefExistsError,
    RefNotFoundError,
    UnknownSamplesError,
)

_LAZY = {
    "Dataset": "dataset",
    "create_dataset": "dataset",
    "open_dataset": "dataset",
    "list_datasets": "dataset",
    "CommitPolicy": "commits",
    "DiffResult": "changes",
    "ExpireResult": "maintenance",
    "MergeResult": "merging",
    "SnapshotInfo": "history",
    "MAIN": "refs",
    "parse_ref": "refs",
    "user_branch": "refs",
    "build_samples": "schema",
    "load_source": "importers",
    "read_samples": "reader",
    "SampleSet": "reader",
    "LockConfig": "locks",
    "version_lock": "locks",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'train_platform.datasets' has no attribute {name!r}")
    value = getattr(import_module(f"train_platform.datasets.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "CommitRetriesExhaustedError", "ConcurrentAccessError", "DatasetError", "DatasetExistsError",
    "DatasetNotFoundError", "InvalidSamplesError", "MergeConflict", "PermissionDeniedError",
    "RefExistsError", "RefNotFoundError", "UnknownSamplesError", *_LAZY,
]
