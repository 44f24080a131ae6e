"""Reading what a review needs from a dataset's Iceberg table, one snapshot at a time.

A review page shows a few samples of a possibly large dataset, so nothing here reads whole
tables: scans select the columns they need and filter on ``status`` or ``sample_id``, which
Iceberg's file statistics use to skip files. Snapshots never change, so what is derived
from one (the label set) is cached by snapshot id. Callers check the acting user's role
through ``Dataset`` first; these functions only read.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import AlwaysTrue, And, EqualTo, In

from train_platform.datasets import schema as sample_schema
from train_platform.datasets.catalog import get_catalog, identifier
from train_platform.datasets.exceptions import RefNotFoundError
from train_platform.review.exceptions import InvalidDecisionError

if TYPE_CHECKING:
    from pyiceberg.table import Table

    from train_platform.datasets.dataset import Dataset

# Past this many ids an In filter costs more than it saves (as in datasets.changes).
_IN_LIMIT = 5000
_labels_cache: OrderedDict[tuple[str, str, int], tuple[str, ...]] = OrderedDict()
_labels_lock = threading.Lock()


def load_table(ds: Dataset) -> Table:
    """The dataset's table, freshly loaded from the catalog."""
    return get_catalog(ds.settings).load_table(identifier(ds.name))


def branch_head(refs: dict[str, dict[str, Any]], dataset: str, branch: str) -> int:
    """The head snapshot of ``branch``, from ``Dataset.refs()``; a missing ref or a tag is
    an error naming the branches there are."""
    ref = refs.get(branch)
    if ref is None or ref["type"] != "branch":
        known = ", ".join(name for name, r in refs.items() if r["type"] == "branch") or "none"
        what = "is a tag, not a branch" if ref is not None else "does not exist"
        raise RefNotFoundError(f"{dataset}: review branch {branch!r} {what} (branches: {known})")
    return int(ref["snapshot_id"])


def _id_filter(ids: list[str]):
    return In("sample_id", ids) if len(ids) <= _IN_LIMIT else AlwaysTrue()


def pending(table: Table, snapshot_id: int) -> pa.Table:
    """``sample_id``, ``batch_id``, ``label`` and ``confidence`` of every sample awaiting
    review (status ``pending``) in the snapshot, sorted by sample id."""
    rows = table.scan(snapshot_id=snapshot_id, row_filter=EqualTo("status", "pending"),
                      selected_fields=("sample_id", "batch_id", "label", "confidence")).to_arrow()
    return rows.sort_by("sample_id")


def annotations_of(table: Table, snapshot_id: int, ids: list[str]) -> dict[str, dict[str, Any]]:
    """``sample_id -> {status, label, label_source, annotator}`` for those of ``ids`` the
    snapshot holds."""
    if not ids:
        return {}
    rows = table.scan(snapshot_id=snapshot_id, row_filter=_id_filter(ids),
                      selected_fields=("sample_id", "status", "label", "label_source", "annotator")).to_arrow()
    wanted = set(ids)
    return {r["sample_id"]: r for r in rows.to_pylist() if r["sample_id"] in wanted}


def rows_of(table: Table, snapshot_id: int, ids: list[str]) -> pa.Table:
    """Full rows (sample schema) of those of ``ids`` the snapshot holds, in ``ids`` order."""
    if not ids:
        return sample_schema.ARROW_SCHEMA.empty_table()
    rows = sample_schema.conform(table.scan(snapshot_id=snapshot_id, row_filter=_id_filter(ids)).to_arrow())
    held = [i for i in ids if i in set(rows.column("sample_id").to_pylist())]
    return sample_schema.take_ids(rows, held)


def confirmed_labels(table: Table, snapshot_id: int, dataset: str) -> tuple[str, ...]:
    """The distinct labels of confirmed samples in the snapshot: the dataset's classes."""
    key = (str(table.metadata.location), dataset, snapshot_id)
    with _labels_lock:
        if key in _labels_cache:
            _labels_cache.move_to_end(key)
            return _labels_cache[key]
    rows = table.scan(snapshot_id=snapshot_id, row_filter=EqualTo("status", "confirmed"),
                      selected_fields=("label",)).to_arrow()
    labels = tuple(sorted(v for v in pc.unique(rows.column("label")).to_pylist() if v is not None))
    with _labels_lock:
        _labels_cache[key] = labels
        while len(_labels_cache) > 64:
            _labels_cache.popitem(last=False)
    return labels


def check_label_text(label: Any) -> str:
    """``label`` as a class name a reviewer may type: non-empty, at most 255 characters,
    no control characters, no surrounding spaces."""
    if not isinstance(label, str) or not label.strip():
        raise InvalidDecisionError("a label must be a non-empty text")
    text = label.strip()
    if len(text) > 255 or any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise InvalidDecisionError(f"label {text[:40]!r}: at most 255 characters, no control characters")
    return text


__all__ = ["annotations_of", "branch_head", "check_label_text", "confirmed_labels", "load_table", "pending", "rows_of"]
