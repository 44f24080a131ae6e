"""The pieces ``Dataset`` is built from, tested on their own: ref names, the commit-retry
loop against a real rival writer, the commit log's grouping of an overwrite, and the
retention policy of expire."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from train_platform.datasets import CommitRetriesExhaustedError, DatasetError, build_samples, create_dataset, open_dataset
from train_platform.datasets.commits import CommitPolicy, commit_properties, commit_with_retries
from train_platform.datasets.history import commit_log, merge_base
from train_platform.datasets.maintenance import snapshots_to_expire
from train_platform.datasets.refs import MAIN, check_ref_name, parse_ref, user_branch

LOCAL = pytest.mark.parametrize("backend", ["local"], indirect=True)


def _rows(ids):
    return build_samples(ids, [np.full((2, 1), i, dtype=np.float32) for i, _ in enumerate(ids)])


def test_ref_names():
    assert parse_ref("tp://vib@v1") == ("vib", "v1")
    assert parse_ref("vib") == ("vib", None)
    assert parse_ref("vib@4212849791584150724") == ("vib", "4212849791584150724")
    with pytest.raises(DatasetError, match="nothing after '@'"):
        parse_ref("vib@")
    with pytest.raises(DatasetError, match="dataset name"):
        parse_ref("Vib@main")

    assert user_branch("bob") == "user/bob"
    assert user_branch("eve@example.com") == "user/eve-example.com"
    assert user_branch("@@") == "user/anonymous"

    assert check_ref_name("user/bob") == "user/bob"
    assert check_ref_name("v1.0_rc-2") == "v1.0_rc-2"
    for bad in ("123", "a..b", "-x", "/x", "", "x" * 129, "a b"):
        with pytest.raises(DatasetError, match="ref name"):
            check_ref_name(bad)


def test_backoff_doubles_up_to_the_cap():
    policy = CommitPolicy(base_delay_s=0.1, max_delay_s=2.0)
    assert [round(policy.delay_s(a), 3) for a in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    assert policy.delay_s(10_000) == 2.0


def test_commit_properties_name_a_new_commit_each_call():
    first = commit_properties("alice", "label", None, {"tp.merged-head": "7"})
    second = commit_properties("alice", "label", "why")
    assert first["tp.user"] == "alice" and first["tp.operation"] == "label" and first["tp.message"] == "label"
    assert first["tp.merged-head"] == "7" and second["tp.message"] == "why"
    assert first["tp.commit"] != second["tp.commit"]


def _racing_commit(name, settings, rival_wins: int, policy: CommitPolicy):
    """Commit ``ours`` to main while a rival commits to main inside the first
    ``rival_wins`` attempts, after the attempt read the table: those attempts lose."""
    ours = open_dataset(name, user="alice", settings=settings)
    rival = open_dataset(name, user="alice", settings=settings)
    attempts, lost = [], []

    def table_for_attempt(attempt):
        attempts.append(attempt)
        return ours._table.refresh()

    def write(table, txn, props):
        if len(attempts) <= rival_wins:
            rival.append(_rows([f"rival{len(attempts)}"]), branch=MAIN)
        txn.append(_rows(["ours"]), snapshot_properties=props, branch=MAIN)

    committed = commit_with_retries(
        table_for_attempt,
        write,
        lambda: commit_properties("alice", "append", "ours"),
        policy=policy,
        what=f"{name}@main: append",
        on_lost_race=lambda: lost.append(1),
    )
    return committed, attempts, len(lost)


@LOCAL
def test_a_lost_race_is_recomputed_on_the_new_head(backend, ds_name):
    create_dataset(ds_name, user="alice", source=_rows(["s1"]), settings=backend)
    policy = CommitPolicy(max_attempts=5, base_delay_s=0.0, max_delay_s=0.0)
    committed, attempts, lost = _racing_commit(ds_name, backend, rival_wins=2, policy=policy)
    assert attempts == [0, 1, 2] and lost == 2
    ids = set(open_dataset(ds_name, user="alice", settings=backend).read("main").column("sample_id").to_pylist())
    assert ids == {"s1", "rival1", "rival2", "ours"}  # no row lost on either side
    head = committed.snapshot_by_name(MAIN)
    assert head.summary["tp.message"] == "ours"


@LOCAL
def test_out_of_retries_writes_nothing(backend, ds_name):
    create_dataset(ds_name, user="alice", source=_rows(["s1"]), settings=backend)
    policy = CommitPolicy(max_attempts=3, base_delay_s=0.0, max_delay_s=0.0)
    with pytest.raises(CommitRetriesExhaustedError, match=rf"{ds_name}@main: append lost 3 commit races"):
        _racing_commit(ds_name, backend, rival_wins=99, policy=policy)
    ids = open_dataset(ds_name, user="alice", settings=backend).read("main").column("sample_id").to_pylist()
    assert sorted(ids) == ["rival1", "rival2", "rival3", "s1"]


@LOCAL
def test_log_shows_an_overwrite_as_one_commit(backend, ds_name):
    ds = create_dataset(ds_name, user="alice", source=_rows(["s1", "s2"]), settings=backend)
    before = ds.resolve(MAIN).snapshot_id
    ds.label({"s1": "x"}, branch=MAIN)  # copy-on-write: a delete snapshot, then an append snapshot
    table = ds._fresh()
    head = table.snapshot_by_name(MAIN)
    assert head.parent_snapshot_id != before  # two snapshots ...
    entries = commit_log(table, head)
    assert [e.operation for e in entries] == ["label", "import", "create"]  # ... one entry
    assert entries[0].parent_id == before == entries[1].snapshot_id
    assert [e.snapshot_id for e in commit_log(table, head, limit=1)] == [head.snapshot_id]


@LOCAL
def test_retention_keeps_heads_tags_the_newest_and_merge_chains(backend, ds_name):
    ds = create_dataset(ds_name, user="alice", source=_rows(["s0"]), settings=backend)
    tagged = ds.resolve(MAIN).snapshot_id
    ds.tag("v1")
    ds.branch("side")
    for i in range(1, 4):
        ds.append(_rows([f"m{i}"]), branch=MAIN)
    ds.append(_rows(["b1"]), branch="side")
    table = ds._fresh()
    main_history = [e.snapshot_id for e in commit_log(table, table.snapshot_by_name(MAIN))]
    assert merge_base(table, main_history[0], table.metadata.refs["side"].snapshot_id) == tagged

    # Young snapshots are never expired.
    assert snapshots_to_expire(table, older_than=timedelta(days=1), retain_last=1) == []
    # All old, one kept per branch: still kept are both chains back to side's merge base
    # with main (m3, m2, m1 and the tagged import; b1), so only the first, empty snapshot
    # of create goes.
    assert [e.operation for e in commit_log(table, table.snapshot_by_name(MAIN))] == ["append"] * 3 + ["import", "create"]
    assert snapshots_to_expire(table, older_than=timedelta(0), retain_last=1) == [main_history[-1]]
    # Without the branch only main's head and the tagged snapshot are kept; b1, on no ref
    # any more, goes too.
    ds._fresh().manage_snapshots().remove_branch("side").commit()
    table = ds._fresh()
    every = {s.snapshot_id for s in table.metadata.snapshots}
    assert set(snapshots_to_expire(table, older_than=timedelta(0), retain_last=1)) == every - {main_history[0], tagged}
