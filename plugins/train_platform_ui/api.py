"""The JSON API under ``/train-platform/api``: what the review page itself calls, and the
platform views' data. Every endpoint needs a logged-in Airflow user (``auth.api_user``);
that user's dataset roles apply. Errors answer ``{"detail": message, "error": kind}``,
plus ``ids`` (and ``samples`` for conflicts) when the error names samples.

Snapshot ids are 64-bit integers, so they travel as strings (JavaScript numbers lose their
last digits).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from train_platform_ui import views
from train_platform_ui.auth import ApiUser
from train_platform_ui.svg import series_svg

router = APIRouter()


class DecisionBody(BaseModel):
    sample_id: str = Field(min_length=1, description="the sample decided on")
    action: Literal["accept", "correct", "reject", "skip"] = Field(
        description="accept the model's label, correct it (give `label`), reject the sample as bad, or skip it")
    label: str | None = Field(default=None, description="the label of a correction")


class SubmitBody(BaseModel):
    branch: str = Field(description="the review branch the page showed")
    review_snapshot: int | str = Field(description="the review branch snapshot the page was rendered from")
    branch_snapshot: int | str | None = Field(
        default=None, description="the head of the reviewer's own branch the page saw (null when it had none)")
    decisions: list[DecisionBody] = Field(min_length=1, max_length=5000)


class BulkAcceptBody(BaseModel):
    branch: str = Field(description="the review branch the page showed")
    review_snapshot: int | str
    branch_snapshot: int | str | None = None
    min_confidence: float = Field(ge=0.0, le=1.0, description="accept the model's label at or above this confidence")
    batch: str | None = Field(default=None, description="only samples of this ingestion batch")


@router.get("/me", summary="The logged-in user")
def me(user: ApiUser) -> dict[str, Any]:
    return {"user": user, "datasets": views.dataset_list(user)}


@router.get("/datasets", summary="Datasets and your role on each")
def datasets(user: ApiUser) -> list[dict[str, Any]]:
    return views.dataset_list(user)


@router.get("/datasets/{name}", summary="Branches, latest snapshot, samples awaiting review, audit")
def dataset(name: str, user: ApiUser, audit_limit: int = Query(50, ge=1, le=1000)) -> dict[str, Any]:
    return views.dataset_view(name, user, audit_limit=audit_limit)


@router.get("/datasets/{name}/review", summary="A review batch as you see it")
def review_batch(
    name: str,
    user: ApiUser,
    branch: str = Query("main", description="the review branch"),
    batch: str | None = Query(None, description="only samples of this ingestion batch"),
    offset: int = Query(0, ge=0),
    limit: int = Query(20, ge=1, le=200),
    series: bool = Query(False, description="include each sample's values"),
) -> dict[str, Any]:
    from train_platform.review.batches import load_batch

    return load_batch(name, branch, reviewer=user, batch_id=batch, offset=offset, limit=limit).as_dict(with_series=series)


@router.post("/datasets/{name}/review", summary="Submit decisions to your own branch")
def submit(name: str, body: SubmitBody, user: ApiUser) -> dict[str, Any]:
    """Commits the decisions to ``user/<you>`` with you as annotator (status confirmed).
    409 when the page is stale (newer labels on the decided samples); 422 for labels outside
    the label set, samples not awaiting review, or malformed decisions; 403 without the
    writer role. Nothing is written when it fails."""
    from train_platform.review.submit import submit_review

    result = submit_review(name, body.branch, [d.model_dump() for d in body.decisions], reviewer=user,
                           review_snapshot=body.review_snapshot, branch_snapshot=body.branch_snapshot)
    return result.as_dict()


@router.post("/datasets/{name}/review/accept-above", summary="Accept every undecided sample at or above a confidence")
def accept_above(name: str, body: BulkAcceptBody, user: ApiUser) -> dict[str, Any]:
    from train_platform.review.submit import bulk_accept

    result = bulk_accept(name, body.branch, reviewer=user, min_confidence=body.min_confidence,
                         review_snapshot=body.review_snapshot, branch_snapshot=body.branch_snapshot,
                         batch_id=body.batch)
    return result.as_dict()


@router.get("/datasets/{name}/review/conflicts", summary="Samples reviewers disagree on, and the last merge's conflicts")
def conflicts(name: str, user: ApiUser, branch: str = Query("main")) -> dict[str, Any]:
    from train_platform.review.batches import load_batch

    batch = load_batch(name, branch, reviewer=user, limit=1)
    request = batch.request
    return {"dataset": name, "review_branch": branch, "disagreements": batch.disagreements,
            "request": None if request is None else request.as_dict()}


@router.get("/datasets/{name}/samples/{sample_id}/plot.svg", summary="A sample's channels over time",
            response_class=Response, responses={200: {"content": {"image/svg+xml": {}}}})
def plot(name: str, sample_id: str, user: ApiUser, ref: str = Query("main", description="branch, tag or snapshot id")) -> Response:
    from train_platform.datasets import schema as sample_schema
    from train_platform.datasets.dataset import open_dataset
    from train_platform.datasets.exceptions import UnknownSamplesError
    from train_platform.review import reading

    ds = open_dataset(name, user=user)
    ds.refs()  # the reader role check
    table = reading.load_table(ds)
    snapshot = ds.resolve(ref, table=table)
    rows = reading.rows_of(table, snapshot.snapshot_id, [sample_id])
    if rows.num_rows == 0:
        raise UnknownSamplesError(f"{name}@{ref}", [sample_id])
    row = rows.to_pylist()[0]
    svg = series_svg(sample_schema.series_of(rows)[0], title=f"{sample_id}: channels over time",
                     start_time=row["start_time"], end_time=row["end_time"])
    return Response(svg, media_type="image/svg+xml")


@router.get("/models", summary="Registered models")
def models(user: ApiUser) -> list[dict[str, Any]]:
    return views.model_list()


@router.get("/models/{name}", summary="Versions, aliases, A/B split, gates, metrics, history")
def model(name: str, user: ApiUser) -> dict[str, Any]:
    return views.model_view(name)
