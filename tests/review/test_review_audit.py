"""A review's commits and their audit rows are one catalog transaction, as the datasets'
own commits are (``Dataset.audited``, ``catalog.inside_commit``): when the audit row cannot
be written the reviewer's branch does not move (submit, branch creation, fast-forward and
rebase syncs), and a role revoked while a submit is being committed refuses it."""

from __future__ import annotations

import pytest

from tests.review.conftest import seed_dataset, series_of
from train_platform.datasets import open_dataset
from train_platform.datasets.access import AccessStore, RoleRevokedError
from train_platform.review.batches import load_batch
from train_platform.review.merging import merge_reviews
from train_platform.review.submit import submit_review


class AuditDown(Exception):
    """The audit table refusing a row (a full disk, a dropped connection)."""


def submit(seeded, reviewer, decisions):
    page = load_batch(seeded.name, "main", reviewer=reviewer, settings=seeded.settings)
    return submit_review(seeded.name, "main", decisions, reviewer=reviewer, review_snapshot=page.review_snapshot,
                         branch_snapshot=page.branch_snapshot, settings=seeded.settings)


def fail_audit_of(monkeypatch, *operations):
    """Make every audit row of ``operations`` fail to be written, in a commit or not."""
    original = AccessStore.record_in
    attempts = []

    def record_in(self, conn, dataset, user, operation, **kw):
        if operation in operations and kw.get("outcome", "ok") == "ok":
            attempts.append(operation)
            raise AuditDown(f"audit row {operation} refused")
        return original(self, conn, dataset, user, operation, **kw)

    monkeypatch.setattr(AccessStore, "record_in", record_in)
    return attempts


def heads(seeded):
    return {name: ref["snapshot_id"] for name, ref in
            open_dataset(seeded.name, user="alice", settings=seeded.settings).refs().items()}


def ok_rows(seeded, operation):
    return [e for e in open_dataset(seeded.name, user="alice", settings=seeded.settings).audit()
            if e.operation == operation and e.outcome == "ok"]


def test_a_submit_whose_audit_row_fails_leaves_the_branch_where_it_was(backend, monkeypatch):
    seeded = seed_dataset(backend)
    p = seeded.pending
    first = submit(seeded, "bob", [{"sample_id": p[0], "action": "accept"}])
    before = heads(seeded)
    assert before["user/bob"] == first.snapshot_id
    attempts = fail_audit_of(monkeypatch, "review")
    with pytest.raises(AuditDown):
        submit(seeded, "bob", [{"sample_id": p[1], "action": "correct", "label": "standing"}])
    assert attempts == ["review"]
    assert heads(seeded) == before, "the review commit was rolled back with its audit row"
    assert [e.snapshot_id for e in ok_rows(seeded, "review")] == [first.snapshot_id]
    monkeypatch.undo()
    again = submit(seeded, "bob", [{"sample_id": p[1], "action": "correct", "label": "standing"}])
    assert heads(seeded)["user/bob"] == again.snapshot_id != first.snapshot_id
    assert [e.snapshot_id for e in ok_rows(seeded, "review")] == [again.snapshot_id, first.snapshot_id]


def test_every_review_commit_has_its_audit_row(local):
    seeded = seed_dataset(local)
    p = seeded.pending
    results = [submit(seeded, "bob", [{"sample_id": p[i], "action": "accept"}]) for i in range(3)]
    rows = ok_rows(seeded, "review")
    assert [e.snapshot_id for e in rows] == [r.snapshot_id for r in reversed(results)]
    assert all(e.ref == "user/bob" and e.user == "bob" for e in rows)
    log = open_dataset(seeded.name, user="alice", settings=local).log("user/bob")
    committed = {entry.snapshot_id for entry in log if entry.operation == "review"}
    assert committed == {r.snapshot_id for r in results}


def test_a_skip_only_submit_writes_no_commit_and_is_still_audited(local):
    seeded = seed_dataset(local)
    p = seeded.pending
    submit(seeded, "bob", [{"sample_id": p[0], "action": "accept"}])
    before = heads(seeded)
    result = submit(seeded, "bob", [{"sample_id": p[1], "action": "skip"}])
    assert result.snapshot_id is None and heads(seeded) == before
    newest = ok_rows(seeded, "review")[0]
    assert (newest.snapshot_id, newest.detail["skipped"]) == (None, [p[1]])


def test_a_role_revoked_while_a_submit_commits_refuses_it(local, monkeypatch):
    import train_platform.review.submit as submit_module

    seeded = seed_dataset(local)
    p = seeded.pending
    submit(seeded, "bob", [{"sample_id": p[0], "action": "accept"}])
    before = heads(seeded)
    owner = open_dataset(seeded.name, user="alice", settings=local)
    original = submit_module.commit_properties
    revoked = []

    def revoke_then_properties(*args, **kw):
        # Called while bob's commit is being staged, after his role was checked.
        if not revoked:
            owner.grant("bob", "reader")
            revoked.append(True)
        return original(*args, **kw)

    monkeypatch.setattr(submit_module, "commit_properties", revoke_then_properties)
    with pytest.raises(RoleRevokedError, match="role changed during the operation"):
        submit(seeded, "bob", [{"sample_id": p[1], "action": "accept"}])
    assert revoked and heads(seeded) == before
    bobs = [e for e in owner.audit() if e.user == "bob" and e.operation == "review"]
    assert (bobs[0].outcome, bobs[0].detail["at"], bobs[0].detail["role"]) == ("denied", "commit", "reader")
    assert len([e for e in bobs if e.outcome == "ok"]) == 1


def test_creating_the_reviewers_branch_and_its_audit_row_go_together(local, monkeypatch):
    seeded = seed_dataset(local)
    before = heads(seeded)
    attempts = fail_audit_of(monkeypatch, "branch")
    with pytest.raises(AuditDown):
        submit(seeded, "bob", [{"sample_id": seeded.pending[0], "action": "accept"}])
    assert attempts == ["branch"]
    assert heads(seeded) == before and "user/bob" not in before
    monkeypatch.undo()
    result = submit(seeded, "bob", [{"sample_id": seeded.pending[0], "action": "accept"}])
    created = ok_rows(seeded, "branch")
    assert [(e.ref, e.user) for e in created if e.ref == "user/bob"] == [("user/bob", "bob")]
    assert result.sync["kind"] == "created"


def test_a_sync_whose_audit_row_fails_does_not_move_the_branch(local, monkeypatch):
    from train_platform.datasets import build_samples
    import numpy as np

    seeded = seed_dataset(local, pending=4)
    p = seeded.pending
    submit(seeded, "alice", [{"sample_id": p[2], "action": "accept"}])
    submit(seeded, "bob", [{"sample_id": p[0], "action": "accept"}])
    merge_reviews(seeded.name, "main", actor="alice", settings=local)
    # Bob's branch is merged and main moved on: the next submit fast-forwards it.
    before = heads(seeded)
    attempts = fail_audit_of(monkeypatch, "review-sync")
    with pytest.raises(AuditDown):
        submit(seeded, "bob", [{"sample_id": p[1], "action": "accept"}])
    assert attempts == ["review-sync"] and heads(seeded) == before
    monkeypatch.undo()
    assert submit(seeded, "bob", [{"sample_id": p[1], "action": "accept"}]).sync["kind"] == "fast-forward"
    # Bob's review is not merged and new samples reach main: the next submit rebases.
    ds = open_dataset(seeded.name, user="alice", settings=local)
    rng = np.random.default_rng(3)
    ds.append(build_samples(["late-000"], [series_of("walking", rng)], labels=["walking"], label_source="model",
                            confidence=[0.8], status="pending"), branch="main")
    before = heads(seeded)
    attempts = fail_audit_of(monkeypatch, "review-sync")
    with pytest.raises(AuditDown):
        submit(seeded, "bob", [{"sample_id": "late-000", "action": "accept"}])
    assert attempts == ["review-sync"]
    assert heads(seeded) == before, "neither bob's branch nor a scratch branch is left moved"
    monkeypatch.undo()
    assert submit(seeded, "bob", [{"sample_id": "late-000", "action": "accept"}]).sync["kind"] == "rebased"
    synced = ok_rows(seeded, "review-sync")
    assert [e.detail["kind"] for e in synced] == ["rebased", "fast-forward"]
    moved = {e.snapshot_id for e in synced}
    table = ds._fresh()
    assert all(table.snapshot_by_id(sid) is not None for sid in moved)
