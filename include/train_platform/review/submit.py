"""Committing a reviewer's decisions to their own branch.

Each decision is one of:

* ``accept``: the model's label becomes the sample's label;
* ``correct``: the reviewer's ``label`` does (one of the label set, one of the model's
  alternatives for that sample, or a new class when the review allows new classes);
* ``reject``: a bad sample; it is removed from the reviewer's branch, so the merge removes
  it from main (history keeps it);
* ``skip``: no decision; nothing is written to the dataset.

Accepted and corrected samples are written with ``label_source`` ``human``, status
``confirmed``, no confidence, no alternatives, and the reviewer as ``annotator``, from the rows of the review
branch snapshot the page showed. All of one submit lands in one commit on ``user/<reviewer>``
(after ``sync.sync_with_main``), and every decision, skips included, goes to the journal
and to the dataset's audit log (operation ``review``). The audit row is written, and the
reviewer's writer role checked again, inside the catalog transaction of that commit
(``Dataset.audited``): the commit and its row land together or not at all, and a role
revoked while the submit was prepared refuses the commit (``RoleRevokedError``, audited as
denied). A submit that writes nothing (skips only) is audited after it.

**Refused, writing nothing:** a reviewer below the writer role (``PermissionDeniedError``,
audited as denied); malformed decisions; labels outside the label set where new classes are
not allowed; samples not awaiting review in the snapshot the page showed; and a stale page:
when the review branch, the reviewer's own branch or (for a review branch other than main)
main changed any of the decided samples since the page's snapshots (``StaleReviewError``,
audited as a conflict). The checks and the commit run under a lock per reviewer branch,
and the commit re-checks the branch head it lands on, so a second tab of the same reviewer
cannot slip in between.

``bulk_accept`` accepts, as one such submit, every sample of the batch the reviewer has not
decided whose confidence is at least a threshold.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
from pyiceberg.expressions import In

from train_platform.datasets import schema as sample_schema
from train_platform.datasets.access import AccessStore
from train_platform.datasets.changes import changes_between, existing_ids
from train_platform.datasets.commits import commit_properties, commit_with_retries
from train_platform.datasets.dataset import open_dataset
from train_platform.datasets.locks import holder_description, version_lock
from train_platform.datasets.refs import MAIN, user_branch
from train_platform.review import reading
from train_platform.review.batches import batch_ids_in_review, label_set, latest_request, merged_ids
from train_platform.review.exceptions import InvalidDecisionError, NotInBatchError, StaleReviewError, UnknownLabelError
from train_platform.review.journal import ACTIONS, Decision, ReviewJournal
from train_platform.review.sync import sync_with_main
from train_platform.settings import Settings, get_settings

log = logging.getLogger(__name__)

MAX_DECISIONS = 5000


@dataclass(frozen=True)
class DecisionInput:
    """One decision as the page sends it."""

    sample_id: str
    action: str
    label: str | None = None


@dataclass(frozen=True)
class SubmitResult:
    dataset: str
    review_branch: str
    branch: str
    snapshot_id: int | None  # the commit on the reviewer's branch; None when nothing was written
    sync: dict[str, Any]
    accepted: list[str] = field(default_factory=list)
    corrected: dict[str, str] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "review_branch": self.review_branch, "branch": self.branch,
                "snapshot_id": None if self.snapshot_id is None else str(self.snapshot_id),
                "sync": {k: str(v) if isinstance(v, int) else v for k, v in self.sync.items()},
                "accepted": self.accepted, "corrected": self.corrected, "rejected": self.rejected,
                "skipped": self.skipped}


def parse_decisions(decisions: Iterable[DecisionInput | Mapping[str, Any]]) -> list[DecisionInput]:
    """Check the shape of each decision; labels are checked against the label set later."""
    out: list[DecisionInput] = []
    seen: set[str] = set()
    for index, item in enumerate(decisions):
        d = item if isinstance(item, DecisionInput) else DecisionInput(
            sample_id=item.get("sample_id"), action=item.get("action"), label=item.get("label"))  # type: ignore[arg-type]
        if not isinstance(d.sample_id, str) or not d.sample_id:
            raise InvalidDecisionError(f"decision #{index}: no sample_id")
        if d.action not in ACTIONS:
            raise InvalidDecisionError(f"decision on {d.sample_id!r}: action {d.action!r} is not one of {', '.join(ACTIONS)}")
        if d.sample_id in seen:
            raise InvalidDecisionError(f"sample {d.sample_id!r} is decided twice in one submit")
        seen.add(d.sample_id)
        if d.action == "correct":
            if d.label is None:
                raise InvalidDecisionError(f"correcting {d.sample_id!r} needs a label")
            d = DecisionInput(d.sample_id, d.action, reading.check_label_text(d.label))
        elif d.label is not None and d.action != "accept":
            raise InvalidDecisionError(f"decision on {d.sample_id!r}: {d.action} takes no label")
        out.append(d)
    if not out:
        raise InvalidDecisionError("no decisions given")
    if len(out) > MAX_DECISIONS:
        raise InvalidDecisionError(f"{len(out)} decisions in one submit; at most {MAX_DECISIONS}")
    return out


def _parse_snapshot(value: int | str | None, what: str, *, optional: bool) -> int | None:
    if value is None or value == "":
        if optional:
            return None
        raise InvalidDecisionError(f"{what} is missing: the page must send the snapshot it was rendered from")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidDecisionError(f"{what} {value!r} is not a snapshot id") from None


def _labelled_rows(rows: pa.Table, labels: Mapping[str, str], reviewer: str) -> pa.Table:
    records = rows.to_pylist()
    for record in records:
        record.update(label=labels[record["sample_id"]], label_source="human", confidence=None,
                      annotator=reviewer, status="confirmed", alternatives=None)
    return sample_schema.conform(pa.Table.from_pylist(records, schema=sample_schema.ARROW_SCHEMA), where="review")


def submit_review(
    dataset: str,
    review_branch: str,
    decisions: Iterable[DecisionInput | Mapping[str, Any]],
    *,
    reviewer: str,
    review_snapshot: int | str | None,
    branch_snapshot: int | str | None,
    settings: Settings | None = None,
    wait_s: float = 30.0,
) -> SubmitResult:
    """Commit ``reviewer``'s decisions on samples of ``review_branch`` to their own branch,
    as the module describes. ``review_snapshot`` and ``branch_snapshot`` are the snapshots
    the page was rendered from (``branch_snapshot`` ``None`` when the reviewer had no branch
    yet)."""
    settings = settings or get_settings()
    ds = open_dataset(dataset, user=reviewer, settings=settings)
    access = AccessStore(settings.catalog_uri)
    access.require(dataset, reviewer, "writer", "review")
    parsed = parse_decisions(decisions)
    shown_review = _parse_snapshot(review_snapshot, "review_snapshot", optional=False)
    shown_branch = _parse_snapshot(branch_snapshot, "branch_snapshot", optional=True)
    reading.branch_head(ds.refs(), dataset, review_branch)
    table = reading.load_table(ds)
    if table.snapshot_by_id(shown_review) is None:
        raise InvalidDecisionError(f"{dataset}: the page's snapshot {shown_review} does not exist (expired?); reload the page")
    ids = [d.sample_id for d in parsed]
    where = f"{dataset}@{review_branch} (snapshot {shown_review})"
    shown_rows = reading.rows_of(table, shown_review, ids)
    statuses = dict(zip(shown_rows.column("sample_id").to_pylist(), shown_rows.column("status").to_pylist()))
    not_pending = [i for i in ids if statuses.get(i) != "pending"]
    if not_pending:
        raise NotInBatchError(where, not_pending)
    journal = ReviewJournal(settings.catalog_uri)
    _, _, model_labels = batch_ids_in_review(ds, table, review_branch, shown_review, None, journal)
    request = latest_request(journal, dataset, review_branch)
    allowed = label_set(ds, table, model_labels)
    labels: dict[str, str] = {}
    for d in parsed:
        if d.action == "accept":
            if model_labels.get(d.sample_id) is None:
                raise InvalidDecisionError(f"{d.sample_id!r} has no model label to accept; correct it with a label")
            labels[d.sample_id] = model_labels[d.sample_id]  # type: ignore[assignment]
        elif d.action == "correct":
            labels[d.sample_id] = d.label  # type: ignore[assignment]
    proposed = {r["sample_id"]: {a["label"] for a in r["alternatives"] or ()}
                for r in shown_rows.select(["sample_id", "alternatives"]).to_pylist()}
    new = sorted({label for sample_id, label in labels.items()
                  if label not in allowed and label not in proposed.get(sample_id, ())})
    if new and not (request is not None and request.allow_new_classes):
        raise UnknownLabelError(new, allowed)
    rejected = [d.sample_id for d in parsed if d.action == "reject"]
    skipped = [d.sample_id for d in parsed if d.action == "skip"]
    branch = user_branch(reviewer)

    holder = holder_description(reviewer, "review")
    with version_lock(f"review:{dataset}:{branch}", holder, settings, wait_s=wait_s):
        table = reading.load_table(ds)
        try:
            _check_fresh(table, dataset, review_branch, branch, ids, shown_review, shown_branch, journal, reviewer)
        except StaleReviewError as exc:
            access.record(dataset, reviewer, "review", ref=branch, outcome="conflict",
                          detail={"review_branch": review_branch, "stale": exc.ids, "reason": str(exc)})
            raise
        sync = sync_with_main(ds, branch)
        expected = int(sync["head"])
        table = reading.load_table(ds)
        rows = (_labelled_rows(sample_schema.take_ids(shown_rows, sorted(labels)), labels, reviewer)
                if labels else sample_schema.ARROW_SCHEMA.empty_table())
        audit = {"review_branch": review_branch, "review_snapshot": shown_review,
                 "accepted": [d.sample_id for d in parsed if d.action == "accept"],
                 "corrected": {d.sample_id: labels[d.sample_id] for d in parsed if d.action == "correct"},
                 "rejected": rejected, "skipped": skipped, "sync": sync["kind"]}
        with ds.audited("review", "writer", branch, audit) as audited:
            if rows.num_rows or existing_ids(table, expected, rejected):
                audited.snapshot_id = _commit(ds, branch, expected, rows, ids, rejected, review_branch, shown_review,
                                              reviewer)
        snapshot_id = audited.snapshot_id
        now = datetime.now(timezone.utc)
        journal.record_decisions(
            Decision(dataset=dataset, review_branch=review_branch, sample_id=d.sample_id, reviewer=reviewer,
                     action=d.action, label=labels.get(d.sample_id), model_label=model_labels.get(d.sample_id),
                     review_snapshot=shown_review, branch=branch,
                     snapshot_id=None if d.action == "skip" else snapshot_id, decided_at=now)
            for d in parsed)
    result = SubmitResult(
        dataset=dataset, review_branch=review_branch, branch=branch, snapshot_id=snapshot_id, sync=sync,
        accepted=audit["accepted"], corrected=audit["corrected"], rejected=rejected, skipped=skipped,
    )
    log.info("%s reviewed %d sample(s) of %s@%s into %s (snapshot %s)", reviewer, len(parsed), dataset,
             review_branch, branch, snapshot_id)
    return result


def _check_fresh(table: Any, dataset: str, review_branch: str, branch: str, ids: list[str], shown_review: int,
                 shown_branch: int | None, journal: ReviewJournal, reviewer: str) -> None:
    """Raise ``StaleReviewError`` when a decided sample changed since the page's snapshots."""
    wanted = set(ids)
    refs = table.metadata.refs
    review_head = refs[review_branch].snapshot_id
    if review_head != shown_review:
        changes = changes_between(table, shown_review, review_head)
        touched = (changes.changed | changes.removed) & wanted
        if touched:
            raise StaleReviewError(f"{dataset}@{review_branch}", sorted(touched))
    if review_branch != MAIN:
        merged = merged_ids(table, refs[MAIN].snapshot_id, dataset, review_branch, ids, journal)
        if merged:
            raise StaleReviewError(f"{dataset}@{MAIN}", sorted(merged),
                                   f"already holds the reviewed labels of {', '.join(sorted(merged)[:20])} "
                                   f"(their review was merged since the page was loaded)")
    own = refs.get(branch)
    own_head = own.snapshot_id if own is not None else None
    if own_head == shown_branch:
        return
    if shown_branch is None or table.snapshot_by_id(shown_branch) is None:
        # The branch appeared (or its shown head expired) since: whatever this reviewer
        # decided meanwhile is newer than the page.
        touched = {d.sample_id for d in journal.decisions(dataset, review_branch, sample_ids=ids, reviewer=reviewer)
                   if d.outcome is not None}
    elif own_head is None:
        touched = set()
    else:
        touched = changes_between(table, shown_branch, own_head).touched & wanted
    if touched:
        raise StaleReviewError(f"{dataset}@{branch}", sorted(touched))


def _commit(ds: Any, branch: str, expected: int, rows: pa.Table, ids: list[str], rejected: list[str],
            review_branch: str, shown_review: int, reviewer: str) -> int:
    labelled = sample_schema.ids_of(rows)
    wanted = set(ids)

    def write(table: Any, txn: Any, props: dict[str, str]) -> None:
        head = table.metadata.refs[branch].snapshot_id
        if head != expected:
            touched = changes_between(table, expected, head).touched & wanted
            if touched:
                raise StaleReviewError(f"{ds.name}@{branch}", sorted(touched))
        present = existing_ids(table, head, rejected)
        replace = sorted(set(labelled) | present)
        if rows.num_rows:
            txn.overwrite(rows, overwrite_filter=In("sample_id", replace), snapshot_properties=props, branch=branch)
        elif replace:
            txn.delete(In("sample_id", replace), snapshot_properties=props, branch=branch)

    parts = [f"{len(labelled)} labelled"] + ([f"{len(rejected)} rejected"] if rejected else [])
    committed = commit_with_retries(
        lambda attempt: reading.load_table(ds), write,
        lambda: commit_properties(reviewer, "review", f"review of {review_branch}: {', '.join(parts)}",
                                  {"tp.review-branch": review_branch, "tp.review-snapshot": str(shown_review)}),
        what=f"{ds.name}@{branch}: review",
    )
    return committed.metadata.refs[branch].snapshot_id


def bulk_accept(
    dataset: str,
    review_branch: str,
    *,
    reviewer: str,
    min_confidence: float,
    review_snapshot: int | str | None,
    branch_snapshot: int | str | None,
    batch_id: str | None = None,
    settings: Settings | None = None,
) -> SubmitResult:
    """Accept the model's label of every sample of the batch (as of ``review_snapshot``)
    whose confidence is at least ``min_confidence`` and that ``reviewer`` has not decided
    yet, as one submit."""
    if isinstance(min_confidence, bool) or not isinstance(min_confidence, (int, float)) or not 0.0 <= min_confidence <= 1.0:
        raise InvalidDecisionError(f"min_confidence must be a number in [0, 1], not {min_confidence!r}")
    settings = settings or get_settings()
    ds = open_dataset(dataset, user=reviewer, settings=settings)
    AccessStore(settings.catalog_uri).require(dataset, reviewer, "writer", "review")
    shown = _parse_snapshot(review_snapshot, "review_snapshot", optional=False)
    reading.branch_head(ds.refs(), dataset, review_branch)
    table = reading.load_table(ds)
    if table.snapshot_by_id(shown) is None:
        raise InvalidDecisionError(f"{dataset}: the page's snapshot {shown} does not exist (expired?); reload the page")
    journal = ReviewJournal(settings.catalog_uri)
    ids, _, model_labels = batch_ids_in_review(ds, table, review_branch, shown, batch_id, journal)
    rows = reading.pending(table, shown)
    confidence = dict(zip(rows.column("sample_id").to_pylist(), rows.column("confidence").to_pylist()))
    decided = {d.sample_id for d in journal.decisions(
        dataset, review_branch, sample_ids=ids, reviewer=reviewer) if d.outcome is not None}
    chosen = [i for i in ids if i not in decided and model_labels.get(i) is not None
              and confidence.get(i) is not None and confidence[i] >= min_confidence]
    if not chosen:
        raise InvalidDecisionError(
            f"{dataset}@{review_branch}: no sample you have not decided yet has a model confidence of at least "
            f"{min_confidence:g}; nothing was written")
    return submit_review(dataset, review_branch, [DecisionInput(i, "accept") for i in chosen], reviewer=reviewer,
                         review_snapshot=shown, branch_snapshot=branch_snapshot, settings=settings)


__all__ = ["MAX_DECISIONS", "DecisionInput", "SubmitResult", "bulk_accept", "parse_decisions", "submit_review"]
