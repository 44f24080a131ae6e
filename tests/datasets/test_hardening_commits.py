"""Datasets under faults and abuse: expire refuses a grace period that could delete files of
commits in flight; a role revoked during a commit refuses it; a commit and its audit row
survive a SIGKILL together or not at all; users' branches created while others commit to
main. Run as a script, this file is the body of the subprocesses those tests start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

SELF = str(Path(__file__).resolve())
ROOT = str(Path(__file__).resolve().parents[2])


def _rows(ids, value=0.0):
    from train_platform.datasets import build_samples

    return build_samples(list(ids), [np.full((3, 2), value + i, dtype=np.float32) for i, _ in enumerate(ids)])


@pytest.fixture
def ds(backend, ds_name):
    from train_platform.datasets import create_dataset

    dataset = create_dataset(ds_name, user="alice", settings=backend)
    dataset.append(_rows(["s1", "s2", "s3"]), branch="main")
    dataset.grant("bob", "writer")
    return dataset


def _spawn(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, SELF, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_line(proc: subprocess.Popen, expected: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == expected:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"worker exited before {expected}: {proc.stderr.read()}")
    raise AssertionError(f"worker did not print {expected} in {timeout} s")


# ----- expire's grace period ---------------------------------------------------------------
def test_min_grace_is_longer_than_the_longest_commit_retry_window():
    from train_platform.datasets.commits import CommitPolicy
    from train_platform.datasets.maintenance import MIN_ORPHAN_GRACE

    policy = CommitPolicy()
    sleeping = sum(policy.delay_s(attempt) for attempt in range(policy.max_attempts))
    # Room for a table re-read per attempt (several seconds each on a loaded machine) too.
    assert MIN_ORPHAN_GRACE.total_seconds() > sleeping + policy.max_attempts * 5


def test_expire_refuses_a_short_grace_and_does_nothing(ds, capsys):
    from train_platform.cli import main
    from train_platform.datasets.maintenance import InvalidExpireError

    for i in range(3):
        ds.label({"s1": f"v{i}"}, branch="main")
    snapshots = {s.snapshot_id for s in ds._fresh().metadata.snapshots}
    audit = len(ds.audit())
    with pytest.raises(InvalidExpireError, match=r"orphan_grace 5 minutes is shorter than the minimum of 30 minutes"):
        ds.expire(older_than=timedelta(0), retain_last=1, orphan_grace=timedelta(minutes=5))
    capsys.readouterr()
    code = main(["dataset", "expire", ds.name, "--older-than", "0", "--retain-last", "1", "--orphan-grace", "0", "--as", "alice"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--orphan-grace 0 minutes is shorter than the minimum of 30 minutes" in err and "Traceback" not in err
    assert {s.snapshot_id for s in ds._fresh().metadata.snapshots} == snapshots
    assert len(ds.audit()) == audit
    # At the minimum it runs.
    assert ds.expire(older_than=timedelta(0), retain_last=1, orphan_grace=timedelta(minutes=30)).snapshots


# ----- the role check and the commit -------------------------------------------------------
@pytest.mark.parametrize("revoked_to", [None, "reader"])
def test_a_role_revoked_during_a_commit_refuses_it(ds, backend, revoked_to):
    from train_platform.datasets import PermissionDeniedError, open_dataset
    from train_platform.datasets.access import RoleRevokedError

    bob = open_dataset(ds.name, user="bob", settings=backend)
    head = ds.resolve("main").snapshot_id
    revoked = []

    def revoke_while_bob_commits(row):
        # Runs while bob's label is staged, after bob's role was checked: the owner
        # revokes it now, from another connection.
        if not revoked:
            ds.grant("bob", revoked_to)
            revoked.append(True)
        return False

    with pytest.raises(RoleRevokedError, match="role changed during the operation") as caught:
        bob.annotate([{"sample_id": "s1", "label": "sneaky"}], branch="main", refuse_if=revoke_while_bob_commits)
    assert isinstance(caught.value, PermissionDeniedError) and caught.value.exit_code == 5
    assert revoked
    assert ds.resolve("main").snapshot_id == head
    labels = dict(zip(*[ds.read("main").column(c).to_pylist() for c in ("sample_id", "label")]))
    assert labels["s1"] is None
    bobs = [e for e in ds.audit() if e.user == "bob"]
    assert (bobs[0].operation, bobs[0].outcome, bobs[0].detail["at"], bobs[0].detail["role"]) == ("label", "denied", "commit", revoked_to)
    assert not [e for e in bobs if e.outcome == "ok"]


def test_every_commit_has_its_audit_row_and_every_row_its_commit(ds, backend):
    from train_platform.datasets import open_dataset

    bob = open_dataset(ds.name, user="bob", settings=backend)
    bob.label({"s2": "x"})  # creates user/bob, then labels it
    ds.tag("v1")
    bob.merge("user/bob")
    ds.revert("v1")
    rows = {(e.operation, e.ref, e.snapshot_id) for e in ds.audit() if e.outcome == "ok"}
    table = ds._fresh()
    for operation, ref, snapshot_id in rows:
        if snapshot_id is not None:
            assert table.snapshot_by_id(snapshot_id) is not None, (operation, ref)
    heads = {(e.operation, e.snapshot_id) for e in ds.log("main")}
    for operation, snapshot_id in heads:
        assert any(r[2] == snapshot_id for r in rows), (operation, snapshot_id)
    assert {("label", "user/bob"), ("branch", "user/bob"), ("tag", "v1"), ("merge", "main"), ("revert", "main")} <= {(r[0], r[1]) for r in rows}


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["before", "after"])
def test_sigkill_in_a_commit_leaves_commit_and_audit_row_together(ds, backend, moment):
    """Killed inside the catalog transaction (pointer swapped and audit row written, not
    committed): neither exists. Killed right after it committed: both exist."""
    from train_platform.datasets import open_dataset

    user = f"killed-{moment}"
    ds.grant(user, "writer")
    head = ds.resolve("main").snapshot_id
    proc = _spawn("hang-in-commit", moment, ds.name, user)
    try:
        _wait_line(proc, "IN-COMMIT" if moment == "before" else "COMMITTED")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    ds = open_dataset(ds.name, user="alice", settings=backend)
    new_head = ds.resolve("main").snapshot_id
    rows = [e for e in ds.audit() if e.user == user and e.operation == "label"]
    if moment == "before":
        assert new_head == head and rows == []
    else:
        assert new_head != head and ds.log("main")[0].user == user
        assert [(e.outcome, e.snapshot_id) for e in rows] == [("ok", new_head)]
    # The next commit works.
    ds.label({"s3": "after-the-kill"}, branch="main")
    assert ds.audit()[0].snapshot_id == ds.resolve("main").snapshot_id


# ----- users' branches created while main takes commits ------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["local", pytest.param("postgres", marks=pytest.mark.services)], indirect=True)
def test_user_branches_created_while_others_commit_to_main(backend, ds_name):
    from train_platform.datasets import create_dataset, open_dataset
    from train_platform.datasets.history import merge_base

    dataset = create_dataset(ds_name, user="alice", settings=backend)
    dataset.append(_rows([f"s{i}" for i in range(6)]), branch="main")
    groups = [["u0", "u1", "shared"], ["u2", "u3", "shared"], ["u4", "u5"]]
    for user in {u for group in groups for u in group}:
        dataset.grant(user, "writer")
    start = str(Path(backend.home) / "start")
    env_start = {"TP_START_FILE": start}
    os.environ.update(env_start)
    try:
        procs = [_spawn("user-branches", ds_name, *group) for group in groups]
        procs += [_spawn("append-main", ds_name, str(w), "6") for w in range(2)]
        for proc in procs:
            _wait_line(proc, "READY")
        Path(start).touch()  # everyone at once
        outputs = []
        for proc in procs:
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err
            outputs.append(out)
    finally:
        os.environ.pop("TP_START_FILE", None)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    ds = open_dataset(ds_name, user="alice", settings=backend)
    table = ds._fresh()
    main_head = table.metadata.refs["main"].snapshot_id
    main_ids = ds.read("main").column("sample_id").to_pylist()
    assert sorted(main_ids) == sorted([f"s{i}" for i in range(6)] + [f"w{w}-{i}" for w in range(2) for i in range(6)])
    assert len([e for e in ds.log("main") if e.operation == "append"]) == 13
    audit = ds.audit()
    for user in ("u0", "u1", "u2", "u3", "u4", "u5", "shared"):
        branch = f"user/{user}"
        assert branch in table.metadata.refs, branch
        head = table.metadata.refs[branch].snapshot_id
        assert merge_base(table, main_head, head) is not None  # started from a snapshot of main
        rows = ds.read(branch)
        labels = dict(zip(rows.column("sample_id").to_pylist(), rows.column("label").to_pylist()))
        expected = {"u0": "s0", "u1": "s1", "u2": "s2", "u3": "s3", "u4": "s4", "u5": "s5"}.get(user)
        if expected:
            assert labels[expected] == user
        else:  # both processes labelled their own sample on the one shared branch
            assert labels["s0"] == "shared-0" and labels["s2"] == "shared-1"
        created = [e for e in audit if e.operation == "branch" and e.ref == branch]
        assert [(e.outcome, e.user) for e in created] == [("ok", user)]
        assert len([e for e in audit if e.operation == "label" and e.ref == branch and e.outcome == "ok"]) == (2 if user == "shared" else 1)


# ----- subprocess bodies -------------------------------------------------------------------
def _worker(mode: str, args: list[str]) -> None:
    from train_platform.datasets import open_dataset

    if mode == "hang-in-commit":
        from sqlalchemy import event
        from sqlalchemy.orm import Session

        from train_platform.datasets import catalog

        moment, name, user = args
        dataset = open_dataset(name, user=user)

        def pause(session):  # type: ignore[no-untyped-def]
            hook = catalog._hook.get()
            if hook is not None and hook.handled:  # our commit's row is written (before) / committed (after)
                print("IN-COMMIT" if moment == "before" else "COMMITTED", flush=True)
                time.sleep(600)

        # Registered after the catalog's own hook, so it runs after the role check and the
        # audit row were executed in the transaction ("before") or after its commit ("after").
        event.listen(Session, "before_commit" if moment == "before" else "after_commit", pause)
        dataset.label({"s1": user}, branch="main")
        return
    name, rest = args[0], args[1:]

    def wait_for_start() -> None:
        print("READY", flush=True)
        start = os.environ.get("TP_START_FILE")
        while start and not os.path.exists(start):
            time.sleep(0.01)

    if mode == "user-branches":
        datasets = [open_dataset(name, user=user) for user in rest]
        wait_for_start()
        for dataset in datasets:
            if dataset.user == "shared":
                sample = "s0" if rest[0] == "u0" else "s2"
                dataset.label({sample: f"shared-{0 if sample == 's0' else 1}"})
            else:
                dataset.label({f"s{dataset.user[1:]}": dataset.user})
        print(json.dumps({"done": rest}), flush=True)
    elif mode == "append-main":
        worker, commits = rest[0], int(rest[1])
        dataset = open_dataset(name, user="alice")
        wait_for_start()
        for i in range(commits):
            dataset.append(_rows([f"w{worker}-{i}"]), branch="main")
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2:])
