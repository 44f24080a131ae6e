"""The review room on real datasets: batches, submits to the reviewer's own branch, bad
input and stale pages refused with nothing written, reviewers at once, merging on approval,
the reviewer's branch kept on top of main."""

from __future__ import annotations

import json
import threading

import pytest

from tests.review.conftest import CLASSES, seed_dataset
from train_platform.datasets import open_dataset
from train_platform.datasets.exceptions import DatasetNotFoundError, PermissionDeniedError, RefNotFoundError
from train_platform.review.batches import load_batch
from train_platform.review.exceptions import (
    InvalidDecisionError,
    NotInBatchError,
    ReviewConflictError,
    StaleReviewError,
    UnknownLabelError,
)
from train_platform.review.journal import ReviewJournal
from train_platform.review.merging import merge_reviews
from train_platform.review.submit import bulk_accept, submit_review


def rows_by_id(name, ref, settings, user="alice"):
    table = open_dataset(name, user=user, settings=settings).read(ref)
    return {r["sample_id"]: r for r in table.to_pylist()}


def submit(seeded, reviewer, decisions, branch="main", batch=None):
    """Submit as the page does: with the snapshots of a page rendered just now."""
    page = batch or load_batch(seeded.name, branch, reviewer=reviewer, settings=seeded.settings)
    return submit_review(seeded.name, branch, decisions, reviewer=reviewer, review_snapshot=page.review_snapshot,
                         branch_snapshot=page.branch_snapshot, settings=seeded.settings)


def open_request(seeded, branch="main", **kw):
    return ReviewJournal(seeded.settings.catalog_uri).open_request(
        dataset=seeded.name, review_branch=branch, batch_id=kw.get("batch_id"),
        allow_new_classes=kw.get("allow_new_classes", False), check_report=kw.get("check_report"),
        dag_id="d", run_id="r", task_id="review", created_by="alice")


def test_a_batch_is_the_pending_samples_with_their_prelabels_label_set_and_progress(local):
    seeded = seed_dataset(local)
    batch = load_batch(seeded.name, "main", reviewer="alice", limit=4, settings=local)
    assert batch.ids == seeded.pending and batch.total == 6
    assert [s.sample_id for s in batch.samples] == seeded.pending[:4]
    first = batch.samples[0]
    assert first.model_label == seeded.model_labels[first.sample_id] and first.confidence == seeded.confidence[first.sample_id]
    assert first.series.shape == (60, 3) and first.label_source == "model"
    assert batch.labels == sorted(CLASSES) and batch.allow_new_classes is False
    assert batch.batch_ids == ["b1", "b2"] and batch.can_label
    assert batch.review_snapshot == open_dataset(seeded.name, user="alice", settings=local).resolve("main").snapshot_id
    assert batch.branch == "user/alice" and batch.branch_snapshot is None
    assert (batch.reviewed_by_me, batch.reviewed_by_anyone) == (0, 0)
    second_page = load_batch(seeded.name, "main", reviewer="alice", offset=4, limit=4, settings=local)
    assert [s.sample_id for s in second_page.samples] == seeded.pending[4:]
    only_b1 = load_batch(seeded.name, "main", reviewer="alice", batch_id="b1", settings=local)
    assert only_b1.ids == seeded.pending[:3]
    reader = load_batch(seeded.name, "main", reviewer="carol", settings=local)
    assert reader.role == "reader" and not reader.can_label


def test_an_unknown_dataset_or_branch_or_a_stranger_is_refused(local):
    seeded = seed_dataset(local)
    with pytest.raises(DatasetNotFoundError, match="no dataset named 'nope'"):
        load_batch("nope", "main", reviewer="alice", settings=local)
    with pytest.raises(RefNotFoundError, match=r"review branch 'relabel' does not exist \(branches: main\)"):
        load_batch(seeded.name, "relabel", reviewer="alice", settings=local)
    with pytest.raises(PermissionDeniedError):
        load_batch(seeded.name, "main", reviewer="mallory", settings=local)


def test_a_submit_lands_on_the_reviewers_branch_with_them_as_annotator_and_in_the_audit(backend):
    seeded = seed_dataset(backend)
    p = seeded.pending
    result = submit(seeded, "bob", [
        {"sample_id": p[0], "action": "accept"}, {"sample_id": p[1], "action": "accept"},
        {"sample_id": p[2], "action": "accept"}, {"sample_id": p[3], "action": "correct", "label": "standing"},
        {"sample_id": p[4], "action": "reject"}, {"sample_id": p[5], "action": "skip"},
    ])
    assert result.branch == "user/bob" and result.sync["kind"] == "created" and result.snapshot_id is not None
    assert result.accepted == p[:3] and result.corrected == {p[3]: "standing"} and result.rejected == [p[4]]
    bob = rows_by_id(seeded.name, "user/bob", backend)
    for sample_id in p[:3]:
        row = bob[sample_id]
        assert (row["label"], row["status"], row["label_source"], row["annotator"], row["confidence"]) == \
            (seeded.model_labels[sample_id], "confirmed", "human", "bob", None)
    assert (bob[p[3]]["label"], bob[p[3]]["annotator"], bob[p[3]]["status"]) == ("standing", "bob", "confirmed")
    assert p[4] not in bob
    assert (bob[p[5]]["status"], bob[p[5]]["label_source"]) == ("pending", "model")
    main = rows_by_id(seeded.name, "main", backend)
    assert all(main[i]["status"] == "pending" for i in p), "main is untouched until the merge"
    entry = next(a for a in open_dataset(seeded.name, user="alice", settings=backend).audit() if a.operation == "review")
    assert (entry.user, entry.ref, entry.outcome, entry.snapshot_id) == ("bob", "user/bob", "ok", result.snapshot_id)
    assert entry.detail["accepted"] == p[:3] and entry.detail["corrected"] == {p[3]: "standing"}
    assert entry.detail["rejected"] == [p[4]] and entry.detail["skipped"] == [p[5]]
    batch = load_batch(seeded.name, "main", reviewer="bob", settings=backend)
    assert (batch.reviewed_by_me, batch.branch_snapshot) == (5, result.snapshot_id)
    assert batch.samples[3].decision_of("bob").label == "standing"
    assert batch.samples[5].decision_of("bob").action == "skip"


def test_a_reader_cannot_submit_and_the_refusal_is_audited(local):
    seeded = seed_dataset(local)
    with pytest.raises(PermissionDeniedError, match="review needs writer"):
        submit(seeded, "carol", [{"sample_id": seeded.pending[0], "action": "accept"}])
    ds = open_dataset(seeded.name, user="alice", settings=local)
    assert "user/carol" not in ds.refs()
    denied = ds.audit(1)[0]
    assert (denied.user, denied.operation, denied.outcome) == ("carol", "review", "denied")


@pytest.mark.parametrize("decisions, error, text", [
    ([{"sample_id": "new-000", "action": "correct", "label": "flying"}], UnknownLabelError,
     r"'flying' not in the label set \(running, standing, walking\); this review does not allow new classes"),
    ([{"sample_id": "rec-000", "action": "accept"}], NotInBatchError, "not awaiting review there: rec-000"),
    ([{"sample_id": "ghost", "action": "reject"}], NotInBatchError, "ghost"),
    ([{"sample_id": "new-000", "action": "correct"}], InvalidDecisionError, "needs a label"),
    ([{"sample_id": "new-000", "action": "approve"}], InvalidDecisionError, "action 'approve' is not one of"),
    ([{"sample_id": "new-000", "action": "accept"}, {"sample_id": "new-000", "action": "reject"}],
     InvalidDecisionError, "decided twice"),
    ([{"sample_id": "new-000", "action": "correct", "label": "  "}], InvalidDecisionError, "non-empty"),
    ([], InvalidDecisionError, "no decisions"),
])
def test_bad_input_is_refused_with_a_clear_message_and_nothing_written(local, decisions, error, text):
    seeded = seed_dataset(local)
    # One good decision next to the bad one: the whole submit is refused.
    good = [{"sample_id": "new-001", "action": "accept"}] if decisions and decisions[0]["sample_id"] != "new-001" else []
    with pytest.raises(error, match=text):
        submit(seeded, "bob", good + decisions)
    assert "user/bob" not in open_dataset(seeded.name, user="alice", settings=local).refs()
    assert ReviewJournal(local.catalog_uri).decisions(seeded.name, "main") == []


def test_the_page_must_send_the_snapshot_it_was_rendered_from(local):
    seeded = seed_dataset(local)
    for snapshot, text in ((None, "review_snapshot is missing"), ("12ab", "is not a snapshot id"),
                           (123456789, "does not exist")):
        with pytest.raises(InvalidDecisionError, match=text):
            submit_review(seeded.name, "main", [{"sample_id": "new-000", "action": "accept"}], reviewer="bob",
                          review_snapshot=snapshot, branch_snapshot=None, settings=local)


def test_a_new_class_is_taken_only_when_the_review_allows_new_classes(local):
    seeded = seed_dataset(local)
    with pytest.raises(UnknownLabelError):
        submit(seeded, "bob", [{"sample_id": "new-000", "action": "correct", "label": "jumping"}])
    open_request(seeded, allow_new_classes=True)
    assert load_batch(seeded.name, "main", reviewer="bob", settings=local).allow_new_classes
    submit(seeded, "bob", [{"sample_id": "new-000", "action": "correct", "label": "jumping"}])
    assert rows_by_id(seeded.name, "user/bob", local)["new-000"]["label"] == "jumping"


def test_a_stale_page_cannot_overwrite_newer_labels(local):
    seeded = seed_dataset(local)
    first_tab = load_batch(seeded.name, "main", reviewer="bob", settings=local)
    second_tab = load_batch(seeded.name, "main", reviewer="bob", settings=local)
    submit(seeded, "bob", [{"sample_id": "new-000", "action": "correct", "label": "running"}], batch=first_tab)
    head = open_dataset(seeded.name, user="bob", settings=local).resolve("user/bob").snapshot_id
    with pytest.raises(StaleReviewError, match=r"user/bob changed since the page was loaded, for sample\(s\) new-000"):
        submit(seeded, "bob", [{"sample_id": "new-000", "action": "accept"}], batch=second_tab)
    ds = open_dataset(seeded.name, user="alice", settings=local)
    assert ds.resolve("user/bob").snapshot_id == head
    assert rows_by_id(seeded.name, "user/bob", local)["new-000"]["label"] == "running"
    refused = ds.audit(1)[0]
    assert (refused.operation, refused.outcome, refused.detail["stale"]) == ("review", "conflict", ["new-000"])
    # The same stale page may still decide samples nobody touched since.
    submit(seeded, "bob", [{"sample_id": "new-001", "action": "accept"}], batch=second_tab)
    # Newer labels on the review branch itself make a page stale too.
    page = load_batch(seeded.name, "main", reviewer="bob", settings=local)
    ds.label({"new-002": "walking"}, branch="main")
    with pytest.raises(StaleReviewError, match=r"@main changed since the page was loaded, for sample\(s\) new-002"):
        submit(seeded, "bob", [{"sample_id": "new-002", "action": "accept"}], batch=page)


def test_two_reviewers_at_once_lose_nothing_and_their_disagreement_shows(backend):
    seeded = seed_dataset(backend)
    p = seeded.pending
    plans = {
        "alice": [{"sample_id": p[0], "action": "accept"}, {"sample_id": p[1], "action": "correct", "label": "standing"},
                  {"sample_id": p[2], "action": "reject"}],
        "bob": [{"sample_id": p[0], "action": "accept"}, {"sample_id": p[1], "action": "accept"},
                {"sample_id": p[3], "action": "accept"}],
    }
    pages = {who: load_batch(seeded.name, "main", reviewer=who, settings=backend) for who in plans}
    errors = []

    def review(who):
        try:
            submit(seeded, who, plans[who], batch=pages[who])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=review, args=(who,)) for who in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    alice, bob = rows_by_id(seeded.name, "user/alice", backend), rows_by_id(seeded.name, "user/bob", backend)
    assert (alice[p[1]]["label"], alice[p[1]]["annotator"]) == ("standing", "alice") and p[2] not in alice
    assert (bob[p[1]]["label"], bob[p[3]]["label"]) == (seeded.model_labels[p[1]], seeded.model_labels[p[3]])
    batch = load_batch(seeded.name, "main", reviewer="alice", settings=backend)
    assert list(batch.disagreements) == [p[1]]
    assert batch.disagreements[p[1]]["alice"]["label"] == "standing"
    bob_holds = batch.disagreements[p[1]]["bob"]
    assert (bob_holds["action"], bob_holds["label"]) == ("accept", seeded.model_labels[p[1]])
    assert batch.reviewed_by_anyone == 4


def test_approval_merges_the_reviewers_branches_only_when_they_agree(backend):
    seeded = seed_dataset(backend)
    p = seeded.pending
    submit(seeded, "alice", [{"sample_id": p[0], "action": "accept"}, {"sample_id": p[1], "action": "correct", "label": "standing"},
                             {"sample_id": p[2], "action": "reject"}])
    submit(seeded, "bob", [{"sample_id": p[1], "action": "accept"}, {"sample_id": p[3], "action": "accept"}])
    main_before = open_dataset(seeded.name, user="alice", settings=backend).resolve("main").snapshot_id
    with pytest.raises(ReviewConflictError, match=rf"review conflicts on 1 sample\(s\): {p[1]}; nothing was merged") as caught:
        merge_reviews(seeded.name, "main", actor="alice", settings=backend)
    assert caught.value.samples[p[1]]["bob"]["label"] == seeded.model_labels[p[1]]
    assert open_dataset(seeded.name, user="alice", settings=backend).resolve("main").snapshot_id == main_before
    # bob changes his mind on the page: the reviewers agree, the merge goes through.
    submit(seeded, "bob", [{"sample_id": p[1], "action": "correct", "label": "standing"}])
    result = merge_reviews(seeded.name, "main", actor="alice", approver="alice", settings=backend)
    assert result.reviewers == ["alice", "bob"] and [m["branch"] for m in result.merged] == ["user/alice", "user/bob"]
    main = rows_by_id(seeded.name, "main", backend)
    assert (main[p[0]]["label"], main[p[0]]["annotator"], main[p[0]]["status"]) == (seeded.model_labels[p[0]], "alice", "confirmed")
    assert main[p[1]]["label"] == "standing" and p[2] not in main
    assert (main[p[3]]["annotator"], main[p[3]]["status"]) == ("bob", "confirmed")
    assert main[p[4]]["status"] == "pending"
    assert load_batch(seeded.name, "main", reviewer="alice", settings=backend).ids == p[4:]


def test_a_reviewers_branch_that_conflicts_with_main_fails_the_merge_naming_the_samples(local):
    seeded = seed_dataset(local)
    p = seeded.pending
    submit(seeded, "bob", [{"sample_id": p[0], "action": "accept"}, {"sample_id": p[1], "action": "accept"}])
    # Someone labels p[0] directly on main, differently, after bob's review.
    open_dataset(seeded.name, user="alice", settings=local).label({p[0]: "standing"}, branch="main")
    with pytest.raises(ReviewConflictError, match=rf"conflicts on 1 sample\(s\): {p[0]}") as caught:
        merge_reviews(seeded.name, "main", actor="alice", settings=local)
    sides = caught.value.samples[p[0]]
    assert sides["main"]["label"] == "standing" and sides["bob"]["label"] == seeded.model_labels[p[0]]
    assert caught.value.merged == []
    assert rows_by_id(seeded.name, "main", local)[p[1]]["status"] == "pending"


def test_a_review_branch_other_than_main(local):
    seeded = seed_dataset(local, review_branch="review/b1")
    p = seeded.pending
    batch = load_batch(seeded.name, "review/b1", reviewer="bob", settings=local)
    assert batch.ids == p and batch.samples[0].model_label == seeded.model_labels[p[0]]
    submit(seeded, "bob", [{"sample_id": p[0], "action": "accept"}, {"sample_id": p[1], "action": "reject"}],
           branch="review/b1")
    merge_reviews(seeded.name, "review/b1", actor="alice", settings=local)
    main = rows_by_id(seeded.name, "main", local)
    assert (main[p[0]]["label"], main[p[0]]["status"], main[p[0]]["annotator"]) == (seeded.model_labels[p[0]], "confirmed", "bob")
    assert p[1] not in main and main[p[2]]["status"] == "raw"
    # Merged reviews leave the batch, though the review branch still holds them pending.
    assert load_batch(seeded.name, "review/b1", reviewer="alice", settings=local).ids == p[2:]
    assert rows_by_id(seeded.name, "review/b1", local)[p[0]]["status"] == "pending"
    stale = batch
    with pytest.raises(StaleReviewError, match="their review was merged"):
        submit(seeded, "alice", [{"sample_id": p[0], "action": "correct", "label": "standing"}], branch="review/b1",
               batch=stale)


def test_the_reviewers_branch_is_kept_on_top_of_main(local):
    from train_platform.datasets import build_samples
    from tests.review.conftest import series_of
    import numpy as np

    seeded = seed_dataset(local, pending=4)
    p = seeded.pending
    submit(seeded, "alice", [{"sample_id": p[2], "action": "accept"}])
    submit(seeded, "bob", [{"sample_id": p[0], "action": "accept"}])
    merge_reviews(seeded.name, "main", actor="alice", settings=local)
    # Merged, and main moved on (alice's review): the next submit fast-forwards bob's branch.
    assert submit(seeded, "bob", [{"sample_id": p[1], "action": "accept"}]).sync["kind"] == "fast-forward"
    # A review that was never merged (a rejected run), then new samples reach main.
    ds = open_dataset(seeded.name, user="alice", settings=local)
    rng = np.random.default_rng(3)
    ds.append(build_samples(["late-000", "late-001"], [series_of("walking", rng), series_of("running", rng)],
                            labels=["walking", "running"], label_source="model", confidence=[0.8, 0.7],
                            status="pending"), branch="main")
    result = submit(seeded, "bob", [{"sample_id": "late-000", "action": "accept"},
                                    {"sample_id": "late-001", "action": "correct", "label": "standing"}])
    assert result.sync["kind"] == "rebased"
    bob = rows_by_id(seeded.name, "user/bob", local)
    assert bob[p[1]]["annotator"] == "bob" and bob["late-001"]["label"] == "standing"
    assert not [r for r in ds.refs() if ".rebase-" in r], "the scratch branch is removed"
    merge_reviews(seeded.name, "main", actor="alice", settings=local)
    main = rows_by_id(seeded.name, "main", local)
    assert (main[p[1]]["annotator"], main["late-000"]["annotator"], main["late-001"]["label"]) == ("bob", "bob", "standing")
    sync = [a for a in ds.audit() if a.operation == "review-sync"]
    assert [a.detail["kind"] for a in sync] == ["rebased", "fast-forward"]


def test_accept_all_above_a_confidence(local):
    seeded = seed_dataset(local)
    p = seeded.pending  # confidences 0.99, 0.90, 0.81, ...
    submit(seeded, "bob", [{"sample_id": p[0], "action": "correct", "label": "running"}])
    page = load_batch(seeded.name, "main", reviewer="bob", settings=local)
    result = bulk_accept(seeded.name, "main", reviewer="bob", min_confidence=0.85, review_snapshot=page.review_snapshot,
                         branch_snapshot=page.branch_snapshot, settings=local)
    assert result.accepted == [p[1]], "the decided sample keeps its correction"
    bob = rows_by_id(seeded.name, "user/bob", local)
    assert (bob[p[0]]["label"], bob[p[1]]["status"], bob[p[2]]["status"]) == ("running", "confirmed", "pending")
    with pytest.raises(InvalidDecisionError, match="no sample you have not decided yet has a model confidence of at least 0.95"):
        bulk_accept(seeded.name, "main", reviewer="bob", min_confidence=0.95, review_snapshot=page.review_snapshot,
                    branch_snapshot=None, settings=local)


def test_a_check_report_named_by_the_review_step_shows_on_its_samples(local, tmp_path):
    seeded = seed_dataset(local)
    report = tmp_path / "check"
    report.mkdir()
    (report / "check.json").write_text(json.dumps({
        "dataset": seeded.name, "snapshot_id": 1, "score": 0.81, "passed": False,
        "checks": [{"name": "flat_channels", "success": False, "sample_ids": ["new-001"], "description": "a channel is flat"},
                   {"name": "length", "success": True, "sample_ids": []}],
        "label_issues": [{"sample_id": "new-002", "given": "standing", "suggested": "walking", "confidence": 0.93}],
    }))
    open_request(seeded, check_report=str(report))
    batch = load_batch(seeded.name, "main", reviewer="alice", settings=local)
    by_id = {s.sample_id: s for s in batch.samples}
    assert [(f.kind, f.name) for f in by_id["new-001"].findings] == [("check", "flat_channels")]
    assert "suggests 'walking' (93%)" in by_id["new-002"].findings[0].message
    assert by_id["new-000"].findings == [] and batch.findings.score == 0.81
    open_request(seeded, check_report=str(tmp_path / "missing"))
    broken = load_batch(seeded.name, "main", reviewer="alice", settings=local)
    assert "cannot be read" in broken.findings.error and broken.samples[1].findings == []


def test_reviewers_first_submits_at_the_same_moment_all_land(backend, tmp_path):
    """Four reviewers without a branch yet submit in four processes at once: each first
    submit creates its own branch (lost commit races against the others' branch creations
    are retried, not taken for the branch existing) and lands there."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    seeded = seed_dataset(backend, writers=("bob", "dave", "erin"))
    reviewers = ["alice", "bob", "dave", "erin"]
    start = tmp_path / "go"
    worker = Path(__file__).with_name("_first_submit.py")
    root = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, str(worker), seeded.name, who, str(start), *seeded.pending[:3]],
                              cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(root)})
             for who in reviewers]
    for proc in procs:
        assert proc.stdout.readline().strip() == "READY", proc.stderr.read()
    start.touch()
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        outcomes.append(json.loads(out.strip().splitlines()[-1]))
    assert [o["sync"] for o in outcomes] == ["created"] * 4
    ds = open_dataset(seeded.name, user="alice", settings=backend)
    refs = ds.refs()
    for who in reviewers:
        rows = rows_by_id(seeded.name, f"user/{who}", backend)
        assert {i: (rows[i]["label"], rows[i]["annotator"]) for i in seeded.pending[:3]} == {
            i: (seeded.model_labels[i], who) for i in seeded.pending[:3]}
        assert str(refs[f"user/{who}"]["snapshot_id"]) in {o["snapshot_id"] for o in outcomes}
    created = [e for e in ds.audit() if e.operation == "branch" and e.ref in {f"user/{w}" for w in reviewers}]
    assert sorted(e.ref for e in created) == sorted(f"user/{w}" for w in reviewers)
