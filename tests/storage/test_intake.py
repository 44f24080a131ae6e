"""The ``intake`` task type through a real Airflow (``airflow dags test``, SQLite) against the
S3 endpoint ``make test`` starts: new recordings under a bucket prefix, picked up through an
Airflow connection given as ``AIRFLOW_CONN_...``, become raw samples of ``tp://NAME@intake``,
each object once, and move under ``processed/``."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.pipelines.helpers import ROOT, airflow_project, dags_test, write

pytestmark = pytest.mark.slow
PREFIX = "incoming/vib/"


def npz_bytes(n: int, *, ids: list[str] | None = None, labels: list[str] | None = None, seed: int = 0) -> bytes:
    arrays = {"X": np.random.default_rng(seed).normal(size=(n, 32, 3)).astype(np.float32)}
    if ids is not None:
        arrays["ids"] = np.array(ids)
    if labels is not None:
        arrays["y"] = np.array(labels)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.fixture
def s3(s3_endpoint):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    bucket = f"tp-intake-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    client.bucket = bucket
    return client


def keys(s3) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=s3.bucket).get("Contents", []))


@pytest.fixture
def project(tmp_path, s3, s3_endpoint):
    """An Airflow project whose one pipeline has an intake task, the connection as an
    environment variable, and a dataset ``vib`` owned by the pipeline's owner."""
    from train_platform.datasets import build_samples, create_dataset
    from train_platform.settings import Settings

    pipeline = write(tmp_path / "src" / "intake.yaml", f"""
    apiVersion: train-platform/v1
    kind: Pipeline
    metadata: {{name: vib-intake, version: "1.0.0", owner: alice}}
    spec:
      parameters:
        aws_conn_id: tp_intake
        intake_poke_interval: 1
      default_args: {{retries: 0}}
      tasks:
        - name: intake
          type: intake
          inputs: [{{name: objects, source: "s3://{s3.bucket}/{PREFIX}"}}]
          outputs: [{{name: data, destination: "tp://vib@intake"}}]
          timeout: 3m
    """)
    env = airflow_project(tmp_path / "af", [pipeline])
    env["AIRFLOW_CONN_TP_INTAKE"] = json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"}})
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        env.pop(name, None)  # the connection alone gives access
    settings = Settings.from_env(env)
    create_dataset("vib", user="alice", settings=settings,
                   source=build_samples(["old-0", "old-1"], [np.ones((32, 3))] * 2, labels=["walk", "run"]))
    return env, settings


def rows(settings, ref):
    from train_platform.datasets import open_dataset

    return {r["sample_id"]: r for r in open_dataset("vib", user="alice", settings=settings).read(ref).to_pylist()}


def intake_commits(settings):
    from train_platform.datasets import open_dataset

    return [e.message for e in open_dataset("vib", user="alice", settings=settings).log("intake")
            if e.operation == "intake"]


def test_new_recordings_become_raw_samples_of_the_intake_branch_each_once(project, s3):
    env, settings = project
    s3.put_object(Bucket=s3.bucket, Key=PREFIX + "a.npz",
                  Body=npz_bytes(3, ids=["a-0", "a-1", "a-2"], labels=["walk", "run", "walk"]))
    s3.put_object(Bucket=s3.bucket, Key=PREFIX + "day2/b.npz", Body=npz_bytes(2, seed=1))
    s3.put_object(Bucket=s3.bucket, Key=PREFIX + "notes.txt", Body=b"not a recording")
    s3.put_object(Bucket=s3.bucket, Key="processed/" + PREFIX + "old.npz", Body=npz_bytes(1, ids=["gone"]))

    run = dags_test(env, "vib-intake", {})
    log = run.stdout + run.stderr
    assert run.returncode == 0 and "state=success" in log.replace("state=DagRunState.SUCCESS", "state=success"), log[-4000:]
    intake, main = rows(settings, "intake"), rows(settings, "main")
    assert set(intake) == {"old-0", "old-1", "a-0", "a-1", "a-2", "b-000000", "b-000001"}
    assert set(main) == {"old-0", "old-1"}, "main is untouched"
    for i in ("a-0", "a-1", "a-2", "b-000000", "b-000001"):
        assert (intake[i]["status"], intake[i]["label"], intake[i]["label_source"]) == ("raw", None, None)
    assert intake["a-0"]["batch_id"] == PREFIX + "a" and intake["b-000000"]["batch_id"] == PREFIX + "day2/b"
    assert intake["old-0"]["status"] == "confirmed"
    assert keys(s3) == sorted(["processed/" + PREFIX + "a.npz", "processed/" + PREFIX + "day2/b.npz",
                               "processed/" + PREFIX + "old.npz", PREFIX + "notes.txt"])
    etag = s3.head_object(Bucket=s3.bucket, Key="processed/" + PREFIX + "a.npz")["ETag"].strip('"')
    assert f"intake s3://{s3.bucket}/{PREFIX}a.npz (etag {etag}): 3 sample(s)" in intake_commits(settings)
    assert "is not a recording intake reads" in log

    # A retry after the import but before the move (a.npz back where it was, the same
    # bytes), and a recording that arrives while the task waits: a.npz is only moved, c.npz
    # is imported once it is there (the task defers and looks again).
    s3.copy_object(Bucket=s3.bucket, Key=PREFIX + "a.npz", CopySource={"Bucket": s3.bucket, "Key": "processed/" + PREFIX + "a.npz"})
    s3.delete_object(Bucket=s3.bucket, Key=PREFIX + "notes.txt")
    before = len(intake_commits(settings))
    run = dags_test(env, "vib-intake", {})
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert len(intake_commits(settings)) == before, "a.npz is not imported a second time"
    assert PREFIX + "a.npz" not in keys(s3)

    # c.npz is uploaded once the task has looked and found nothing: it defers and looks again.
    from tests.pipelines.helpers import BIN

    proc = subprocess.Popen([str(BIN / "airflow"), "dags", "test", "vib-intake", "-c", "{}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "no new object under" in line and len([x for x in lines if "no new object under" in x]) == 1:
                s3.put_object(Bucket=s3.bucket, Key=PREFIX + "c.npz", Body=npz_bytes(1, ids=["c-0"], seed=2))
        proc.wait(timeout=300)
    finally:
        proc.kill()
    log = "".join(lines)
    assert proc.returncode == 0, log[-4000:]
    assert "looking again in 1 s" in log and "1 new object(s) under" in log
    assert rows(settings, "intake")["c-0"]["status"] == "raw"
    assert len(intake_commits(settings)) == before + 1
    assert PREFIX + "c.npz" not in keys(s3) and "processed/" + PREFIX + "c.npz" in keys(s3)


def test_an_unreadable_object_fails_the_task_by_name_and_stays_while_the_others_land(project, s3):
    env, settings = project
    s3.put_object(Bucket=s3.bucket, Key=PREFIX + "bad.npz", Body=b"this is not an npz archive")
    s3.put_object(Bucket=s3.bucket, Key=PREFIX + "good.npz", Body=npz_bytes(2, ids=["g-0", "g-1"]))
    run = dags_test(env, "vib-intake", {})
    log = run.stdout + run.stderr
    assert run.returncode != 0 or "state=failed" in log, log[-4000:]
    assert f"1 object(s) could not be imported and stay where they are: s3://{s3.bucket}/{PREFIX}bad.npz" in log
    assert "not a readable .npz file" in log
    assert {"g-0", "g-1"} <= set(rows(settings, "intake"))
    assert keys(s3) == sorted([PREFIX + "bad.npz", "processed/" + PREFIX + "good.npz"])


def test_the_intake_task_type_compiles_and_refuses_bad_refs(tmp_path):
    from operators.intake import IntakeOperator

    task = IntakeOperator(task_id="intake", inputs={"objects": "s3://tp-intake/incoming/"},
                          outputs={"data": "tp://vib"}, pipeline="p", pipeline_version="1.0.0")
    assert task.default_command(task.inputs, task.outputs, {}) == [
        "python", "-m", "train_platform.cli", "storage", "intake", "vib@intake", "--json"]
    with pytest.raises(ValueError, match="`objects` input must be s3://BUCKET/PREFIX, got '/mnt/x'"):
        IntakeOperator(task_id="intake", inputs={"objects": "/mnt/x"}, outputs={"data": "tp://vib"})
    with pytest.raises(ValueError, match="`data` output must be a dataset branch tp://NAME@BRANCH"):
        IntakeOperator(task_id="intake", inputs={"objects": "s3://bk1/x/"}, outputs={"data": "/mnt/out"})
    with pytest.raises(ValueError, match="remove `executor: kubernetes`"):
        IntakeOperator(task_id="intake", inputs={"objects": "s3://bk1/x/"}, outputs={"data": "tp://vib"},
                       runner="kubernetes", image="i")
    pipeline = write(tmp_path / "p.yaml", """
    apiVersion: train-platform/v1
    kind: Pipeline
    metadata: {name: vib-intake, version: "1.0.0"}
    spec:
      tasks:
        - name: intake
          type: intake
          inputs: [{name: objects, source: "s3://tp-intake/incoming/vib/"}]
          outputs: [{name: data, destination: "tp://vib@intake"}]
    """)
    compiled = subprocess.run([sys.executable, "-m", "train_platform.cli", "pipeline", "compile", str(pipeline), "--json"],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert compiled.returncode == 0, compiled.stderr
    assert [(t["type"], t["operator"]) for t in json.loads(compiled.stdout)["tasks"]] == [("intake", "IntakeOperator")]
    assert Path(ROOT / "operators" / "intake.py").exists()
