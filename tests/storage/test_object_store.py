"""``tp storage init`` and presigned links, with the MinIO SDK against the S3 endpoint
``make test`` starts (moto's server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-never-printed"


@pytest.fixture
def store_env(s3_endpoint, tp_home) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TP_", "AWS_"))}
    env.update({"TP_HOME": str(tp_home), "TP_S3_ENDPOINT": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                "TP_WAREHOUSE": f"s3://tp-wh-{tag}/warehouse", "TP_ARTIFACTS_BUCKET": f"tp-art-{tag}",
                "TP_INTAKE_BUCKET": f"tp-in-{tag}"})
    return env


def tp(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "train_platform.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def bucket_names(endpoint: str) -> set[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                          region_name="us-east-1")
    return {b["Name"] for b in client.list_buckets()["Buckets"]}


def test_init_creates_and_checks_the_buckets_and_a_second_run_changes_nothing(store_env, s3_endpoint):
    tag = store_env["TP_INTAKE_BUCKET"].removeprefix("tp-in-")
    expected = {"warehouse": f"tp-wh-{tag}", "artifacts": f"tp-art-{tag}", "intake": f"tp-in-{tag}"}
    first = tp(store_env, "storage", "init", "--json")
    assert first.returncode == 0, first.stderr
    answer = json.loads(first.stdout)
    assert answer["endpoint"] == s3_endpoint
    assert {b["role"]: b["bucket"] for b in answer["buckets"]} == expected
    assert all(b["created"] and b["checked"] for b in answer["buckets"])
    assert set(expected.values()) <= bucket_names(s3_endpoint)

    again = tp(store_env, "storage", "init")  # as the README shows it
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [f"{role:10} {name:40} exists, checked" for role, name in expected.items()]
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                          region_name="us-east-1")
    for name in expected.values():
        assert client.list_objects_v2(Bucket=name).get("KeyCount", 0) == 0, "the check object is removed"


@pytest.mark.parametrize("change, message", [
    ({"TP_S3_ENDPOINT": "http://127.0.0.1:9"}, "cannot reach the S3 endpoint http://127.0.0.1:9 (TP_S3_ENDPOINT) while "
                                              "looking up bucket 'tp-wh-"),
    ({"TP_S3_ENDPOINT": f"http://admin:{SECRET}@127.0.0.1:9"}, "cannot reach the S3 endpoint http://127.0.0.1:9"),
    ({"TP_S3_ENDPOINT": ""}, "TP_S3_ENDPOINT is not set"),
    ({"TP_S3_ENDPOINT": "ftp://host/path"}, "TP_S3_ENDPOINT must be http(s)://host[:port] without a path, got ftp://host"),
    ({"TP_INTAKE_BUCKET": "Not_A_Bucket"}, "bucket name 'Not_A_Bucket' is invalid"),
])
def test_a_bad_endpoint_or_bucket_fails_clearly_without_a_secret(store_env, change, message):
    env = {**store_env, "AWS_SECRET_ACCESS_KEY": SECRET, **change}
    run = tp(env, "storage", "init")
    assert run.returncode == 3, run.stderr
    assert message in run.stderr and "Traceback" not in run.stderr
    assert SECRET not in run.stderr + run.stdout


def test_a_presigned_link_downloads_the_object(store_env, s3_endpoint, monkeypatch):
    import boto3

    from train_platform.settings import reload_settings
    from train_platform.storage.exceptions import ObjectStoreError
    from train_platform.storage.object_store import presigned_get_url

    for key, value in store_env.items():
        monkeypatch.setenv(key, value)
    settings = reload_settings()
    bucket = settings.intake_bucket
    client = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                          region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="raw/rec 1.npy", Body=b"raw bytes")
    url = presigned_get_url(settings, f"s3://{bucket}/raw/rec 1.npy", expires=timedelta(minutes=5))
    assert url.startswith(f"{s3_endpoint}/{bucket}/raw/rec%201.npy?") and "X-Amz-Signature=" in url
    assert "X-Amz-Expires=300" in url
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"raw bytes"
    with pytest.raises(ObjectStoreError, match="must be s3://BUCKET/KEY"):
        presigned_get_url(settings, f"s3://{bucket}")
