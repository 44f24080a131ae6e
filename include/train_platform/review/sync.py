"""Keeping a reviewer's own branch on top of main before their decisions are committed.

A reviewer's branch (``user/<name>``) starts from main and reaches main again through a
merge. Samples added to main after the branch started are not on it, and a decision on
such a sample would add it to the branch a second time, in a different state: the next
merge would report a conflict on every such sample. So, before each submit:

* **no branch yet**: it is created at main's head, retried when another commit (a second
  reviewer creating theirs at the same moment) lands first;
* **nothing unmerged** (its head is main's merge base with it): the branch moves to main's
  head, a fast-forward. Nothing is lost: every change of the branch is already in main;
* **unmerged changes, main moved**: the branch is rebased. Its own changes since the merge
  base are re-applied on main's head in one commit on a scratch branch
  (``user/<name>.rebase-<id>``), then the reviewer's branch moves to that commit, asserting
  it did not move meanwhile, and the scratch branch is removed. A process killed half way
  leaves the reviewer's branch as it was (and a scratch branch, removed by the next sync).
  When main changed the same samples differently, the branch is left as it is: that is a
  real conflict, which the merge reports;
* **already on top of main**: nothing to do.

Every move of the branch is in the dataset's audit log (operation ``review-sync``; the
creation is ``branch``), written, with a re-check of the reviewer's writer role, inside the
catalog transaction that moves it (``Dataset.audited``): the move and its audit row land
together or not at all, and a role revoked meanwhile refuses the move. The scratch
branch's own commits are not audited: only the move makes them part of the reviewer's
branch. The caller holds the reviewer's review lock, so two submits of one reviewer never
interleave.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from typing import Any

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import In
from pyiceberg.table.refs import SnapshotRefType

from train_platform.datasets import schema as sample_schema
from train_platform.datasets.changes import changes_between, conflicting_ids
from train_platform.datasets.commits import commit_properties, commit_with_retries
from train_platform.datasets.dataset import Dataset
from train_platform.datasets.exceptions import CommitRetriesExhaustedError
from train_platform.datasets.history import merge_base
from train_platform.datasets.refs import MAIN
from train_platform.review.exceptions import StaleReviewError
from train_platform.review.reading import load_table

log = logging.getLogger(__name__)

SCRATCH_MARK = ".rebase-"
_MOVED = "was written to while the review was being submitted"


def _heads(table: Any, branch: str) -> tuple[int, int | None]:
    refs = table.metadata.refs
    ref = refs.get(branch)
    return refs[MAIN].snapshot_id, (ref.snapshot_id if ref is not None and ref.snapshot_ref_type == SnapshotRefType.BRANCH else None)


def _remove_scratch(table: Any, branch: str) -> Any:
    """Remove scratch branches a killed sync of ``branch`` left behind."""
    left = [name for name in table.metadata.refs if name.startswith(branch + SCRATCH_MARK)]
    for name in left:
        try:
            table.manage_snapshots().remove_branch(name).commit()
            log.info("removed scratch branch %s left by an interrupted sync", name)
        except CommitFailedException:
            log.warning("could not remove scratch branch %s", name, exc_info=True)
        table = table.refresh()
    return table


def _move(ds: Dataset, table: Any, branch: str, expected: int | None, to: int, where: str,
          detail: dict[str, Any]) -> None:
    """Point ``branch`` at snapshot ``to``, provided it still points at ``expected``; the
    commit writes the ``review-sync`` audit row ``detail``."""
    table = table.refresh()
    current = table.metadata.refs.get(branch)
    if (current.snapshot_id if current else None) != expected:
        raise StaleReviewError(where, [], _MOVED)
    with ds.audited("review-sync", "writer", branch, detail) as audited:
        audited.snapshot_id = to
        try:
            # The commit asserts the ref still holds the snapshot read just above.
            table.manage_snapshots().create_branch(to, branch).commit()
        except CommitFailedException as exc:
            audited.fallback = False  # nothing was committed
            raise StaleReviewError(where, [], _MOVED) from exc


def _create(ds: Dataset, branch: str, attempts: int = 30) -> int:
    """Create the reviewer's branch at main's head; returns its head.

    Creating a ref is a commit of the table's metadata that asserts the ref is absent, and
    the catalog refuses it (``CommitFailedException``) whenever *any* other commit landed
    since the metadata was read: another reviewer creating their own branch at the same
    moment, a submit, a merge. ``Dataset.ensure_user_branch`` takes that refusal for the
    branch existing, which it then does not. Here the branch is looked for on fresh
    metadata after each refusal: when it is there (this reviewer's other tab made it) it is
    used, otherwise the creation is tried again on the newest main, after a short jittered
    pause so that reviewers starting together spread out."""
    for attempt in range(attempts):
        table = load_table(ds)
        main_head, head = _heads(table, branch)
        if head is not None:
            return head
        # The creation and its audit row are one catalog transaction.
        with ds.audited("branch", "writer", branch, {"from": MAIN}) as audited:
            audited.snapshot_id = main_head
            try:
                table.manage_snapshots().create_branch(main_head, branch).commit()
            except CommitFailedException:
                audited.fallback = False  # nothing was committed
                created = False
            else:
                created = True
        if created:
            return main_head
        log.debug("%s@%s: creating the branch lost a commit race (attempt %d)", ds.name, branch, attempt + 1)
        time.sleep(random.uniform(0, min(0.5, 0.01 * 2 ** attempt)))
    raise CommitRetriesExhaustedError(f"{ds.name}: could not create {branch} in {attempts} attempts "
                                      "(other commits kept landing first); submit again")


def sync_with_main(ds: Dataset, branch: str) -> dict[str, Any]:
    """Bring the reviewer's ``branch`` onto main's head as the module describes, acting as
    ``ds.user``. Returns what was done: ``{"kind": "created" | "fast-forward" | "rebased" |
    "up-to-date" | "diverged", "head": snapshot id}``. The acting user needs the writer
    role: checked by the caller first and again in each commit that moves ``branch``."""
    table = _remove_scratch(load_table(ds), branch)
    main_head, head = _heads(table, branch)
    if head is None:
        return {"kind": "created", "head": _create(ds, branch)}
    base = merge_base(table, main_head, head)
    if base is None or base == main_head:
        return {"kind": "up-to-date" if base is not None else "diverged", "head": head}
    where = f"{ds.name}@{branch}"
    if base == head:
        _move(ds, table, branch, head, main_head, where, {"kind": "fast-forward", "from": head, "to": main_head})
        return {"kind": "fast-forward", "head": main_head}
    own = changes_between(table, base, head)
    theirs = changes_between(table, base, main_head)
    both = own.touched & theirs.touched
    if conflicting_ids(both, theirs, own):
        log.info("%s: own changes conflict with main's; left as it is for the merge to report", where)
        return {"kind": "diverged", "head": head}
    apply_ids = sorted((own.added | own.changed) - both)
    remove_ids = sorted((own.changed | own.removed) - both)
    scratch = f"{branch}{SCRATCH_MARK}{uuid.uuid4().hex[:10]}"
    table.manage_snapshots().create_branch(main_head, scratch).commit()
    try:
        new_head = main_head
        if apply_ids or remove_ids:
            rows = sample_schema.take_ids(own.rows, apply_ids)
            overwrite = sorted(set(apply_ids) | set(remove_ids))

            def write(tbl: Any, txn: Any, props: dict[str, str]) -> None:
                if rows.num_rows:
                    txn.overwrite(rows, overwrite_filter=In("sample_id", overwrite), snapshot_properties=props, branch=scratch)
                else:
                    txn.delete(In("sample_id", overwrite), snapshot_properties=props, branch=scratch)

            committed = commit_with_retries(
                lambda attempt: load_table(ds), write,
                lambda: commit_properties(ds.user, "review-sync", f"rebase {branch} onto main",
                                          {"tp.rebased-from": str(head)}),
                what=f"{ds.name}@{scratch}: rebase",
            )
            new_head = committed.metadata.refs[scratch].snapshot_id
        _move(ds, load_table(ds), branch, head, new_head, where,
              {"kind": "rebased", "from": head, "onto": main_head, "reapplied": len(apply_ids),
               "removed": len(remove_ids)})
    finally:
        try:
            load_table(ds).manage_snapshots().remove_branch(scratch).commit()
        except CommitFailedException:
            log.warning("could not remove scratch branch %s; the next sync removes it", scratch, exc_info=True)
    return {"kind": "rebased", "head": new_head}


__all__ = ["SCRATCH_MARK", "sync_with_main"]
