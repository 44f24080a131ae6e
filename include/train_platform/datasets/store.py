"""Versioned datasets: git-like operations on Iceberg tables of samples.

Every dataset is one Iceberg table (schema in ``schema.py``). What git calls commits are
Iceberg snapshots, each carrying who made it, why and what operation in its summary
properties (``tp.user``, ``tp.message``, ``tp.operation``); branches and tags are Iceberg
refs, so creating one copies no data. Writes go to the acting user's own branch
(``user/<name>``) unless a branch is named, and reach ``main`` through ``merge``.

Concurrency: writers to one branch race through Iceberg's optimistic commit (the catalog
swaps the metadata pointer only if the branch head is still the one the writer started
from); a loser re-reads the branch and recomputes its change, with jittered exponential
backoff, so no row is lost and no change is applied to a stale state. Merge into main,
revert and expire also take the dataset's version lock, so they never interleave.
"""

from __future__ import annotations

import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError, TableAlreadyExistsError
from pyiceberg.expressions import AlwaysTrue, In
from pyiceberg.table import Table, Transaction
from pyiceberg.table.update import update_table_metadata
from pyiceberg.table.snapshots import Snapshot, ancestors_of
from pyiceberg.table.refs import SnapshotRefType

from train_platform.datasets import schema as sample_schema
from train_platform.datasets.access import AccessStore
from train_platform.datasets.catalog import get_catalog, identifier, check_name
from train_platform.datasets.exceptions import (
    CommitRetriesExhaustedError,
    DatasetError,
    DatasetExistsError,
    DatasetNotFoundError,
    InvalidSamplesError,
    MergeConflict,
    RefExistsError,
    RefNotFoundError,
    UnknownSamplesError,
)
from train_platform.datasets.locks import LockConfig, holder_description, version_lock
from train_platform.settings import Settings, get_settings

log = logging.getLogger(__name__)

MAIN = "main"
USER_BRANCH_PREFIX = "user/"
_REF_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")

TABLE_PROPERTIES = {
    # This module retries conflicts itself, recomputing the change from the new branch head;
    # pyiceberg's own retry would re-apply a change computed from a stale state.
    "commit.retry.num-retries": "0",
    # Labelling rewrites whole data files (copy-on-write); smaller files keep a label edit
    # on a million-sample dataset from rewriting all of it.
    "write.target-file-size-bytes": str(64 * 1024 * 1024),
    # Many small commits (one per annotation batch) would otherwise leave one manifest each,
    # and every scan plan reads all of them.
    "commit.manifest-merge.enabled": "true",
    "commit.manifest.min-count-to-merge": "16",
    # Every commit writes a new metadata file; old ones are only history of the pointer.
    "write.metadata.previous-versions-max": "20",
    "write.metadata.delete-after-commit.enabled": "true",
}


class _Transaction(Transaction):
    """A pyiceberg transaction that builds its staged metadata once per staged state.

    pyiceberg rebuilds and deep-copies the whole table metadata on every read of
    ``table_metadata`` (about twenty per append); with a few hundred snapshots that was most
    of a commit's time. Metadata models are frozen and never changed in place, so reusing
    the result until the table or the staged updates change is safe."""

    _cache: tuple[Any, Any, Any] | None = None

    @property
    def table_metadata(self):  # type: ignore[override]
        cache = self._cache
        if cache is None or cache[0] is not self._table.metadata or cache[1] is not self._updates:
            cache = (self._table.metadata, self._updates, update_table_metadata(self._table.metadata, self._updates))
            self._cache = cache
        return cache[2]


@dataclass(frozen=True)
class CommitPolicy:
    # Eight writers on two cores lose many races in a row; each loss costs one re-read.
    max_attempts: int = 200
    # First backoff; doubles per lost race, with full jitter so losers do not collide again.
    base_delay_s: float = 0.1
    # Cap keeps a writer from sleeping long after the branch has gone quiet.
    max_delay_s: float = 2.0


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


@dataclass(frozen=True)
class MergeResult:
    branch: str
    # "fast-forward", "merge" (branch changes re-applied on main) or "up-to-date".
    kind: str
    snapshot_id: int
    added: int = 0
    changed: int = 0
    removed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ExpireResult:
    snapshots: list[int]  # expired snapshot ids
    deleted_files: list[str]  # data files no remaining snapshot used

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Changes:
    """What happened to samples between two snapshots, with the rows as they ended up."""

    added: set[str]
    changed: set[str]
    removed: set[str]
    rows: pa.Table  # rows of added and changed samples at the later snapshot

    @property
    def touched(self) -> set[str]:
        return self.added | self.changed | self.removed


def parse_ref(text: str) -> tuple[str, str | None]:
    """``NAME@REF`` (or ``tp://NAME@REF``) into ``(NAME, REF)``; REF is ``None`` when absent."""
    text = text.removeprefix("tp://")
    name, sep, ref = text.partition("@")
    if sep and not ref:
        raise DatasetError(f"{text!r}: nothing after '@' (expected NAME@BRANCH, NAME@TAG or NAME@SNAPSHOT_ID)")
    return check_name(name), (ref or None)


def user_branch(user: str) -> str:
    """The user's own branch. Characters a ref name cannot hold (an e-mail's '@') become '-'."""
    return f"{USER_BRANCH_PREFIX}{re.sub(r'[^A-Za-z0-9._-]+', '-', user).strip('-.') or 'anonymous'}"


def _check_ref_name(name: str) -> str:
    if not _REF_NAME.match(name) or ".." in name or name.isdigit():
        raise DatasetError(
            f"ref name {name!r} is invalid: use letters, digits, '.', '_', '-', '/', not all digits (those are snapshot ids)"
        )
    return name


def _props(snapshot: Snapshot) -> dict[str, str]:
    return dict(snapshot.summary.additional_properties) if snapshot.summary else {}


def _ancestors(table: Table, snapshot_id: int) -> list[Snapshot]:
    start = table.metadata.snapshot_by_id(snapshot_id)
    return list(ancestors_of(start, table.metadata)) if start else []


def _chain_to(table: Table, head: int, stop: int) -> list[int]:
    """Ids from ``head`` back through its parents to ``stop`` (inclusive), or to a merge
    snapshot whose merged head is ``stop``."""
    chain = []
    for snapshot in _ancestors(table, head):
        chain.append(snapshot.snapshot_id)
        if snapshot.snapshot_id == stop or _props(snapshot).get("tp.merged-head") == str(stop):
            break
    chain.append(stop)
    return chain


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
        rows = _load(source)
    try:
        table = catalog.create_table(identifier(name), schema=sample_schema.SAMPLE_SCHEMA, properties=TABLE_PROPERTIES)
    except TableAlreadyExistsError as exc:
        raise DatasetExistsError(f"dataset {name!r} already exists") from exc
    access = AccessStore(settings.catalog_uri)
    access.set_role(name, user, "owner", granted_by=user)
    dataset = Dataset(name, user=user, settings=settings, _table=table, _access=access)
    # An empty first snapshot gives main a head, so branches can start from it at once.
    sid = dataset._commit(
        MAIN, "create", message or f"create {name}", lambda tbl, txn, props: txn.append(sample_schema.ARROW_SCHEMA.empty_table(), props, branch=MAIN)
    )
    access.record(name, user, "create", ref=MAIN, snapshot_id=sid)
    if rows is not None:
        dataset.append(rows, branch=MAIN, message=message or f"import {source if isinstance(source, str) else 'rows'}", operation="import")
    return dataset


def open_dataset(name: str, *, user: str | None = None, settings: Settings | None = None) -> "Dataset":
    settings = settings or get_settings()
    return Dataset(name, user=user or settings.user, settings=settings)


def list_datasets(settings: Settings | None = None) -> list[str]:
    from train_platform.datasets.catalog import NAMESPACE

    settings = settings or get_settings()
    return sorted(ident[-1] for ident in get_catalog(settings).list_tables(NAMESPACE))


def _load(source: str | pa.Table) -> pa.Table:
    from train_platform.datasets.importers import load_source

    if isinstance(source, pa.Table):
        return sample_schema.conform(source)
    return load_source(source)


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
            return self._catalog.load_table(identifier(self.name))
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
        write: Callable[[Table, Any, dict[str, str]], None],
        extra: Mapping[str, str] | None = None,
    ) -> int:
        """Run ``write(table, transaction, snapshot_properties)`` against the newest state of
        ``branch`` and commit it, retrying lost races. Returns the new head of ``branch``."""
        policy = self.commit_policy
        for attempt in range(policy.max_attempts):
            table = self._fresh() if attempt else self._table.refresh()
            # tp.commit groups the snapshots of one commit: an overwrite is a delete snapshot
            # followed by an append snapshot, and ``log`` shows them as one entry.
            props = {
                "tp.user": self.user,
                "tp.operation": operation,
                "tp.message": message or operation,
                "tp.commit": uuid.uuid4().hex,
                **(extra or {}),
            }
            txn = _Transaction(table)
            write(table, txn, props)
            try:
                committed = txn.commit_transaction()
            except CommitFailedException as exc:
                reason = str(exc)
            except ValueError as exc:
                # A writer that read the table before a commit to *another* branch carries a
                # stale sequence number; the catalog refuses it like any lost race.
                if "sequence number" not in str(exc) and "already exists" not in str(exc):
                    raise
                reason = str(exc)
            else:
                self._table = committed
                return committed.metadata.refs[branch].snapshot_id
            self.commit_retries += 1
            delay = min(policy.max_delay_s, policy.base_delay_s * 2**min(attempt, 16))
            log.debug("commit to %s@%s lost a race (%s); retry %d in %.3f s", self.name, branch, reason, attempt + 1, delay)
            time.sleep(random.uniform(0, delay))
        raise CommitRetriesExhaustedError(
            f"{self.name}@{branch}: {operation} lost {policy.max_attempts} commit races in a row; nothing was written"
        )

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
        table = self._table.refresh()
        return {
            name: {"type": "tag" if ref.snapshot_ref_type == SnapshotRefType.TAG else "branch", "snapshot_id": ref.snapshot_id}
            for name, ref in sorted(table.metadata.refs.items())
        }

    def branches(self) -> list[str]:
        return [name for name, ref in self.refs().items() if ref["type"] == "branch"]

    def tags(self) -> list[str]:
        return [name for name, ref in self.refs().items() if ref["type"] == "tag"]

    def resolve(self, ref: str | int | None = None, *, table: Table | None = None) -> Snapshot:
        """The snapshot a branch, tag or snapshot id names (``None`` means main)."""
        table = table or self._table.refresh()
        ref = MAIN if ref is None else ref
        if isinstance(ref, str) and ref in table.metadata.refs:
            snapshot = table.snapshot_by_name(ref)
        elif isinstance(ref, int) or (isinstance(ref, str) and ref.lstrip("-").isdigit()):
            snapshot = table.snapshot_by_id(int(ref))
        else:
            snapshot = None
        if snapshot is None:
            known = ", ".join(sorted(table.metadata.refs)) or "none"
            raise RefNotFoundError(f"{self.name}: no branch, tag or snapshot {ref!r} (refs: {known})")
        return snapshot

    def branch(self, branch: str, from_ref: str | int | None = None) -> int:
        """Create ``branch`` at ``from_ref`` (main by default). Metadata only: no data is copied."""
        self._require("writer", "branch")
        _check_ref_name(branch)
        return self._create_ref(branch, from_ref, SnapshotRefType.BRANCH)

    def tag(self, tag: str, ref: str | int | None = None) -> int:
        """Name ``ref``'s current snapshot ``tag``, forever: tags never move and ``expire``
        never drops a tagged snapshot."""
        self._require("writer", "tag")
        _check_ref_name(tag)
        return self._create_ref(tag, ref, SnapshotRefType.TAG)

    def _create_ref(self, name: str, from_ref: str | int | None, kind: SnapshotRefType) -> int:
        table = self._table.refresh()
        if name in table.metadata.refs:
            raise RefExistsError(f"{self.name}: {name!r} already exists")
        snapshot_id = self.resolve(from_ref, table=table).snapshot_id
        manage = table.manage_snapshots()
        if kind == SnapshotRefType.TAG:
            manage = manage.create_tag(snapshot_id, name)
        else:
            manage = manage.create_branch(snapshot_id, name)
        try:
            manage.commit()
        except CommitFailedException as exc:
            # The requirement is "ref absent": losing means someone created it meanwhile.
            raise RefExistsError(f"{self.name}: {name!r} was created concurrently") from exc
        operation = "tag" if kind == SnapshotRefType.TAG else "branch"
        self._access.record(self.name, self.user, operation, ref=name, snapshot_id=snapshot_id, detail={"from": str(from_ref or MAIN)})
        return snapshot_id

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
        table = self._table.refresh()
        ref = table.metadata.refs.get(branch)
        if ref is None:
            raise RefNotFoundError(f"{self.name}: no branch {branch!r} (create it with `tp dataset branch`)")
        if ref.snapshot_ref_type == SnapshotRefType.TAG:
            raise DatasetError(f"{self.name}: {branch!r} is a tag; tags cannot be written to")
        return branch

    # ----- reading -----------------------------------------------------------------------
    def read(self, ref: str | int | None = None, columns: Sequence[str] | None = None) -> pa.Table:
        """All samples at ``ref`` as an Arrow table in the sample schema."""
        return self.read_with_snapshot(ref, columns)[1]

    def read_with_snapshot(self, ref: str | int | None = None, columns: Sequence[str] | None = None) -> tuple[int, pa.Table]:
        """``(snapshot_id, rows)``: the ref is resolved once, so the rows are exactly that
        snapshot's even while writers commit."""
        self._require("reader", "read")
        snapshot = self.resolve(ref)
        scan = self._table.scan(snapshot_id=snapshot.snapshot_id, selected_fields=tuple(columns) if columns else ("*",))
        return snapshot.snapshot_id, scan.to_arrow()

    def log(self, ref: str | int | None = None, limit: int | None = None) -> list[SnapshotInfo]:
        """Snapshots reachable from ``ref``, newest first."""
        self._require("reader", "log")
        table = self._table.refresh()
        out: list[SnapshotInfo] = []
        for snapshot in ancestors_of(self.resolve(ref, table=table), table.metadata):
            props = _props(snapshot)
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

    def _changes(self, table: Table, from_id: int, to_id: int) -> _Changes:
        """Samples added, changed and removed from snapshot ``from_id`` to ``to_id``.

        Only data files that differ between the two snapshots are read: a sample id occurs
        once per snapshot, so a sample in a file both snapshots share is unchanged."""
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
        return _Changes(
            added=added,
            changed=changed,
            removed=old_ids - new_ids,
            rows=sample_schema.take_ids(new, sorted(added | changed)),
        )

    def diff(self, ref1: str | int, ref2: str | int) -> DiffResult:
        """Samples added, changed and removed going from ``ref1`` to ``ref2``."""
        self._require("reader", "diff")
        table = self._table.refresh()
        s1, s2 = self.resolve(ref1, table=table), self.resolve(ref2, table=table)
        changes = self._changes(table, s1.snapshot_id, s2.snapshot_id)
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
        branch = self._write_branch(branch)
        ids = sample_schema.ids_of(rows)
        # Data files are written once; a lost race only redoes the cheap part (id check,
        # manifests, metadata). This is what pyiceberg's own Transaction.append calls.
        from pyiceberg.io.pyarrow import _dataframe_to_data_files

        table = self._table.refresh()
        data_files = list(_dataframe_to_data_files(table.metadata, rows, table.io)) if rows.num_rows else []

        def write(table: Table, txn: Any, props: dict[str, str]) -> None:
            head = table.snapshot_by_name(branch)
            existing = self._existing_ids(table, head.snapshot_id, ids) if head else set()
            if existing:
                shown = ", ".join(sorted(existing)[:10])
                raise InvalidSamplesError(f"{self.name}@{branch} already has sample(s) {shown}; use upsert to replace them")
            with txn.update_snapshot(snapshot_properties=props, branch=branch).merge_append() as append:
                for data_file in data_files:
                    append.append_data_file(data_file)

        try:
            sid = self._commit(branch, operation, message, write)
        except DatasetError:
            # Known not committed (refused or out of retries): the files are nobody's.
            for data_file in data_files:
                try:
                    table.io.delete(data_file.file_path)
                except OSError:
                    log.warning("could not delete unused data file %s", data_file.file_path, exc_info=True)
            raise
        self._access.record(self.name, self.user, operation, ref=branch, snapshot_id=sid, detail={"rows": rows.num_rows})
        return sid

    def _existing_ids(self, table: Table, snapshot_id: int, ids: list[str]) -> set[str]:
        """Which of ``ids`` the snapshot holds, reading the id column only. Up to a few
        thousand ids an ``In`` filter lets file statistics skip most files (many small
        commits make many small files); beyond that the filter itself costs more."""
        if not ids:
            return set()
        import pyarrow.compute as pc

        row_filter = In("sample_id", ids) if len(ids) <= 5000 else AlwaysTrue()
        held = table.scan(snapshot_id=snapshot_id, row_filter=row_filter, selected_fields=("sample_id",)).to_arrow().column("sample_id")
        wanted = pa.array(ids, pa.string())
        return set(wanted.filter(pc.is_in(wanted, value_set=held.combine_chunks().cast(pa.string()))).to_pylist())

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
        branch = self._write_branch(branch)
        ids = sample_schema.ids_of(rows)

        def write(table: Table, txn: Any, props: dict[str, str]) -> None:
            txn.overwrite(rows, overwrite_filter=In("sample_id", ids), snapshot_properties=props, branch=branch)

        sid = self._commit(branch, operation, message, write)
        self._access.record(self.name, self.user, operation, ref=branch, snapshot_id=sid, detail={"rows": rows.num_rows})
        return sid

    def delete(self, ids: Iterable[str], branch: str | None = None, *, message: str | None = None) -> int:
        """Remove samples from ``branch``; unknown ids are an error and nothing is removed."""
        self._require("writer", "delete")
        ids = sorted(set(ids))
        branch = self._write_branch(branch)

        def write(table: Table, txn: Any, props: dict[str, str]) -> None:
            missing = set(ids) - self._existing_ids(table, table.snapshot_by_name(branch).snapshot_id, ids)
            if missing:
                raise UnknownSamplesError(f"{self.name}@{branch}", sorted(missing))
            txn.delete(In("sample_id", ids), snapshot_properties=props, branch=branch)

        sid = self._commit(branch, "delete", message, write)
        self._access.record(self.name, self.user, "delete", ref=branch, snapshot_id=sid, detail={"rows": len(ids)})
        return sid

    def annotate(
        self,
        updates: Sequence[Mapping[str, Any]],
        branch: str | None = None,
        *,
        message: str | None = None,
        operation: str = "label",
    ) -> int:
        """Change the annotation columns of existing samples. Each update is a mapping with
        ``sample_id`` and any of ``label``, ``label_source``, ``confidence``, ``annotator``,
        ``status``; ``annotator`` defaults to the acting user. All ids must exist on the
        branch, else nothing is written."""
        self._require("writer", operation)
        branch = self._write_branch(branch)
        by_id: dict[str, dict[str, Any]] = {}
        for index, update in enumerate(updates):
            sample_id = update.get("sample_id")
            unknown = set(update) - {"sample_id", *sample_schema.LABEL_COLUMNS}
            if not sample_id or unknown:
                problem = "no sample_id" if not sample_id else f"unknown field(s) {', '.join(sorted(unknown))}"
                raise InvalidSamplesError(f"annotation #{index}: {problem}")
            by_id[str(sample_id)] = {"annotator": self.user, **{k: v for k, v in update.items() if k != "sample_id"}}
        if not by_id:
            raise InvalidSamplesError("no annotations given")
        ids = sorted(by_id)

        def write(table: Table, txn: Any, props: dict[str, str]) -> None:
            head = table.snapshot_by_name(branch)
            current = table.scan(snapshot_id=head.snapshot_id, row_filter=In("sample_id", ids)).to_arrow()
            missing = set(ids) - set(current.column("sample_id").to_pylist())
            if missing:
                raise UnknownSamplesError(f"{self.name}@{branch}", sorted(missing))
            current = sample_schema.conform(current)
            records = current.to_pylist()
            for record in records:
                record.update(by_id[record["sample_id"]])
            new_rows = sample_schema.conform(pa.Table.from_pylist(records, schema=sample_schema.ARROW_SCHEMA), where="annotations")
            txn.overwrite(new_rows, overwrite_filter=In("sample_id", ids), snapshot_properties=props, branch=branch)

        sid = self._commit(branch, operation, message, write)
        self._access.record(self.name, self.user, operation, ref=branch, snapshot_id=sid, detail={"samples": len(ids)})
        return sid

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
        rows = _load(source)
        return self.append(rows, branch, message=message or f"import {source if isinstance(source, str) else 'rows'}", operation="import")

    # ----- merge, revert, expire ---------------------------------------------------------
    def _merge_base(self, table: Table, main_id: int, branch_id: int) -> int | None:
        """Newest snapshot both histories share. A merge snapshot on main counts the branch
        head it merged as shared, like the second parent of a git merge commit."""
        on_branch = {s.snapshot_id for s in _ancestors(table, branch_id)}
        for snapshot in _ancestors(table, main_id):
            if snapshot.snapshot_id in on_branch:
                return snapshot.snapshot_id
            merged = _props(snapshot).get("tp.merged-head")
            if merged and int(merged) in on_branch:
                return int(merged)
        return None

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
        self._access.record(self.name, self.user, "merge", ref=MAIN, snapshot_id=result.snapshot_id, detail=result.as_dict())
        return result

    def _merge_locked(self, branch: str, message: str | None) -> MergeResult:
        table = self._fresh()
        if table.metadata.refs.get(branch) is None or table.metadata.refs[branch].snapshot_ref_type != SnapshotRefType.BRANCH:
            raise RefNotFoundError(f"{self.name}: no branch {branch!r}")
        branch_head = table.metadata.refs[branch].snapshot_id
        main_head = table.metadata.refs[MAIN].snapshot_id
        base = self._merge_base(table, main_head, branch_head)
        if base is None:
            raise DatasetError(f"{self.name}: {branch!r} and main share no snapshot (expired?); cannot merge")
        if base == branch_head:
            return MergeResult(branch, "up-to-date", main_head)
        if base == main_head:
            try:
                table.manage_snapshots().create_branch(branch_head, MAIN).commit()
            except CommitFailedException:
                pass  # main moved (a direct write): fall through to a real merge
            else:
                changes = self._changes(table, main_head, branch_head)
                return MergeResult(branch, "fast-forward", branch_head, len(changes.added), len(changes.changed), len(changes.removed))

        counts: dict[str, int] = {}

        def write(tbl: Table, txn: Any, props: dict[str, str]) -> None:
            main_now = tbl.metadata.refs[MAIN].snapshot_id
            base_now = self._merge_base(tbl, main_now, branch_head)
            if base_now is None:
                raise DatasetError(f"{self.name}: {branch!r} and main share no snapshot (expired?); cannot merge")
            theirs = self._changes(tbl, base_now, branch_head)
            ours = self._changes(tbl, base_now, main_now)
            both = theirs.touched & ours.touched
            conflicts = self._conflicting(both, theirs, ours)
            if conflicts:
                raise MergeConflict(self.name, branch, conflicts)
            apply_rows = sorted((theirs.added | theirs.changed) - both)
            remove = sorted((theirs.changed | theirs.removed) - both)
            rows = sample_schema.take_ids(theirs.rows, apply_rows)
            counts.update(added=len(theirs.added - both), changed=len(theirs.changed - both), removed=len(theirs.removed - both))
            if remove:
                txn.overwrite(rows, overwrite_filter=In("sample_id", remove), snapshot_properties=props, branch=MAIN)
            else:
                txn.append(rows, snapshot_properties=props, branch=MAIN)

        sid = self._commit(
            MAIN,
            "merge",
            message or f"merge {branch} into main",
            write,
            extra={"tp.merged-branch": branch, "tp.merged-head": str(branch_head)},
        )
        return MergeResult(branch, "merge", sid, counts["added"], counts["changed"], counts["removed"])

    @staticmethod
    def _conflicting(both: set[str], theirs: _Changes, ours: _Changes) -> list[str]:
        """Ids both sides touched whose end states differ (a removal differs from any row).
        Two annotators agreeing on a sample is no conflict: who annotated is not compared,
        and main's row is kept."""
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

    def revert(self, to_ref: str | int, *, message: str | None = None, wait_s: float | None = None) -> int:
        """Make main hold exactly the samples of ``to_ref`` again, as a new snapshot on top of
        main's history (nothing is erased, so the revert itself can be reverted). Only data
        file references change: files are never copied."""
        self._require("owner", "revert")
        with self._lock("revert", wait_s):
            target = self.resolve(to_ref, table=self._fresh())

            def write(table: Table, txn: Any, props: dict[str, str]) -> None:
                def files(snapshot_id: int) -> dict[str, Any]:
                    tasks = list(table.scan(snapshot_id=snapshot_id).plan_files())
                    if any(t.delete_files for t in tasks):
                        raise DatasetError(f"{self.name}: snapshot {snapshot_id} has delete files; revert supports copy-on-write tables only")
                    return {t.file.file_path: t.file for t in tasks}

                wanted = files(target.snapshot_id)
                current = files(table.metadata.refs[MAIN].snapshot_id)
                with txn.update_snapshot(snapshot_properties=props, branch=MAIN).overwrite() as overwrite:
                    for path, data_file in current.items():
                        if path not in wanted:
                            overwrite.delete_data_file(data_file)
                    for path, data_file in wanted.items():
                        if path not in current:
                            overwrite.append_data_file(data_file)

            sid = self._commit(
                MAIN, "revert", message or f"revert main to {target.snapshot_id}", write, extra={"tp.reverted-to": str(target.snapshot_id)}
            )
        self._access.record(self.name, self.user, "revert", ref=MAIN, snapshot_id=sid, detail={"to": target.snapshot_id})
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

        Kept: snapshots younger than ``older_than``; the newest ``retain_last`` of every
        branch's history; every branch head and tagged snapshot; for every branch, both
        histories back to its merge base with main (a later merge walks them); merged
        heads that kept merge snapshots point at. An expired snapshot can no longer be read.

        Then data files that no remaining snapshot references and that are older than
        ``orphan_grace`` are deleted: those of expired snapshots, of lost commit races and
        of killed writers. The grace period protects files a writer has written but not yet
        committed; ``None`` keeps every file."""
        self._require("owner", "expire")
        if retain_last < 1:
            raise DatasetError("retain_last must be at least 1: a branch's head is always kept")
        with self._lock("expire", wait_s):
            table = self._fresh()
            keep: set[int] = set()
            cutoff_ms = (datetime.now(timezone.utc) - older_than).timestamp() * 1000
            main_head = table.metadata.refs[MAIN].snapshot_id
            for name, ref in table.metadata.refs.items():
                keep.add(ref.snapshot_id)
                if ref.snapshot_ref_type == SnapshotRefType.BRANCH:
                    history = _ancestors(table, ref.snapshot_id)
                    keep.update(s.snapshot_id for s in history[:retain_last])
                    if name != MAIN:
                        # A later merge walks both histories back to their merge base:
                        # keep both chains down to it.
                        base = self._merge_base(table, main_head, ref.snapshot_id)
                        if base is not None:
                            keep.update(_chain_to(table, ref.snapshot_id, base))
                            keep.update(_chain_to(table, main_head, base))
            for snapshot in table.metadata.snapshots:
                if snapshot.timestamp_ms >= cutoff_ms:
                    keep.add(snapshot.snapshot_id)
                merged = _props(snapshot).get("tp.merged-head")
                if merged and snapshot.snapshot_id in keep:
                    keep.add(int(merged))
            expired = sorted(s.snapshot_id for s in table.metadata.snapshots if s.snapshot_id not in keep)
            if expired:
                table.maintenance.expire_snapshots().by_ids(expired).commit()
                table = self._fresh()
            deleted = self._delete_unreferenced_files(table, orphan_grace) if orphan_grace is not None else []
        result = ExpireResult(snapshots=expired, deleted_files=deleted)
        self._access.record(
            self.name,
            self.user,
            "expire",
            detail={"expired": expired, "deleted_files": len(deleted), "retain_last": retain_last, "older_than_s": older_than.total_seconds()},
        )
        return result

    def _delete_unreferenced_files(self, table: Table, grace: timedelta) -> list[str]:
        from pyarrow import fs as pafs
        from pyiceberg.io.pyarrow import PyArrowFileIO

        io = table.io
        if not isinstance(io, PyArrowFileIO):
            log.warning("%s: file IO %s cannot list files; unreferenced files are kept", self.name, type(io).__name__)
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
        cutoff = datetime.now(timezone.utc) - grace
        deleted = []
        for info in filesystem.get_file_info(pafs.FileSelector(data_path, recursive=True, allow_not_found=True)):
            if info.type != pafs.FileType.File or info.path in referenced:
                continue
            modified = info.mtime if info.mtime is None or info.mtime.tzinfo else info.mtime.replace(tzinfo=timezone.utc)
            if modified is not None and modified > cutoff:
                continue
            filesystem.delete_file(info.path)
            deleted.append(info.path)
        log.info("%s: deleted %d unreferenced data file(s)", self.name, len(deleted))
        return deleted

    # ----- roles and audit ---------------------------------------------------------------
    def grant(self, user: str, role: str | None) -> None:
        """Give ``user`` a role (``owner``, ``writer``, ``reader``; ``None`` removes it)."""
        self._require("owner", "grant")
        self._access.set_role(self.name, user, role, granted_by=self.user)
        self._access.record(self.name, self.user, "grant", detail={"user": user, "role": role})

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
    "parse_ref",
    "user_branch",
]
