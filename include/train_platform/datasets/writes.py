"""What each sample write stages on its Iceberg transaction.

Every function here returns a ``WriteFn`` for ``commits.commit_with_retries``: it is called
again on each retry with the newest table, so checks that depend on the branch's content
(ids already present, ids missing) run against the state the commit will land on. Role
checks and the audit log are the caller's (``Dataset``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa
from pyiceberg.expressions import In
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table

from train_platform.datasets import schema as sample_schema
from train_platform.datasets.changes import existing_ids
from train_platform.datasets.commits import WriteFn
from train_platform.datasets.exceptions import DatasetError, InvalidSamplesError, ProtectedSamplesError, UnknownSamplesError

log = logging.getLogger(__name__)


def write_data_files(table: Table, rows: pa.Table) -> list[DataFile]:
    """Write ``rows`` as data files of ``table`` without committing them, so that lost
    commit races reuse them. pyiceberg's own ``Transaction.append`` writes them this way."""
    from pyiceberg.io.pyarrow import _dataframe_to_data_files

    return list(_dataframe_to_data_files(table.metadata, rows, table.io)) if rows.num_rows else []


def delete_data_files(table: Table, data_files: Sequence[DataFile]) -> None:
    """Delete data files known never to have been committed; failures are logged."""
    for data_file in data_files:
        try:
            table.io.delete(data_file.file_path)
        except OSError:
            log.warning("could not delete unused data file %s", data_file.file_path, exc_info=True)


def append_files(data_files: Sequence[DataFile], ids: list[str], branch: str, *, where: str) -> WriteFn:
    """Add already written data files holding samples ``ids`` to ``branch``; refused
    (``InvalidSamplesError``) when the branch already holds one of the ids. ``where``
    (``NAME@BRANCH``) names the branch in errors."""

    def write(table: Table, txn: Any, props: dict[str, str]) -> None:
        head = table.snapshot_by_name(branch)
        existing = existing_ids(table, head.snapshot_id, ids) if head else set()
        if existing:
            shown = ", ".join(sorted(existing)[:10])
            raise InvalidSamplesError(f"{where} already has sample(s) {shown}; use upsert to replace them")
        with txn.update_snapshot(snapshot_properties=props, branch=branch).merge_append() as append:
            for data_file in data_files:
                append.append_data_file(data_file)

    return write


def replace_rows(rows: pa.Table, branch: str) -> WriteFn:
    """Insert ``rows`` on ``branch``, replacing the samples with the same ids."""
    ids = sample_schema.ids_of(rows)

    def write(table: Table, txn: Any, props: dict[str, str]) -> None:
        txn.overwrite(rows, overwrite_filter=In("sample_id", ids), snapshot_properties=props, branch=branch)

    return write


def delete_rows(ids: list[str], branch: str, *, where: str) -> WriteFn:
    """Remove samples ``ids`` from ``branch``; ``UnknownSamplesError`` if one is not there."""

    def write(table: Table, txn: Any, props: dict[str, str]) -> None:
        missing = set(ids) - existing_ids(table, table.snapshot_by_name(branch).snapshot_id, ids)
        if missing:
            raise UnknownSamplesError(where, sorted(missing))
        txn.delete(In("sample_id", ids), snapshot_properties=props, branch=branch)

    return write


def annotation_updates(updates: Sequence[Mapping[str, Any]], annotator: str) -> dict[str, dict[str, Any]]:
    """The new annotation columns by sample id. Each update names ``sample_id`` and any of
    the label columns; ``annotator`` is the default annotator. A later update of the same id
    replaces an earlier one; no updates, or a field that is not a label column, is an
    ``InvalidSamplesError``."""
    by_id: dict[str, dict[str, Any]] = {}
    for index, update in enumerate(updates):
        sample_id = update.get("sample_id")
        unknown = set(update) - {"sample_id", *sample_schema.LABEL_COLUMNS}
        if not sample_id or unknown:
            problem = "no sample_id" if not sample_id else f"unknown field(s) {', '.join(sorted(unknown))}"
            raise InvalidSamplesError(f"annotation #{index}: {problem}")
        by_id[str(sample_id)] = {"annotator": annotator, **{k: v for k, v in update.items() if k != "sample_id"}}
    if not by_id:
        raise InvalidSamplesError("no annotations given")
    return by_id


def set_annotations(
    by_id: Mapping[str, Mapping[str, Any]],
    branch: str,
    *,
    where: str,
    refuse_if: Callable[[Mapping[str, Any]], bool] | None = None,
) -> WriteFn:
    """Rewrite the samples in ``by_id`` on ``branch`` with their new annotation columns
    (copy-on-write); ``UnknownSamplesError`` if one is not on the branch. With
    ``refuse_if``, a predicate on a sample's current row, ``ProtectedSamplesError`` if it
    holds for any of them: checked on the state the commit lands on, so a concurrent
    writer's annotation is never replaced unseen."""
    ids = sorted(by_id)

    def write(table: Table, txn: Any, props: dict[str, str]) -> None:
        head = table.snapshot_by_name(branch)
        current = table.scan(snapshot_id=head.snapshot_id, row_filter=In("sample_id", ids)).to_arrow()
        missing = set(ids) - set(current.column("sample_id").to_pylist())
        if missing:
            raise UnknownSamplesError(where, sorted(missing))
        records = sample_schema.conform(current).to_pylist()
        if refuse_if is not None:
            protected = [r["sample_id"] for r in records if refuse_if(r)]
            if protected:
                raise ProtectedSamplesError(where, protected)
        for record in records:
            record.update(by_id[record["sample_id"]])
        new_rows = sample_schema.conform(pa.Table.from_pylist(records, schema=sample_schema.ARROW_SCHEMA), where="annotations")
        txn.overwrite(new_rows, overwrite_filter=In("sample_id", ids), snapshot_properties=props, branch=branch)

    return write


def restore_files(snapshot_id: int, branch: str, *, dataset: str) -> WriteFn:
    """Make ``branch`` reference exactly the data files of snapshot ``snapshot_id``: files
    are neither copied nor rewritten. Tables with delete files are refused."""

    def write(table: Table, txn: Any, props: dict[str, str]) -> None:
        def files(of_snapshot: int) -> dict[str, Any]:
            tasks = list(table.scan(snapshot_id=of_snapshot).plan_files())
            if any(t.delete_files for t in tasks):
                raise DatasetError(f"{dataset}: snapshot {of_snapshot} has delete files; revert supports copy-on-write tables only")
            return {t.file.file_path: t.file for t in tasks}

        wanted = files(snapshot_id)
        current = files(table.metadata.refs[branch].snapshot_id)
        with txn.update_snapshot(snapshot_properties=props, branch=branch).overwrite() as overwrite:
            for path, data_file in current.items():
                if path not in wanted:
                    overwrite.delete_data_file(data_file)
            for path, data_file in wanted.items():
                if path not in current:
                    overwrite.append_data_file(data_file)

    return write


__all__ = [
    "annotation_updates",
    "append_files",
    "delete_data_files",
    "delete_rows",
    "replace_rows",
    "restore_files",
    "set_annotations",
    "write_data_files",
]
