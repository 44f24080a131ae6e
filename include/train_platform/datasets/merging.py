"""Merging a branch into main: up-to-date, fast-forward or a three-way merge of samples.

The merge base is the newest snapshot both histories share (``history.merge_base``). When
main has not moved since the branch left it, main simply moves to the branch head.
Otherwise the branch's added, changed and removed samples since the base are re-applied on
the newest main in one snapshot, unless main changed some of the same samples differently
(``MergeConflict``). The caller holds the dataset's version lock and checks roles.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import In
from pyiceberg.table import Table
from pyiceberg.table.refs import SnapshotRefType

from train_platform.datasets import schema as sample_schema
from train_platform.datasets.changes import changes_between, conflicting_ids
from train_platform.datasets.commits import WriteFn
from train_platform.datasets.exceptions import DatasetError, MergeConflict, RefNotFoundError
from train_platform.datasets.history import merge_base
from train_platform.datasets.refs import MAIN


@dataclass(frozen=True)
class MergeResult:
    """What ``merge`` did, with the numbers of samples it brought to main."""

    branch: str
    # "fast-forward", "merge" (branch changes re-applied on main) or "up-to-date".
    kind: str
    snapshot_id: int
    added: int = 0
    changed: int = 0
    removed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _base_or_fail(table: Table, main_head: int, branch_head: int, dataset: str, branch: str) -> int:
    base = merge_base(table, main_head, branch_head)
    if base is None:
        raise DatasetError(f"{dataset}: {branch!r} and main share no snapshot (expired?); cannot merge")
    return base


def merge_without_commit(table: Table, branch: str, *, dataset: str) -> MergeResult | None:
    """Finish the merge of ``branch`` when it needs no new snapshot: ``up-to-date`` when
    main already holds the branch head, ``fast-forward`` (main moved to the branch head)
    when main has not moved since the branch left it. ``None`` when a three-way merge
    (``reapply_on_main``) is needed, also when main moved during the fast-forward."""
    ref = table.metadata.refs.get(branch)
    if ref is None or ref.snapshot_ref_type != SnapshotRefType.BRANCH:
        raise RefNotFoundError(f"{dataset}: no branch {branch!r}")
    branch_head = ref.snapshot_id
    main_head = table.metadata.refs[MAIN].snapshot_id
    base = _base_or_fail(table, main_head, branch_head, dataset, branch)
    if base == branch_head:
        return MergeResult(branch, "up-to-date", main_head)
    if base != main_head:
        return None
    try:
        table.manage_snapshots().create_branch(branch_head, MAIN).commit()
    except CommitFailedException:
        return None  # main moved (a direct write): a real merge is needed
    changes = changes_between(table, main_head, branch_head)
    return MergeResult(branch, "fast-forward", branch_head, len(changes.added), len(changes.changed), len(changes.removed))


def reapply_on_main(branch: str, branch_head: int, counts: dict[str, int], *, dataset: str) -> WriteFn:
    """Stage, on the newest main, the samples ``branch`` added, changed and removed between
    the merge base and ``branch_head``. Raises ``MergeConflict`` listing the ids both sides
    changed to different end states; for ids both changed the same way main's row is kept.
    Fills ``counts`` with the numbers of samples ``added``, ``changed`` and ``removed``."""

    def write(table: Table, txn: Any, props: dict[str, str]) -> None:
        main_now = table.metadata.refs[MAIN].snapshot_id
        base_now = _base_or_fail(table, main_now, branch_head, dataset, branch)
        theirs = changes_between(table, base_now, branch_head)
        ours = changes_between(table, base_now, main_now)
        both = theirs.touched & ours.touched
        conflicts = conflicting_ids(both, theirs, ours)
        if conflicts:
            raise MergeConflict(dataset, branch, conflicts)
        apply_rows = sorted((theirs.added | theirs.changed) - both)
        remove = sorted((theirs.changed | theirs.removed) - both)
        rows = sample_schema.take_ids(theirs.rows, apply_rows)
        counts.update(added=len(theirs.added - both), changed=len(theirs.changed - both), removed=len(theirs.removed - both))
        if remove:
            txn.overwrite(rows, overwrite_filter=In("sample_id", remove), snapshot_properties=props, branch=MAIN)
        else:
            txn.append(rows, snapshot_properties=props, branch=MAIN)

    return write


__all__ = ["MergeResult", "merge_without_commit", "reapply_on_main"]
