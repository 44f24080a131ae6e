"""Dataset fixtures: every test that takes ``backend`` runs twice, on the embedded shape
(SQLite catalog, local warehouse folder, file locks) and on the scale shape (PostgreSQL
catalog, warehouse on the S3 endpoint, Redis locks). A test may instead ask for
``postgres`` (PostgreSQL catalog and Redis, warehouse in a local folder) by indirect
parametrisation: the 8-writer test does, because moto's single-threaded S3 server, not
the code under test, makes 200 contended commits take minutes there."""

from __future__ import annotations

import uuid

import pytest

from train_platform.settings import reload_settings

BUCKET = "tp-datasets-test"


@pytest.fixture(scope="session")
def s3_bucket(s3_endpoint) -> str:
    import boto3

    client = boto3.client(
        "s3", endpoint_url=s3_endpoint, aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if BUCKET not in existing:
        client.create_bucket(Bucket=BUCKET)
    return BUCKET


@pytest.fixture(params=["local", pytest.param("services", marks=pytest.mark.services)])
def backend(request, tp_home, monkeypatch):
    """Settings for one shape, exported as TP_* so subprocesses see the same catalog."""
    if request.param in ("services", "postgres"):
        postgres = request.getfixturevalue("postgres_url")
        redis_url = request.getfixturevalue("redis_url")
        monkeypatch.setenv("TP_CATALOG_URL", postgres)
        monkeypatch.setenv("TP_REDIS_URL", redis_url)
    if request.param == "services":
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = request.getfixturevalue("s3_bucket")
        monkeypatch.setenv("TP_WAREHOUSE", f"s3://{bucket}/{uuid.uuid4().hex[:8]}")
        monkeypatch.setenv("TP_S3_ENDPOINT", endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_REGION", "us-east-1")
    settings = reload_settings()
    yield settings
    reload_settings()


@pytest.fixture
def ds_name() -> str:
    """A dataset name no other test (or earlier run against the shared PostgreSQL) used."""
    return f"t_{uuid.uuid4().hex[:10]}"
