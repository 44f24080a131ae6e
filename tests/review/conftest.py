"""Review fixtures: datasets with samples awaiting review, on the embedded shape (SQLite,
local warehouse, file locks) and, for the tests that take ``backend``, also on the scale
shape (PostgreSQL catalog, warehouse on the S3 endpoint, Redis locks)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np
import pytest

from train_platform.settings import Settings, reload_settings

BUCKET = "tp-review-test"
CLASSES = ("walking", "running", "standing")


def series_of(kind: str, rng: np.random.Generator, steps: int = 60) -> np.ndarray:
    """A three-channel recording whose shape depends on the activity."""
    t = np.linspace(0, 4 * np.pi, steps)
    f = {"walking": 1.0, "running": 3.0, "standing": 0.2, "jumping": 5.0}[kind]
    return np.stack([np.sin(f * t), 0.5 * np.cos(f * t), 0.1 * rng.normal(size=steps)], axis=1)


@dataclass(frozen=True)
class Seeded:
    name: str
    settings: Settings
    confirmed: list[str]
    pending: list[str]
    model_labels: dict[str, str]
    confidence: dict[str, float]
    alternatives: dict[str, list[dict]]  # the model's runners-up of each pending sample


def seed_dataset(settings: Settings, name: str | None = None, *, owner: str = "alice", writers=("bob",),
                 readers=("carol",), review_branch: str | None = None, pending: int = 6) -> Seeded:
    """A dataset of six confirmed samples on main and ``pending`` pre-labelled ones awaiting
    review: on main, or on ``review_branch`` (made from main, where the same samples are raw,
    as ``tp dataset sample --to`` leaves them)."""
    from train_platform.datasets import build_samples, create_dataset

    name = name or f"r_{uuid.uuid4().hex[:10]}"
    rng = np.random.default_rng(7)
    kinds = ["walking", "running", "standing"] * 2
    confirmed_ids = [f"rec-{i:03d}" for i in range(6)]
    rows = build_samples(confirmed_ids, [series_of(k, rng) for k in kinds], labels=kinds)
    ds = create_dataset(name, user=owner, source=rows, settings=settings)
    for user in writers:
        ds.grant(user, "writer")
    for user in readers:
        ds.grant(user, "reader")
    ids = [f"new-{i:03d}" for i in range(pending)]
    model = [CLASSES[i % 3] for i in range(pending)]
    confidence = [round(0.99 - 0.09 * i, 2) for i in range(pending)]
    shapes = [series_of(CLASSES[(i + (i // 3)) % 3], rng) for i in range(pending)]
    # The model's two other classes, as `tp dataset prelabel` stores them: most probable first.
    alternatives = [[{"label": c, "probability": round((1 - conf) * share, 4)}
                     for c, share in zip([c for c in CLASSES if c != m][::-1 if i % 2 else 1], (0.7, 0.3))]
                    for i, (m, conf) in enumerate(zip(model, confidence))]
    if review_branch is None:
        ds.append(build_samples(ids, shapes, labels=model, label_source="model", confidence=confidence,
                                status="pending", batch_id=["b1" if i < pending // 2 else "b2" for i in range(pending)],
                                alternatives=alternatives),
                  branch="main", message="pre-labels")
    else:
        ds.append(build_samples(ids, shapes, batch_id="b1"), branch="main", message="raw recordings")
        ds.branch(review_branch)
        ds.annotate([{"sample_id": i, "label": m, "label_source": "model", "confidence": c, "status": "pending",
                      "alternatives": a} for i, m, c, a in zip(ids, model, confidence, alternatives)],
                    review_branch, message="pre-labels")
    return Seeded(name, settings, confirmed_ids, ids, dict(zip(ids, model)), dict(zip(ids, confidence)),
                  dict(zip(ids, alternatives)))


@pytest.fixture(scope="session")
def s3_bucket(s3_endpoint) -> str:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    if BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=BUCKET)
    return BUCKET


@pytest.fixture
def local(tp_home) -> Settings:
    """The embedded shape in a fresh TP_HOME."""
    return reload_settings()


@pytest.fixture(params=["local", pytest.param("services", marks=pytest.mark.services)])
def backend(request, tp_home, monkeypatch) -> Settings:
    """Settings for one shape, exported as TP_* (subprocesses see the same catalog)."""
    if request.param == "services":
        monkeypatch.setenv("TP_CATALOG_URL", request.getfixturevalue("postgres_url"))
        monkeypatch.setenv("TP_REDIS_URL", request.getfixturevalue("redis_url"))
        monkeypatch.setenv("TP_WAREHOUSE", f"s3://{request.getfixturevalue('s3_bucket')}/{uuid.uuid4().hex[:8]}")
        monkeypatch.setenv("TP_S3_ENDPOINT", request.getfixturevalue("s3_endpoint"))
        for key, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                           ("AWS_REGION", "us-east-1")):
            monkeypatch.setenv(key, value)
    settings = reload_settings()
    yield settings
    reload_settings()


@pytest.fixture(scope="session")
def airflow_server(tmp_path_factory):
    """One real Airflow API server with the plugin for the session's API and browser tests."""
    from tests.review.airflow_server import AirflowServer

    server = AirflowServer(tmp_path_factory.mktemp("review-airflow")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def served(airflow_server) -> Seeded:
    """A fresh dataset awaiting review, in the server's TP_HOME."""
    return seed_dataset(airflow_server.settings)
