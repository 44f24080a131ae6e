"""What happened to samples between two snapshots: the basis of diff and merge.

A sample id occurs once per snapshot, so only the data files that differ between two
snapshots need reading: a sample in a file both share is unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
from pyiceberg.expressions import AlwaysTrue, In
from pyiceberg.table import Table

from train_platform.datasets import schema as sample_schema


@dataclass(frozen=True)
class DiffResult:
    """Sample ids added, changed and removed going from ``ref1`` to ``ref2``."""

    ref1: str
    ref2: str
    snapshot1: int
    snapshot2: int
    added: list[str]
    changed: list[str]
    removed: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Changes:
    """What happened to samples between two snapshots, with the rows as they ended up."""

    added: set[str]
    changed: set[str]
    removed: set[str]
    rows: pa.Table  # rows of added and changed samples at the later snapshot

    @property
    def touched(self) -> set[str]:
        return self.added | self.changed | self.removed


def changes_between(table: Table, from_id: int, to_id: int) -> Changes:
    """Samples added, changed and removed from snapshot ``from_id`` to ``to_id``, reading
    only the data files that differ between the two."""
    from pyiceberg.io.pyarrow import ArrowScan

    def files(snapshot_id: int) -> dict[tuple[str, frozenset[str]], Any]:
        tasks = table.scan(snapshot_id=snapshot_id).plan_files()
        return {(t.file.file_path, frozenset(d.file_path for d in t.delete_files)): t for t in tasks}

    before, after = files(from_id), files(to_id)
    scan = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue())
    empty = sample_schema.ARROW_SCHEMA.empty_table()

    def read(tasks: list[Any]) -> pa.Table:
        return sample_schema.conform(scan.to_table(tasks)) if tasks else empty

    old = read([t for k, t in before.items() if k not in after])
    new = read([t for k, t in after.items() if k not in before])
    old_ids, new_ids = set(sample_schema.ids_of(old)), set(sample_schema.ids_of(new))
    common = sorted(old_ids & new_ids)
    same = sample_schema.rows_equal(sample_schema.take_ids(old, common), sample_schema.take_ids(new, common))
    changed = {sample_id for sample_id, eq in zip(common, same) if not eq}
    added = new_ids - old_ids
    return Changes(
        added=added,
        changed=changed,
        removed=old_ids - new_ids,
        rows=sample_schema.take_ids(new, sorted(added | changed)),
    )


def conflicting_ids(both: set[str], theirs: Changes, ours: Changes) -> list[str]:
    """Ids both sides touched whose end states differ (a removal differs from any row).
    Two annotators agreeing on a sample is no conflict: who annotated is not compared."""
    conflicts = []
    with_rows = []
    for sample_id in sorted(both):
        removed_t, removed_o = sample_id in theirs.removed, sample_id in ours.removed
        if removed_t and removed_o:
            continue
        if removed_t or removed_o:
            conflicts.append(sample_id)
        else:
            with_rows.append(sample_id)
    if with_rows:
        same = sample_schema.rows_equal(
            sample_schema.take_ids(theirs.rows, with_rows), sample_schema.take_ids(ours.rows, with_rows), ignore=("annotator",)
        )
        conflicts.extend(sample_id for sample_id, eq in zip(with_rows, same) if not eq)
    return sorted(conflicts)


def existing_ids(table: Table, snapshot_id: int, ids: list[str]) -> set[str]:
    """Which of ``ids`` the snapshot holds, reading the id column only. Up to a few
    thousand ids an ``In`` filter lets file statistics skip most files (many small commits
    make many small files); beyond that the filter itself costs more."""
    if not ids:
        return set()
    import pyarrow.compute as pc

    row_filter = In("sample_id", ids) if len(ids) <= 5000 else AlwaysTrue()
    held = table.scan(snapshot_id=snapshot_id, row_filter=row_filter, selected_fields=("sample_id",)).to_arrow().column("sample_id")
    wanted = pa.array(ids, pa.string())
    return set(wanted.filter(pc.is_in(wanted, value_set=held.combine_chunks().cast(pa.string()))).to_pylist())


__all__ = ["Changes", "DiffResult", "changes_between", "conflicting_ids", "existing_ids"]
