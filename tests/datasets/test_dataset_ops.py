"""Every dataset operation through the Python API, on SQLite + local folder and on
PostgreSQL + S3 + Redis."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from train_platform.datasets import (
    ConcurrentAccessError,
    DatasetExistsError,
    InvalidSamplesError,
    MergeConflict,
    PermissionDeniedError,
    RefExistsError,
    RefNotFoundError,
    UnknownSamplesError,
    build_samples,
    create_dataset,
    open_dataset,
)
from train_platform.datasets.locks import version_lock
from train_platform.datasets.maintenance import MIN_ORPHAN_GRACE, delete_unreferenced_files
from train_platform.datasets.reader import read_samples


def _rows(ids, start=0.0, labels=None):
    series = [np.arange(6, dtype=np.float32).reshape(3, 2) + start + i for i, _ in enumerate(ids)]
    return build_samples(ids, series, labels=labels)


def _labels(dataset, ref="main"):
    table = dataset.read(ref)
    return dict(zip(table.column("sample_id").to_pylist(), table.column("label").to_pylist()))


@pytest.fixture
def ds(backend, ds_name):
    return create_dataset(ds_name, user="alice", source=_rows(["s1", "s2", "s3", "s4"], labels=["a", "b", None, None]), settings=backend)


def test_create_read_log_and_reader(ds, backend):
    snapshot_id, table = ds.read_with_snapshot("main")
    assert table.num_rows == 4
    assert ds.roles() == {"alice": "owner"}
    entries = ds.log("main")
    assert [e.operation for e in entries] == ["import", "create"]
    assert entries[0].user == "alice" and entries[0].snapshot_id == snapshot_id
    assert entries[0].message.startswith("import")

    samples = read_samples(f"tp://{ds.name}", user="alice", settings=backend)
    assert samples.snapshot_id == snapshot_id
    by_id = dict(zip(samples.ids, samples.series))
    assert by_id["s2"].shape == (3, 2) and by_id["s2"].dtype == np.float32
    np.testing.assert_array_equal(by_id["s2"], np.arange(6, dtype=np.float32).reshape(3, 2) + 1)
    assert dict(zip(samples.ids, samples.labels)) == {"s1": "a", "s2": "b", "s3": None, "s4": None}
    assert dict(zip(samples.ids, samples.status))["s3"] == "raw"

    with pytest.raises(DatasetExistsError):
        create_dataset(ds.name, user="bob", settings=backend)


def test_branch_is_metadata_only_and_label_goes_to_user_branch(ds, backend):
    files_before = {t.file.file_path for t in ds._table.scan().plan_files()}
    ds.branch("exp")
    assert ds.resolve("exp").snapshot_id == ds.resolve("main").snapshot_id
    assert {t.file.file_path for t in ds._table.scan(snapshot_id=ds.resolve("exp").snapshot_id).plan_files()} == files_before
    with pytest.raises(RefExistsError):
        ds.branch("exp")

    ds.grant("bob", "writer")
    bob = open_dataset(ds.name, user="bob", settings=backend)
    bob.label({"s3": "c"})  # no branch: bob's own copy-on-write branch
    assert "user/bob" in bob.branches()
    assert _labels(bob, "user/bob")["s3"] == "c"
    assert _labels(bob, "main")["s3"] is None
    row = [r for r in bob.read("user/bob").to_pylist() if r["sample_id"] == "s3"][0]
    assert (row["annotator"], row["label_source"], row["status"]) == ("bob", "human", "confirmed")
    assert bob.log("user/bob")[0].user == "bob"

    ds.grant("eve@example.com", "writer")
    open_dataset(ds.name, user="eve@example.com", settings=backend).label({"s4": "e"})
    assert _labels(ds, "user/eve-example.com")["s4"] == "e"

    with pytest.raises(UnknownSamplesError) as info:
        bob.label({"s3": "x", "nope": "y"}, branch="user/bob")
    assert info.value.ids == ["nope"]
    assert _labels(bob, "user/bob")["s3"] == "c"  # nothing half-written


def test_tag_snapshot_reads_and_diff(ds):
    first = ds.resolve("main").snapshot_id
    ds.tag("v1")
    ds.branch("work")
    ds.label({"s1": "z"}, branch="work")
    ds.append(_rows(["s5"]), branch="work")
    ds.delete(["s4"], branch="work")
    assert set(_labels(ds, "v1")) == {"s1", "s2", "s3", "s4"}
    assert _labels(ds, str(first)) == _labels(ds, "v1")
    diff = ds.diff("v1", "work")
    assert (diff.added, diff.changed, diff.removed) == (["s5"], ["s1"], ["s4"])
    back = ds.diff("work", "main")
    assert (back.added, back.changed, back.removed) == (["s4"], ["s1"], ["s5"])
    assert ds.diff("main", "v1").added == []
    with pytest.raises(RefNotFoundError):
        ds.read("no-such-ref")
    with pytest.raises(RefExistsError):
        ds.tag("v1")
    with pytest.raises(InvalidSamplesError, match="already has sample"):
        ds.append(_rows(["s1"]), branch="work")
    with pytest.raises(Exception, match="tag"):
        ds.label({"s1": "q"}, branch="v1")


def test_fast_forward_and_three_way_merge(ds):
    ds.branch("ff")
    ds.label({"s3": "c"}, branch="ff")
    result = ds.merge("ff")
    assert result.kind == "fast-forward" and result.changed == 1
    assert ds.resolve("main").snapshot_id == ds.resolve("ff").snapshot_id
    assert ds.merge("ff").kind == "up-to-date"

    ds.branch("side")
    ds.label({"s4": "d"}, branch="side")
    ds.delete(["s2"], branch="side")
    ds.delete(["s2"], branch="main")  # the same change on both sides is no conflict
    ds.append(_rows(["s9"], start=9.0), branch="side")
    ds.label({"s1": "a2"}, branch="main")  # main moves on meanwhile
    result = ds.merge("side")
    assert result.kind == "merge" and (result.added, result.changed, result.removed) == (1, 1, 0)
    labels = _labels(ds)
    assert labels == {"s1": "a2", "s3": "c", "s4": "d", "s9": None}
    head = ds.log("main")[0]
    assert head.operation == "merge" and head.summary["tp.merged-branch"] == "side"

    # Merging the same branch again after more work applies only the new work.
    ds.label({"s3": "c2"}, branch="side")
    ds.label({"s4": "d-main"}, branch="main")  # main edits a sample side changed earlier
    assert ds.merge("side").changed == 1
    assert _labels(ds)["s3"] == "c2" and _labels(ds)["s4"] == "d-main"


def test_conflicting_merge_leaves_main_unchanged(ds, backend):
    ds.grant("bob", "writer")
    ds.grant("carol", "writer")
    bob = open_dataset(ds.name, user="bob", settings=backend)
    carol = open_dataset(ds.name, user="carol", settings=backend)
    bob.label({"s3": "from-bob", "s1": "bob-only", "s4": "agreed"})
    carol.label({"s3": "from-carol", "s2": "carol-only", "s4": "agreed"})
    assert bob.merge("user/bob").kind == "fast-forward"
    main_before = ds.resolve("main").snapshot_id
    rows_before = ds.read("main").sort_by("sample_id")
    with pytest.raises(MergeConflict) as info:
        carol.merge("user/carol")
    assert info.value.ids == ["s3"]  # s4 got the same label from both: agreement, no conflict
    assert info.value.exit_code == 3
    assert ds.resolve("main").snapshot_id == main_before
    assert ds.read("main").sort_by("sample_id").equals(rows_before)
    assert [e.outcome for e in ds.audit() if e.operation == "merge"][0] == "conflict"
    # Carol resolves by taking bob's label; then her other change merges.
    carol.label({"s3": "from-bob"})
    assert carol.merge("user/carol").kind == "merge"
    assert _labels(ds) == {"s1": "bob-only", "s2": "carol-only", "s3": "from-bob", "s4": "agreed"}


def test_revert_restores_content_as_new_snapshot(ds):
    target = ds.resolve("main").snapshot_id
    before = ds.read("main").sort_by("sample_id")
    ds.label({"s1": "x"}, branch="main")
    ds.delete(["s2"], branch="main")
    ds.append(_rows(["s7"]), branch="main")
    sid = ds.revert(target)
    assert sid != target
    assert ds.read("main").sort_by("sample_id").equals(before)
    assert ds.log("main")[0].operation == "revert"
    diff = ds.diff(target, "main")
    assert (diff.added, diff.changed, diff.removed) == ([], [], [])


def test_expire_keeps_tags_heads_and_merge_bases(ds):
    tagged = ds.resolve("main").snapshot_id
    ds.tag("keep-me")
    for i in range(3):
        ds.label({"s1": f"v{i}"}, branch="main")
    ds.branch("old")
    base = ds.resolve("old").snapshot_id
    for i in range(3):
        ds.label({"s2": f"w{i}"}, branch="main")
    result = ds.expire(older_than=timedelta(0), retain_last=1, orphan_grace=MIN_ORPHAN_GRACE)
    expired = result.snapshots
    assert expired
    assert result.deleted_files == []  # every unused file is younger than the grace period
    # Once the grace period has passed, the files of the expired snapshots go.
    later = datetime.now(timezone.utc) + MIN_ORPHAN_GRACE + timedelta(minutes=1)
    deleted = delete_unreferenced_files(ds._fresh(), MIN_ORPHAN_GRACE, dataset=ds.name, now=later)
    assert deleted  # label commits rewrote s1's file; old versions went with their snapshots
    ids = {s.snapshot_id for s in ds._fresh().metadata.snapshots}
    assert tagged in ids and base in ids and ds.resolve("main").snapshot_id in ids
    assert not (set(expired) & ids)
    assert _labels(ds, "keep-me")["s1"] == "a"
    for name in ds.refs():  # every kept ref still reads in full after the file deletion
        assert ds.read(name).num_rows == 4
    ds.label({"s3": "y"}, branch="old")
    assert ds.merge("old").kind == "merge"


def test_expire_deletes_orphans_past_the_grace_period_only(ds, backend):
    """A killed writer's data file (written, never committed) is deleted once it is older
    than the grace period; one written just now may belong to a commit in flight."""
    import pyarrow.parquet as pq

    table = ds._fresh()
    fresh = f"{table.location()}/data/in-flight.parquet"
    with table.io.new_output(fresh).create(overwrite=True) as handle:
        pq.write_table(_rows(["ghost"]), handle)
    kept = ds.expire(older_than=timedelta(days=1), orphan_grace=MIN_ORPHAN_GRACE)
    assert kept.snapshots == [] and kept.deleted_files == []
    # The same file once the grace period has passed (the clock moved instead of waiting).
    later = datetime.now(timezone.utc) + MIN_ORPHAN_GRACE + timedelta(seconds=1)
    gone = delete_unreferenced_files(ds._fresh(), MIN_ORPHAN_GRACE, dataset=ds.name, now=later)
    assert [p.rsplit("/", 1)[-1] for p in gone] == ["in-flight.parquet"]
    assert ds.read("main").num_rows == 4


def test_reader_is_refused_writes_and_nothing_is_written(ds, backend):
    ds.grant("rita", "reader")
    rita = open_dataset(ds.name, user="rita", settings=backend)
    assert rita.read("main").num_rows == 4  # readers read
    refs_before = ds.refs()
    snapshots_before = len(ds._fresh().metadata.snapshots)
    for attempt in (
        lambda: rita.label({"s1": "hacked"}, branch="main"),
        lambda: rita.label({"s1": "hacked"}),
        lambda: rita.branch("mine"),
        lambda: rita.append(_rows(["evil"]), branch="main"),
        lambda: rita.merge("main-copy"),
        lambda: rita.revert(ds.resolve("main").snapshot_id),
        lambda: rita.grant("rita", "owner"),
    ):
        with pytest.raises(PermissionDeniedError):
            attempt()
    assert ds.refs() == refs_before
    assert len(ds._fresh().metadata.snapshots) == snapshots_before
    assert _labels(ds)["s1"] == "a"
    denied = [e for e in ds.audit() if e.user == "rita"]
    assert len(denied) == 7 and {e.outcome for e in denied} == {"denied"}
    stranger = open_dataset(ds.name, user="mallory", settings=backend)
    with pytest.raises(PermissionDeniedError, match="has no role"):
        stranger.read("main")
    # Writers cannot revert or grant either; the last owner cannot be demoted.
    ds.grant("wendy", "writer")
    with pytest.raises(PermissionDeniedError):
        open_dataset(ds.name, user="wendy", settings=backend).revert("main")
    with pytest.raises(Exception, match="last owner"):
        ds.grant("alice", "reader")


def test_audit_records_every_write(ds):
    ds.branch("b1")
    ds.label({"s1": "q"}, branch="b1")
    ds.merge("b1")
    ds.tag("t1")
    operations = [(e.operation, e.outcome) for e in ds.audit()]
    assert operations[:4] == [("tag", "ok"), ("merge", "ok"), ("label", "ok"), ("branch", "ok")]
    assert ("create", "ok") in operations and ("import", "ok") in operations
    merge = ds.audit()[1]
    assert merge.user == "alice" and merge.snapshot_id == ds.resolve("main").snapshot_id and merge.ref == "main"


def test_version_lock_blocks_second_merge(ds, backend):
    ds.branch("x")
    ds.label({"s1": "x"}, branch="x")
    with version_lock(f"dataset:{ds.name}", "zoe (long merge)", backend):
        with pytest.raises(ConcurrentAccessError, match="zoe"):
            ds.merge("x")
        with pytest.raises(ConcurrentAccessError, match="zoe"):
            ds.revert("main", wait_s=0.3)
    assert _labels(ds)["s1"] == "a"  # the refused merge wrote nothing
    assert ds.merge("x", wait_s=5).kind == "fast-forward"


def _data_files(dataset) -> list[str]:
    """Every file under the table's data folder, local or on S3."""
    from pyarrow import fs as pafs

    table = dataset._fresh()
    scheme, netloc, path = table.io.parse_location(f"{table.location()}/data")
    filesystem = table.io.fs_by_scheme(scheme, netloc)
    infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)


def test_refused_append_leaves_no_data_files(ds, backend):
    """A duplicate-id append is refused before its commit; the files it wrote are removed."""
    before = _data_files(ds)
    assert before
    with pytest.raises(InvalidSamplesError, match="already has sample"):
        ds.append(_rows(["new-1", "s2"]), branch="main")
    assert _data_files(ds) == before
    assert "new-1" not in _labels(ds)
