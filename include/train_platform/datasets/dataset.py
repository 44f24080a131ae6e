"""The ``Dataset`` class: git-like operations on one Iceberg table of samples.

Every dataset is one Iceberg table (schema in ``schema.py``). What git calls commits are
Iceberg snapshots, each carrying who made it, why and what operation in its summary
properties (``tp.user``, ``tp.message``, ``tp.operation``); branches and tags are Iceberg
refs, so creating one copies no data. Writes go to the acting user's own branch
(``user/<name>``) unless a branch is named, and reach ``main`` through ``merge``.

This module checks the acting user's role, takes the dataset's version lock for merge,
revert and expire (so they never interleave), and writes the audit log. Each commit checks
the role again and writes its audit row inside the catalog transaction that makes it
(``_audited``): a role revoked meanwhile refuses the commit, and no commit exists without
its audit row or the other way round. The work itself
is elsewhere: ref names and resolution in ``refs.py``; optimistic commits retried on lost
races in ``commits.py``; what each write stages in ``writes.py``; history walks in
``history.py``; sample-level changes in ``changes.py``; merges in ``merging.py``; the
retention policy and file deletion of expire in ``maintenance.py``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from typing import Any

import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError, TableAlreadyExistsError
from pyiceberg.table import Table
from pyiceberg.table.refs import SnapshotRefType
from pyiceberg.table.snapshots import Snapshot

from train_platform.datasets import schema as sample_schema
from train_platform.datasets.access import AccessStore, RoleRevokedError
from train_platform.datasets.catalog import NAMESPACE, check_name, get_catalog, identifier, inside_commit
from train_platform.datasets.changes import DiffResult, changes_between
from train_platform.datasets.commits import TABLE_PROPERTIES, CommitPolicy, WriteFn, commit_properties, commit_with_retries
from train_platform.datasets.exceptions import CommitRetriesExhaustedError, DatasetError, DatasetExistsError, DatasetNotFoundError, MergeConflict, RefExistsError
from train_platform.datasets.history import SnapshotInfo, commit_log
from train_platform.datasets.importers import check_series_uris, load_rows
from train_platform.datasets.locks import LockConfig, holder_description, version_lock
from train_platform.datasets.maintenance import ExpireResult, check_orphan_grace, delete_unreferenced_files, snapshots_to_expire
from train_platform.datasets.merging import MergeResult, merge_without_commit, reapply_on_main
from train_platform.datasets.refs import MAIN, check_ref_name, check_writable_branch, ref_heads, resolve_snapshot, user_branch
from train_platform.datasets.writes import (
    annotation_updates,
    append_files,
    delete_data_files,
    delete_rows,
    replace_rows,
    restore_files,
    set_annotations,
    write_data_files,
)
from train_platform.settings import Settings, get_settings

log = logging.getLogger(__name__)


def create_dataset(
    name: str,
    *,
    user: str | None = None,
    source: str | pa.Table | None = None,
    message: str | None = None,
    settings: Settings | None = None,
) -> "Dataset":
    """Create an empty dataset (or one holding ``source``'s samples on main); the creator
    becomes its owner."""
    settings = settings or get_settings()
    user = user or settings.user
    catalog = get_catalog(settings)
    rows = None
    if source is not None:
        # Read and check the source before creating anything: bad input writes nothing.
        rows = load_rows(source)
        check_series_uris(rows, settings.warehouse_uri, where=name)
    access = AccessStore(settings.catalog_uri)
    try:
        table = catalog.create_table(identifier(name), schema=sample_schema.SAMPLE_SCHEMA, properties=TABLE_PROPERTIES)
    except TableAlreadyExistsError as exc:
        if not creation_unfinished(name, user, settings=settings):
            raise DatasetExistsError(f"dataset {name!r} already exists") from exc
        # A creation killed before its first commit: this one finishes it.
        log.warning("dataset %s was left half-created (no commit yet); %s finishes creating it", name, user)
        table = catalog.load_table(identifier(name))
    access.set_role(name, user, "owner", granted_by=user)
    dataset = Dataset(name, user=user, settings=settings, _table=table, _access=access)
    # An empty first snapshot gives main a head, so branches can start from it at once.
    sid = dataset._commit(
        MAIN, "create", message or f"create {name}", lambda tbl, txn, props: txn.append(sample_schema.ARROW_SCHEMA.empty_table(), props, branch=MAIN),
        needs="owner", audit={},
    )
    if rows is not None:
        dataset.append(rows, branch=MAIN, message=message or f"import {source if isinstance(source, str) else 'rows'}", operation="import")
    return dataset


def creation_unfinished(name: str, user: str, *, settings: Settings | None = None) -> bool:
    """Whether ``name`` is a dataset whose creation was cut short (a killed process) before
    its first commit, in a state ``user`` may finish: its table holds no snapshot at all and
    nobody but ``user``, as owner, holds a role on it. ``create_dataset`` then finishes the
    creation instead of refusing the name."""
    settings = settings or get_settings()
    try:
        table = get_catalog(settings).load_table(identifier(name))
    except NoSuchTableError:
        return False
    if table.metadata.snapshots:
        return False
    return set(AccessStore(settings.catalog_uri).roles(name).items()) <= {(user, "owner")}


def open_dataset(name: str, *, user: str | None = None, settings: Settings | None = None) -> "Dataset":
    settings = settings or get_settings()
    return Dataset(name, user=user or settings.user, settings=settings)


def list_datasets(settings: Settings | None = None) -> list[str]:
    settings = settings or get_settings()
    return sorted(ident[-1] for ident in get_catalog(settings).list_tables(NAMESPACE))


class Dataset:
    """One dataset, acted on by one user. Every method checks that user's role first.

    An instance caches the table's metadata and is meant for one thread; processes and
    threads each open their own and meet at the catalog's optimistic commit."""

    def __init__(
        self,
        name: str,
        *,
        user: str,
        settings: Settings | None = None,
        commit_policy: CommitPolicy = CommitPolicy(),
        lock_config: LockConfig = LockConfig(),
        _table: Table | None = None,
        _access: AccessStore | None = None,
    ):
        self.name = check_name(name)
        self.user = user
        self.settings = settings or get_settings()
        self.commit_policy = commit_policy
        self.lock_config = lock_config
        self._catalog = get_catalog(self.settings)
        self._access = _access or AccessStore(self.settings.catalog_uri)
        self._table = _table or self._load_table()
        # Lost races of this object's commits, for benchmarks and logs.
        self.commit_retries = 0

    # ----- plumbing ----------------------------------------------------------------------
    def _load_table(self) -> Table:
        try:
            # A table made before a column of the sample schema existed gets it now.
            return sample_schema.upgrade_table(self._catalog.load_table(identifier(self.name)))
        except NoSuchTableError as exc:
            raise DatasetNotFoundError(f"no dataset named {self.name!r}") from exc

    def _fresh(self) -> Table:
        self._table = self._load_table()
        return self._table

    def _require(self, role: str, operation: str) -> None:
        self._access.require(self.name, self.user, role, operation)

    def _commit(
        self,
        branch: str,
        operation: str,
        message: str | None,
        write: WriteFn,
        extra: Mapping[str, str] | None = None,
        *,
        needs: str = "writer",
        audit: Mapping[str, Any] | Callable[[int], Mapping[str, Any]] | None = None,
    ) -> int:
        """Run ``write(table, transaction, snapshot_properties)`` against the newest state of
        ``branch`` and commit it, retrying lost races. Returns the new head of ``branch``.

        The commit checks that the acting user still holds ``needs`` and writes the audit
        row ``operation`` on ``branch`` (detail ``audit``, or ``audit(snapshot_id)``) in its
        own catalog transaction (``_audited``)."""
        with self._audited(operation, needs, branch, audit) as audited:
            audited.snapshot_id = self._commit_unaudited(branch, operation, message, write, extra)
        return audited.snapshot_id

    def _commit_unaudited(
        self,
        branch: str,
        operation: str,
        message: str | None,
        write: WriteFn,
        extra: Mapping[str, str] | None = None,
    ) -> int:

        def table_for_attempt(attempt: int) -> Table:
            return self._fresh() if attempt else self._table.refresh()

        def lost_race() -> None:
            self.commit_retries += 1

        self._table = commit_with_retries(
            table_for_attempt,
            write,
            lambda: commit_properties(self.user, operation, message, extra),
            policy=self.commit_policy,
            what=f"{self.name}@{branch}: {operation}",
            on_lost_race=lost_race,
        )
        return self._table.metadata.refs[branch].snapshot_id

    @contextmanager
    def _audited(
        self,
        operation: str,
        needs: str,
        ref: str | None,
        detail: Mapping[str, Any] | Callable[[int], Mapping[str, Any]] | None,
        *,
        removes_snapshots: bool = False,
    ) -> Iterator["_Audited"]:
        """Every catalog commit in the block that moves ``ref`` (or, with
        ``removes_snapshots``, that removes snapshots) re-checks that the acting user holds
        ``needs`` and writes the audit row, both in the commit's own database transaction:
        a revoked role refuses the commit (``RoleRevokedError``, audited as denied), and a
        process killed at any point leaves the commit and its row both or neither. Other
        commits in the block (a schema upgrade on open) pass through. A block whose commit
        changed nothing (or that made none) is audited after it, with the snapshot id the
        block sets on the yielded object, unless the block sets its ``fallback`` to False."""
        audited = _Audited()

        def in_commit(conn: Any, updates: tuple[Any, ...]) -> bool:
            if removes_snapshots:
                if not any(getattr(u, "action", None) == "remove-snapshots" for u in updates):
                    return False
                snapshot_id = None
            else:
                heads = [u.snapshot_id for u in updates if getattr(u, "action", None) == "set-snapshot-ref" and u.ref_name == ref]
                if not heads:
                    return False
                snapshot_id = heads[-1]
            self._access.require_in(conn, self.name, self.user, needs, operation)
            self._access.record_in(conn, self.name, self.user, operation, ref=ref, snapshot_id=snapshot_id,
                                   detail=dict(detail(snapshot_id) if callable(detail) else (detail or {})))
            return True

        try:
            with inside_commit(in_commit) as hook:
                yield audited
        except RoleRevokedError:
            self._access.record(self.name, self.user, operation, ref=ref, outcome="denied",
                                detail={"needed": needs, "role": self._access.role_of(self.name, self.user), "at": "commit"})
            raise
        if hook.handled == 0 and audited.fallback:
            sid = audited.snapshot_id
            self._access.record(self.name, self.user, operation, ref=ref, snapshot_id=sid,
                                detail=dict(detail(sid) if callable(detail) else (detail or {})))  # type: ignore[arg-type]

    def audited(
        self,
        operation: str,
        needs: str,
        ref: str,
        detail: Mapping[str, Any] | Callable[[int], Mapping[str, Any]] | None = None,
    ) -> AbstractContextManager["_Audited"]:
        """``_audited`` for code that commits to this dataset's table itself rather than
        through a method of this class (the review package's submits and syncs): each
        catalog commit in the block that moves ``ref`` re-checks ``needs`` and writes the
        audit row ``operation`` in the commit's own transaction."""
        return self._audited(operation, needs, ref, detail)

    def _lock(self, operation: str, wait_s: float | None):
        return version_lock(
            f"dataset:{self.name}",
            holder_description(self.user, operation),
            self.settings,
            wait_s=wait_s,
            config=self.lock_config,
        )

    # ----- refs --------------------------------------------------------------------------
    def refs(self) -> dict[str, dict[str, Any]]:
        """Every branch and tag with its type and head snapshot."""
        self._require("reader", "refs")
        return ref_heads(self._table.refresh())

    def branches(self) -> list[str]:
        return [name for name, ref in self.refs().items() if ref["type"] == "branch"]

    def tags(self) -> list[str]:
        return [name for name, ref in self.refs().items() if ref["type"] == "tag"]

    def resolve(self, ref: str | int | None = None, *, table: Table | None = None) -> Snapshot:
        """The snapshot a branch, tag or snapshot id names (``None`` means main)."""
        return resolve_snapshot(table or self._table.refresh(), ref, dataset=self.name)

    def branch(self, branch: str, from_ref: str | int | None = None) -> int:
        """Create ``branch`` at ``from_ref`` (main by default). Metadata only: no data is copied."""
        self._require("writer", "branch")
        check_ref_name(branch)
        return self._create_ref(branch, from_ref, SnapshotRefType.BRANCH)

    def tag(self, tag: str, ref: str | int | None = None) -> int:
        """Name ``ref``'s current snapshot ``tag``, forever: tags never move and ``expire``
        never drops a tagged snapshot."""
        self._require("writer", "tag")
        check_ref_name(tag)
        return self._create_ref(tag, ref, SnapshotRefType.TAG)

    def _create_ref(self, name: str, from_ref: str | int | None, kind: SnapshotRefType) -> int:
        """Create the ref, retrying when the catalog commit loses a race. A lost race means
        the table changed meanwhile, usually a commit to another branch: the ref is created
        on the new state (``from_ref`` resolved again); only if the ref itself now exists is
        it ``RefExistsError``."""
        operation = "tag" if kind == SnapshotRefType.TAG else "branch"
        table = self._table.refresh()
        for attempt in range(self.commit_policy.max_attempts):
            if name in table.metadata.refs:
                raise RefExistsError(f"{self.name}: {name!r} already exists" + (" (created concurrently)" if attempt else ""))
            snapshot_id = self.resolve(from_ref, table=table).snapshot_id
            manage = table.manage_snapshots()
            if kind == SnapshotRefType.TAG:
                manage = manage.create_tag(snapshot_id, name)
            else:
                manage = manage.create_branch(snapshot_id, name)
            with self._audited(operation, "writer", name, {"from": str(from_ref or MAIN)}) as audited:
                audited.snapshot_id = snapshot_id
                try:
                    manage.commit()
                except CommitFailedException:
                    audited.fallback = False  # nothing was committed
                    self.commit_retries += 1
                    time.sleep(random.uniform(0, self.commit_policy.delay_s(attempt)))
                    table = self._fresh()
                    continue
            return snapshot_id
        raise CommitRetriesExhaustedError(f"{self.name}: creating {name!r} lost {self.commit_policy.max_attempts} commit races in a row")

    def ensure_user_branch(self) -> str:
        """The acting user's own branch, created from main on first use."""
        branch = user_branch(self.user)
        if branch not in self._table.refresh().metadata.refs:
            try:
                self.branch(branch)
            except RefExistsError:
                pass  # created by another process of the same user meanwhile
        return branch

    def _write_branch(self, branch: str | None) -> str:
        if branch is None:
            return self.ensure_user_branch()
        return check_writable_branch(self._table.refresh(), branch, dataset=self.name)

    # ----- reading -----------------------------------------------------------------------
    def read(self, ref: str | int | None = None, columns: Sequence[str] | None = None, *, limit: int | None = None) -> pa.Table:
        """The samples at ``ref`` (all, or the first ``limit``) as an Arrow table in the sample schema."""
        return self.read_with_snapshot(ref, columns, limit=limit)[1]

    def read_with_snapshot(
        self, ref: str | int | None = None, columns: Sequence[str] | None = None, *, limit: int | None = None
    ) -> tuple[int, pa.Table]:
        """``(snapshot_id, rows)``: the ref is resolved once, so the rows are exactly that
        snapshot's even while writers commit. With ``limit``, the first ``limit`` rows in
        the scan's file order: data files are read one at a time and reading stops as soon
        as there are enough, so the rest of the table is never read."""
        self._require("reader", "read")
        snapshot = self.resolve(ref)
        # A snapshot older than a column of the sample schema reads it as nulls.
        schema = self._table.schemas().get(snapshot.schema_id) if snapshot.schema_id is not None else None
        known = [c for c in columns if schema is None or c in schema.column_names] if columns else None
        scan = self._table.scan(snapshot_id=snapshot.snapshot_id, selected_fields=tuple(known) if known else ("*",))
        rows = scan.to_arrow() if limit is None else _read_first(scan, limit)
        for name in (c for c in columns or () if c not in rows.column_names):
            rows = rows.append_column(sample_schema.ARROW_SCHEMA.field(name), pa.nulls(rows.num_rows, sample_schema.ARROW_SCHEMA.field(name).type))
        return snapshot.snapshot_id, rows.select(list(columns)) if columns else rows

    def log(self, ref: str | int | None = None, limit: int | None = None) -> list[SnapshotInfo]:
        """Snapshots reachable from ``ref``, newest first."""
        self._require("reader", "log")
        table = self._table.refresh()
        return commit_log(table, self.resolve(ref, table=table), limit)

    def diff(self, ref1: str | int, ref2: str | int) -> DiffResult:
        """Samples added, changed and removed going from ``ref1`` to ``ref2``."""
        self._require("reader", "diff")
        table = self._table.refresh()
        s1, s2 = self.resolve(ref1, table=table), self.resolve(ref2, table=table)
        changes = changes_between(table, s1.snapshot_id, s2.snapshot_id)
        return DiffResult(
            ref1=str(ref1),
            ref2=str(ref2),
            snapshot1=s1.snapshot_id,
            snapshot2=s2.snapshot_id,
            added=sorted(changes.added),
            changed=sorted(changes.changed),
            removed=sorted(changes.removed),
        )

    # ----- writing -----------------------------------------------------------------------
    def append(
        self,
        rows: pa.Table,
        branch: str | None = None,
        *,
        message: str | None = None,
        operation: str = "append",
    ) -> int:
        """Add new samples to ``branch`` (the user's branch by default). Fails, writing
        nothing, when a sample id is already on the branch; use ``upsert`` to replace."""
        self._require("writer", operation)
        rows = sample_schema.conform(rows)
        check_series_uris(rows, self.settings.warehouse_uri, where=self.name)
        branch = self._write_branch(branch)
        # Data files are written once; a lost race only redoes the cheap part (id check,
        # manifests, metadata).
        table = self._table.refresh()
        data_files = write_data_files(table, rows)
        write = append_files(data_files, sample_schema.ids_of(rows), branch, where=f"{self.name}@{branch}")
        try:
            sid = self._commit(branch, operation, message, write, audit={"rows": rows.num_rows})
        except DatasetError:
            # Known not committed (refused or out of retries): the files are nobody's.
            delete_data_files(table, data_files)
            raise
        return sid

    def upsert(
        self,
        rows: pa.Table,
        branch: str | None = None,
        *,
        message: str | None = None,
        operation: str = "upsert",
    ) -> int:
        """Insert ``rows``, replacing any sample with the same id on ``branch``."""
        self._require("writer", operation)
        rows = sample_schema.conform(rows)
        check_series_uris(rows, self.settings.warehouse_uri, where=self.name)
        branch = self._write_branch(branch)
        return self._commit(branch, operation, message, replace_rows(rows, branch), audit={"rows": rows.num_rows})

    def delete(self, ids: Iterable[str], branch: str | None = None, *, message: str | None = None) -> int:
        """Remove samples from ``branch``; unknown ids are an error and nothing is removed."""
        self._require("writer", "delete")
        ids = sorted(set(ids))
        branch = self._write_branch(branch)
        return self._commit(branch, "delete", message, delete_rows(ids, branch, where=f"{self.name}@{branch}"), audit={"rows": len(ids)})

    def annotate(
        self,
        updates: Sequence[Mapping[str, Any]],
        branch: str | None = None,
        *,
        message: str | None = None,
        operation: str = "label",
        refuse_if: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> int:
        """Change the annotation columns of existing samples. Each update is a mapping with
        ``sample_id`` and any of ``label``, ``label_source``, ``confidence``, ``annotator``,
        ``status``; ``annotator`` defaults to the acting user. All ids must exist on the
        branch, else nothing is written. ``refuse_if`` is a predicate on a sample's current
        row (``schema.is_person_annotation``, say): if it holds for any sample to change, at
        the moment of the commit, ``ProtectedSamplesError`` lists them and nothing is
        written."""
        self._require("writer", operation)
        branch = self._write_branch(branch)
        by_id = annotation_updates(updates, annotator=self.user)
        write = set_annotations(by_id, branch, where=f"{self.name}@{branch}", refuse_if=refuse_if)
        return self._commit(branch, operation, message, write, audit={"samples": len(by_id)})

    def label(
        self,
        labels: Mapping[str, str],
        branch: str | None = None,
        *,
        source: str = "human",
        confidence: float | None = None,
        status: str = "confirmed",
        message: str | None = None,
    ) -> int:
        """Set labels by sample id (a human confirming them, by default)."""
        updates = [
            {"sample_id": sample_id, "label": label, "label_source": source, "confidence": confidence, "status": status}
            for sample_id, label in labels.items()
        ]
        return self.annotate(updates, branch, message=message or f"label {len(updates)} sample(s)", operation="label")

    def import_(self, source: str | pa.Table, branch: str | None = MAIN, *, message: str | None = None) -> int:
        """Append the samples of a file or ``aeon:NAME`` (see ``importers``) to ``branch``."""
        self._require("writer", "import")
        rows = load_rows(source)
        return self.append(rows, branch, message=message or f"import {source if isinstance(source, str) else 'rows'}", operation="import")

    # ----- merge, revert, expire ---------------------------------------------------------
    def merge(self, branch: str, *, message: str | None = None, wait_s: float | None = None) -> MergeResult:
        """Bring ``branch``'s changes into main, under the version lock.

        Fast-forwards main when main has not moved since the branch left it. Otherwise
        re-applies the branch's added, changed and removed samples onto the newest main in
        one snapshot; if main changed any of the same samples differently, raises
        ``MergeConflict`` with their ids and leaves main as it was."""
        self._require("writer", "merge")
        if branch == MAIN:
            raise DatasetError("cannot merge main into itself")
        with self._lock("merge", wait_s):
            try:
                result = self._merge_locked(branch, message)
            except MergeConflict as exc:
                self._access.record(self.name, self.user, "merge", ref=branch, outcome="conflict", detail={"ids": exc.ids})
                raise
        return result

    def _merge_locked(self, branch: str, message: str | None) -> MergeResult:
        """The merge, audited: a fast-forward's row (branch, kind, snapshot, main's head
        before) and a three-way merge's (``MergeResult.as_dict``) are written inside their
        commits; an up-to-date merge commits nothing and is audited after it."""
        table = self._fresh()
        branch_head = table.metadata.refs[branch].snapshot_id if branch in table.metadata.refs else None
        main_before = table.metadata.refs[MAIN].snapshot_id
        fast_forward = {"branch": branch, "kind": "fast-forward", "from": main_before}
        with self._audited("merge", "writer", MAIN, lambda sid: {**fast_forward, "snapshot_id": sid}) as audited:
            done = merge_without_commit(table, branch, dataset=self.name)
            if done is None or done.kind != "fast-forward":
                audited.fallback = False  # no commit: audited below, or by the merge commit
            else:
                audited.snapshot_id = done.snapshot_id
        if done is not None:
            if done.kind == "up-to-date":
                self._access.record(self.name, self.user, "merge", ref=MAIN, snapshot_id=done.snapshot_id, detail=done.as_dict())
            return done
        counts: dict[str, int] = {}
        sid = self._commit(
            MAIN,
            "merge",
            message or f"merge {branch} into main",
            reapply_on_main(branch, branch_head, counts, dataset=self.name),
            extra={"tp.merged-branch": branch, "tp.merged-head": str(branch_head)},
            audit=lambda sid: MergeResult(branch, "merge", sid, counts["added"], counts["changed"], counts["removed"]).as_dict(),
        )
        return MergeResult(branch, "merge", sid, counts["added"], counts["changed"], counts["removed"])

    def revert(self, to_ref: str | int, *, message: str | None = None, wait_s: float | None = None) -> int:
        """Make main hold exactly the samples of ``to_ref`` again, as a new snapshot on top of
        main's history (nothing is erased, so the revert itself can be reverted). Only data
        file references change: files are never copied."""
        self._require("owner", "revert")
        with self._lock("revert", wait_s):
            target = self.resolve(to_ref, table=self._fresh())
            sid = self._commit(
                MAIN,
                "revert",
                message or f"revert main to {target.snapshot_id}",
                restore_files(target.snapshot_id, MAIN, dataset=self.name),
                extra={"tp.reverted-to": str(target.snapshot_id)},
                needs="owner",
                audit={"to": target.snapshot_id},
            )
        return sid

    def expire(
        self,
        *,
        older_than: timedelta = timedelta(days=7),
        retain_last: int = 10,
        orphan_grace: timedelta | None = timedelta(hours=1),
        wait_s: float | None = None,
    ) -> ExpireResult:
        """Drop old snapshots by a retention policy, then the data files no snapshot uses.

        Kept (``maintenance.snapshots_to_expire``): snapshots younger than ``older_than``;
        the newest ``retain_last`` of every branch's history; every branch head and tagged
        snapshot; for every branch, both histories back to its merge base with main (a
        later merge walks them); merged heads that kept merge snapshots point at. An
        expired snapshot can no longer be read.

        Then data files that no remaining snapshot references and that are older than
        ``orphan_grace`` are deleted: those of expired snapshots, of lost commit races and
        of killed writers. The grace period protects files a writer has written but not yet
        committed; it may not be shorter than ``maintenance.MIN_ORPHAN_GRACE``
        (``InvalidExpireError``, exit 2, before anything is done); ``None`` keeps every file.

        Audit: one ``expire`` row, written in the commit that drops the snapshots (or after,
        when none is dropped), and a ``delete-files`` row when files were deleted."""
        check_orphan_grace(orphan_grace)
        if retain_last < 1:
            raise DatasetError("retain_last must be at least 1: a branch's head is always kept")
        self._require("owner", "expire")
        with self._lock("expire", wait_s):
            table = self._fresh()
            expired = snapshots_to_expire(table, older_than=older_than, retain_last=retain_last)
            detail = {"expired": expired, "retain_last": retain_last, "older_than_s": older_than.total_seconds(),
                      "orphan_grace_s": None if orphan_grace is None else orphan_grace.total_seconds()}
            with self._audited("expire", "owner", None, detail, removes_snapshots=True):
                if expired:
                    table.maintenance.expire_snapshots().by_ids(expired).commit()
            if expired:
                table = self._fresh()
            deleted = delete_unreferenced_files(table, orphan_grace, dataset=self.name) if orphan_grace is not None else []
        if deleted:
            self._access.record(self.name, self.user, "delete-files", detail={"deleted_files": len(deleted)})
        return ExpireResult(snapshots=expired, deleted_files=deleted)

    # ----- roles and audit ---------------------------------------------------------------
    def grant(self, user: str, role: str | None) -> None:
        """Give ``user`` a role (``owner``, ``writer``, ``reader``; ``None`` removes it)."""
        self._require("owner", "grant")
        # The granter's role is checked again, and the audit row written, in the transaction
        # that changes the role.
        self._access.set_role(self.name, user, role, granted_by=self.user, granter_needs="owner", audit={"user": user, "role": role})

    def roles(self) -> dict[str, str]:
        self._require("reader", "roles")
        return self._access.roles(self.name)

    def audit(self, limit: int | None = None) -> list[Any]:
        self._require("reader", "audit")
        return self._access.audit(self.name, limit)

    def samples_count(self, ref: str | int | None = None) -> int:
        self._require("reader", "count")
        snapshot = self.resolve(ref)
        return int(snapshot.summary.get("total-records", 0)) if snapshot.summary else 0


def _read_first(scan: Any, limit: int) -> pa.Table:
    """The first ``limit`` rows of a pyiceberg scan, reading its data files one by one and
    none after the one that completes them (pyiceberg's own ``limit`` reads several files
    at once in its thread pool)."""
    from pyiceberg.io.pyarrow import ArrowScan

    def arrow_scan(rows: int) -> ArrowScan:
        return ArrowScan(scan.table_metadata, scan.io, scan.projection(), scan.row_filter, scan.case_sensitive, rows)

    parts, left = [], limit
    for task in scan.plan_files():
        if left <= 0:
            break
        part = arrow_scan(left).to_table([task])
        parts.append(part)
        left -= part.num_rows
    if not parts:
        return arrow_scan(0).to_table([])
    return pa.concat_tables(parts, promote_options="permissive")


class _Audited:
    """What ``Dataset._audited`` yields: the block sets ``snapshot_id`` to what it made,
    for the audit row of a block whose commit changed nothing, or ``fallback`` to False
    when such a block is audited otherwise."""

    snapshot_id: int | None = None
    fallback: bool = True


__all__ = [
    "MAIN",
    "CommitPolicy",
    "Dataset",
    "DiffResult",
    "ExpireResult",
    "MergeResult",
    "SnapshotInfo",
    "create_dataset",
    "list_datasets",
    "open_dataset",
]
