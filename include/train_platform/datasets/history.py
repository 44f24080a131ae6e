"""Walking a dataset's snapshot history: ancestors, merge bases and the commit log.

Every snapshot this package commits carries ``tp.*`` summary properties (who, which
operation, why, and for merges ``tp.merged-head``, the branch head merged). A merge
snapshot's merged head plays the part of a git merge commit's second parent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot, ancestors_of


@dataclass(frozen=True)
class SnapshotInfo:
    """One entry of ``log``: a snapshot and who made it, when, how and why."""

    snapshot_id: int
    parent_id: int | None
    timestamp: datetime
    operation: str
    user: str | None
    message: str | None
    summary: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "timestamp": self.timestamp.isoformat()}


def snapshot_props(snapshot: Snapshot) -> dict[str, str]:
    """The snapshot's summary properties other than Iceberg's operation."""
    return dict(snapshot.summary.additional_properties) if snapshot.summary else {}


def ancestors(table: Table, snapshot_id: int) -> list[Snapshot]:
    """The snapshot and its parents, newest first; empty when the id is unknown."""
    start = table.metadata.snapshot_by_id(snapshot_id)
    return list(ancestors_of(start, table.metadata)) if start else []


def chain_to(table: Table, head: int, stop: int) -> list[int]:
    """Ids from ``head`` back through its parents to ``stop`` (inclusive), or to a merge
    snapshot whose merged head is ``stop``."""
    chain = []
    for snapshot in ancestors(table, head):
        chain.append(snapshot.snapshot_id)
        if snapshot.snapshot_id == stop or snapshot_props(snapshot).get("tp.merged-head") == str(stop):
            break
    chain.append(stop)
    return chain


def merge_base(table: Table, main_id: int, branch_id: int) -> int | None:
    """Newest snapshot both histories share. A merge snapshot on main counts the branch
    head it merged as shared, like the second parent of a git merge commit."""
    on_branch = {s.snapshot_id for s in ancestors(table, branch_id)}
    for snapshot in ancestors(table, main_id):
        if snapshot.snapshot_id in on_branch:
            return snapshot.snapshot_id
        merged = snapshot_props(snapshot).get("tp.merged-head")
        if merged and int(merged) in on_branch:
            return int(merged)
    return None


def commit_log(table: Table, head: Snapshot, limit: int | None = None) -> list[SnapshotInfo]:
    """Commits reachable from ``head``, newest first. The snapshots of one commit (an
    overwrite is a delete snapshot plus an append snapshot, sharing ``tp.commit``) are one
    entry whose parent is the commit's real parent."""
    out: list[SnapshotInfo] = []
    for snapshot in ancestors_of(head, table.metadata):
        props = snapshot_props(snapshot)
        if out and props.get("tp.commit") and out[-1].summary.get("tp.commit") == props["tp.commit"]:
            # An earlier step of a commit already listed: show the commit's real parent.
            out[-1] = replace(out[-1], parent_id=snapshot.parent_snapshot_id)
            continue
        out.append(
            SnapshotInfo(
                snapshot_id=snapshot.snapshot_id,
                parent_id=snapshot.parent_snapshot_id,
                timestamp=datetime.fromtimestamp(snapshot.timestamp_ms / 1000, tz=timezone.utc),
                operation=props.get("tp.operation", snapshot.summary.operation.value if snapshot.summary else "unknown"),
                user=props.get("tp.user"),
                message=props.get("tp.message"),
                summary={k: str(v) for k, v in props.items()},
            )
        )
        if limit and len(out) >= limit:
            break
    return out


__all__ = ["SnapshotInfo", "ancestors", "chain_to", "commit_log", "merge_base", "snapshot_props"]
