"""Expiry: which snapshots a retention policy drops, and deleting data files no snapshot
references any more.

A data file no snapshot references is either garbage (its snapshot expired, its commit lost
a race or its writer was killed) or a file a writer has written and not committed yet. The
two look the same, so only files older than a grace period are deleted, and the grace
period may not be shorter than ``MIN_ORPHAN_GRACE``.

Old metadata and manifest files are not collected here.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from pyiceberg.table import Table
from pyiceberg.table.refs import SnapshotRefType

from train_platform.datasets.exceptions import DatasetError
from train_platform.datasets.history import ancestors, chain_to, merge_base, snapshot_props
from train_platform.datasets.refs import MAIN

log = logging.getLogger(__name__)

class InvalidExpireError(DatasetError):
    """An expire option is out of range (exit 2). Nothing was expired or deleted."""

    exit_code = 2


# The shortest grace period expire accepts for deleting unreferenced data files. A writer's
# data files are unreferenced from the moment they are written until its commit wins: an
# append writes them once and then retries its commit (``commits.CommitPolicy``: 200
# attempts, jittered sleeps of at most 393 s in all, plus a table re-read per attempt), so a
# commit still in flight 30 minutes after its files were written has given up. A single
# write whose data files take longer than 30 minutes minus that window to write is not
# covered; the default grace (60 minutes) leaves more room.
MIN_ORPHAN_GRACE = timedelta(minutes=30)


def check_orphan_grace(grace: timedelta | None, *, option: str = "orphan_grace") -> timedelta | None:
    """``grace`` if it is ``None`` (keep every file) or at least ``MIN_ORPHAN_GRACE``, else
    ``InvalidExpireError`` naming ``option`` and the minimum."""
    if grace is not None and grace < MIN_ORPHAN_GRACE:
        minimum = MIN_ORPHAN_GRACE.total_seconds() / 60
        raise InvalidExpireError(
            f"{option} {grace.total_seconds() / 60:g} minutes is shorter than the minimum of {minimum:g} minutes: "
            f"a shorter grace period could delete the data files of commits still in flight"
        )
    return grace


@dataclass(frozen=True)
class ExpireResult:
    snapshots: list[int]  # expired snapshot ids
    deleted_files: list[str]  # data files no remaining snapshot used

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def snapshots_to_expire(table: Table, *, older_than: timedelta, retain_last: int, now: datetime | None = None) -> list[int]:
    """Ids of the snapshots the retention policy drops, ascending.

    Kept: snapshots younger than ``older_than``; the newest ``retain_last`` of every
    branch's history; every branch head and tagged snapshot; for every branch, both
    histories back to its merge base with main (a later merge walks them); merged heads
    that kept merge snapshots point at."""
    keep: set[int] = set()
    cutoff_ms = ((now or datetime.now(timezone.utc)) - older_than).timestamp() * 1000
    main_head = table.metadata.refs[MAIN].snapshot_id
    for name, ref in table.metadata.refs.items():
        keep.add(ref.snapshot_id)
        if ref.snapshot_ref_type == SnapshotRefType.BRANCH:
            history = ancestors(table, ref.snapshot_id)
            keep.update(s.snapshot_id for s in history[:retain_last])
            if name != MAIN:
                # A later merge walks both histories back to their merge base: keep both
                # chains down to it.
                base = merge_base(table, main_head, ref.snapshot_id)
                if base is not None:
                    keep.update(chain_to(table, ref.snapshot_id, base))
                    keep.update(chain_to(table, main_head, base))
    for snapshot in table.metadata.snapshots:
        if snapshot.timestamp_ms >= cutoff_ms:
            keep.add(snapshot.snapshot_id)
        merged = snapshot_props(snapshot).get("tp.merged-head")
        if merged and snapshot.snapshot_id in keep:
            keep.add(int(merged))
    return sorted(s.snapshot_id for s in table.metadata.snapshots if s.snapshot_id not in keep)


def delete_unreferenced_files(table: Table, grace: timedelta, *, dataset: str, now: datetime | None = None) -> list[str]:
    """Delete the files under the table's ``data/`` folder that no snapshot references and
    that were last modified more than ``grace`` before ``now`` (default: the current time);
    returns their paths. The grace period spares files a writer has written but not yet
    committed; this function takes any grace, ``Dataset.expire`` only one of at least
    ``MIN_ORPHAN_GRACE``. A file IO that cannot list files (not pyarrow's) deletes nothing."""
    from pyarrow import fs as pafs
    from pyiceberg.io.pyarrow import PyArrowFileIO

    io = table.io
    if not isinstance(io, PyArrowFileIO):
        log.warning("%s: file IO %s cannot list files; unreferenced files are kept", dataset, type(io).__name__)
        return []
    referenced: set[str] = set()
    seen_manifests: set[str] = set()
    for snapshot in table.metadata.snapshots:
        for manifest in snapshot.manifests(io):
            if manifest.manifest_path in seen_manifests:
                continue
            seen_manifests.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(io, discard_deleted=True):
                referenced.add(io.parse_location(entry.data_file.file_path)[2])
    scheme, netloc, data_path = io.parse_location(f"{table.location()}/data")
    filesystem = io.fs_by_scheme(scheme, netloc)
    cutoff = (now or datetime.now(timezone.utc)) - grace
    deleted = []
    for info in filesystem.get_file_info(pafs.FileSelector(data_path, recursive=True, allow_not_found=True)):
        if info.type != pafs.FileType.File or info.path in referenced:
            continue
        modified = info.mtime if info.mtime is None or info.mtime.tzinfo else info.mtime.replace(tzinfo=timezone.utc)
        if modified is not None and modified > cutoff:
            continue
        filesystem.delete_file(info.path)
        deleted.append(info.path)
    log.info("%s: deleted %d unreferenced data file(s)", dataset, len(deleted))
    return deleted


__all__ = ["MIN_ORPHAN_GRACE", "ExpireResult", "InvalidExpireError", "check_orphan_grace", "delete_unreferenced_files", "snapshots_to_expire"]
