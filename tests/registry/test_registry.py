"""The registry on SQLite and on the real PostgreSQL server: versions in the BentoML store,
aliases and their rollback history, experiments, live stats, errors, concurrency."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from train_platform.registry import (
    AliasNotSetError,
    CheckpointInvalidError,
    ExperimentError,
    InvalidModelNameError,
    LiveStats,
    ModelNotFoundError,
    NothingToRollBackError,
    VersionNotFoundError,
)
from train_platform.registry.bento_store import model_path


def test_register_copies_the_checkpoint_into_the_bentoml_store(registry, checkpoints):
    good = checkpoints["good"]
    v1 = registry.register("sensor", good, training_run="run-1", dataset_snapshot="sensors@42",
                           metrics={"accuracy": 0.97}, gate_status="passed")
    v2 = registry.register("sensor", checkpoints["bad"], parent_version=1)
    assert (v1.version, v2.version) == (1, 2)
    assert (v1.task, v1.training_run, v1.dataset_snapshot, v1.metrics, v1.gate_status) == (
        "classification", "run-1", "sensors@42", {"accuracy": 0.97}, "passed")
    assert v2.parent_version == 1 and v2.gate_status == "pending"
    stored = model_path(registry.settings, v1.bento_model_tag)
    # The checkpoint's own files, byte for byte: weights as a state_dict, not a pickled module.
    for name in ("checkpoint.json", "model.pt"):
        assert (stored / name).read_bytes() == (good / name).read_bytes()
    import bentoml

    from train_platform.registry.bento_store import model_store

    info = bentoml.models.get(v1.bento_model_tag, _model_store=model_store(registry.settings))
    assert info.info.labels["registry_version"] == "1"
    assert [v.version for v in registry.list_versions("sensor")] == [1, 2]
    assert registry.get("sensor", "latest").version == 2


def test_aliases_promote_and_roll_back_through_earlier_holders(registry, checkpoints):
    for _ in range(3):
        registry.register("sensor", checkpoints["good"])
    registry.promote("sensor", 1)
    registry.promote("sensor", 2)
    registry.promote("sensor", 3, reason="better on the new data")
    assert registry.get("sensor", "production").version == 3
    assert registry.rollback("sensor").version == 2
    assert registry.rollback("sensor").version == 1
    with pytest.raises(NothingToRollBackError, match="no earlier holder than version 1"):
        registry.rollback("sensor")
    registry.promote("sensor", 3)
    assert registry.rollback("sensor").version == 1  # 2 was rolled back from: skipped
    registry.promote("sensor", 2, alias="staging")
    assert registry.aliases("sensor") == {"production": 1, "staging": 2}

    moves = [(e.kind, e.alias, e.previous_version, e.version) for e in registry.history("sensor", alias="production")]
    assert moves == [
        ("promote", "production", None, 1), ("promote", "production", 1, 2), ("promote", "production", 2, 3),
        ("rollback", "production", 3, 2), ("rollback", "production", 2, 1), ("promote", "production", 1, 3),
        ("rollback", "production", 3, 1),
    ]
    events = registry.history("sensor")
    assert [e.kind for e in events[:3]] == ["register"] * 3
    assert events[5].detail == {"reason": "better on the new data"}
    assert all(e.at.tzinfo is not None for e in events)
    times = [e.at for e in events]
    assert times == sorted(times)


def test_errors_name_the_model_version_or_alias(registry, checkpoints, tmp_path):
    with pytest.raises(ModelNotFoundError, match="unknown model 'nope'; no model is registered yet"):
        registry.get("nope", 1)
    registry.register("sensor", checkpoints["good"])
    with pytest.raises(ModelNotFoundError, match="unknown model 'nope'; registered models: sensor"):
        registry.promote("nope", 1)
    with pytest.raises(VersionNotFoundError, match="model 'sensor' has no version 7; its versions are 1"):
        registry.promote("sensor", 7)
    with pytest.raises(AliasNotSetError, match="alias 'production' of model 'sensor' points at no version"):
        registry.get("sensor", "production")
    with pytest.raises(InvalidModelNameError, match="invalid alias 'v2': 'latest', numbers and v<number>"):
        registry.promote("sensor", 1, alias="v2")
    with pytest.raises(AliasNotSetError):
        registry.rollback("sensor")
    with pytest.raises(InvalidModelNameError, match="invalid model name 'Bad Name'"):
        registry.register("Bad Name", checkpoints["good"])
    with pytest.raises(CheckpointInvalidError, match="does not exist"):
        registry.register("sensor", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointInvalidError, match="checkpoint.json is missing"):
        registry.register("sensor", tmp_path / "empty")
    import json
    import shutil

    snapshot = tmp_path / "snapshot"
    shutil.copytree(checkpoints["good"], snapshot)
    meta = json.loads((snapshot / "checkpoint.json").read_text())
    (snapshot / "checkpoint.json").write_text(json.dumps({**meta, "complete": False, "epochs_completed": 2}))
    with pytest.raises(CheckpointInvalidError, match="has not finished"):
        registry.register("sensor", snapshot)
    # A failed registration leaves nothing behind: still one version.
    assert [v.version for v in registry.list_versions("sensor")] == [1]


def test_concurrent_registrations_and_promotions_serialise(registry, checkpoints):
    registry.register("sensor", checkpoints["good"])
    errors: list[BaseException] = []
    numbers: list[int] = []

    def register_and_promote() -> None:
        try:
            version = registry.register("sensor", checkpoints["good"]).version
            numbers.append(version)
            registry.promote("sensor", version)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=register_and_promote) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(numbers) == [2, 3, 4, 5]
    history = registry.history("sensor", alias="production")
    assert len(history) == 4
    # Each promotion saw the one before it: the chain of previous holders is unbroken.
    assert [e.previous_version for e in history[1:]] == [e.version for e in history[:-1]]


def test_experiments_need_production_and_end_with_a_decision(registry, checkpoints):
    for _ in range(3):
        registry.register("sensor", checkpoints["good"])
    with pytest.raises(ExperimentError, match="no production version"):
        registry.start_experiment("sensor", 2, weight=0.2)
    registry.promote("sensor", 1)
    for weight in (0, 1, 1.5, -0.1):
        with pytest.raises(ExperimentError, match="strictly between 0 and 1"):
            registry.start_experiment("sensor", 2, weight=weight)
    with pytest.raises(ExperimentError, match="already production"):
        registry.start_experiment("sensor", 1, weight=0.2)
    exp = registry.start_experiment("sensor", 2, weight=0.25)
    assert (exp.control_version, exp.candidate_version, exp.candidate_weight) == (1, 2, 0.25)
    assert registry.aliases("sensor") == {"production": 1, "candidate": 2}
    with pytest.raises(ExperimentError, match="already runs experiment"):
        registry.start_experiment("sensor", 3, weight=0.2)
    state = registry.serving_state("sensor")
    assert state.production == 1 and state.experiment.id == exp.id

    registry.conclude_experiment("sensor", promote=False, detail={"why": "worse"})
    assert registry.active_experiment("sensor") is None
    assert registry.aliases("sensor") == {"production": 1}
    assert registry.get("sensor", 2).rejected

    registry.start_experiment("sensor", 3, weight=0.5)
    registry.conclude_experiment("sensor", promote=True)
    assert registry.aliases("sensor") == {"production": 3}
    kinds = [e.kind for e in registry.history("sensor")][3:]
    assert kinds == ["promote", "promote", "ab_start", "ab_end", "clear", "promote", "ab_start",
                     "ab_end", "promote", "clear"]
    with pytest.raises(ExperimentError, match="runs no A/B experiment"):
        registry.end_experiment("sensor")


def test_live_stats_add_up_across_replicas_and_windows(registry, checkpoints):
    registry.register("sensor", checkpoints["good"])
    buckets = [0] * 15
    buckets[3] = 10
    registry.record_serving_stats("sensor", "replica-a", [
        LiveStats(version=1, requests=10, errors=1, latency_ms_sum=80.0, latency_buckets=tuple(buckets),
                  labelled=4, correct=3)])
    registry.record_serving_stats("sensor", "replica-b", [
        LiveStats(version=1, requests=5, errors=0, latency_ms_sum=40.0, latency_buckets=tuple(buckets),
                  labelled=1, correct=1)])
    stats = registry.live_stats("sensor", 1)
    assert (stats.requests, stats.errors, stats.labelled, stats.correct) == (15, 1, 5, 4)
    assert stats.accuracy == pytest.approx(0.8)
    assert stats.latency_quantile_ms(0.95) == 9.75  # rank 19 of 20, interpolated inside the (5, 10] ms bucket
    assert registry.live_stats("sensor", 2).requests == 0


def test_export_uploads_the_bentoml_archive_to_s3(tp_home, checkpoints, s3_endpoint, monkeypatch):
    import boto3

    from train_platform.registry import ModelRegistry
    from train_platform.registry.export import export_version
    from train_platform.registry.exceptions import ExportError
    from train_platform.settings import reload_settings

    monkeypatch.setenv("TP_S3_ENDPOINT", s3_endpoint)
    for var, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(var, value)
    registry = ModelRegistry(reload_settings())
    registry.register("sensor", checkpoints["good"])
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="models-export")
    uri = export_version(registry, "sensor", 1, "s3://models-export/registry")
    assert uri == "s3://models-export/registry/sensor/v1.bentomodel"
    head = s3.head_object(Bucket="models-export", Key="registry/sensor/v1.bentomodel")
    assert head["ContentLength"] > (checkpoints["good"] / "model.pt").stat().st_size
    assert registry.history("sensor")[-1].detail == {"uri": uri}
    with pytest.raises(ExportError, match="s3://bucket"):
        export_version(registry, "sensor", 1, "/tmp/not-s3")
    with pytest.raises(ExportError, match="failed"):
        export_version(registry, "sensor", 1, "s3://no-such-bucket-here")


@pytest.mark.slow
def test_cli_register_list_promote_rollback_history(tp_home, checkpoints):
    import json
    import subprocess
    import sys

    def tp(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "train_platform.cli", "model", *args],
                              capture_output=True, text=True, timeout=120)

    first = tp("register", "cli-model", "--checkpoint", str(checkpoints["good"]), "--metrics", '{"accuracy": 0.9}',
               "--gate", "passed")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "1"
    assert tp("register", "cli-model", "--checkpoint", str(checkpoints["bad"])).stdout.strip() == "2"
    assert tp("promote", "cli-model", "1").returncode == 0
    assert tp("promote", "cli-model", "2").returncode == 0
    listed = json.loads(tp("list", "cli-model", "--json").stdout)
    assert [(v["version"], v["aliases"], v["gate_status"]) for v in listed] == [
        (1, [], "passed"), (2, ["production"], "pending")]
    started = tp("experiment", "set", "cli-model", "1", "--weight", "0.2")
    assert started.returncode == 0 and "A/B v2 (production) vs v1 at 20%" in started.stdout
    assert "cleared" in tp("experiment", "clear", "cli-model").stdout
    rolled = tp("rollback", "cli-model")
    assert rolled.returncode == 0 and "rolled back to version 1" in rolled.stdout
    history = tp("history", "cli-model").stdout.splitlines()
    assert "rollback production: 2 -> 1" in history[-1]
    missing = tp("promote", "cli-model", "9")
    assert missing.returncode == 3
    assert missing.stderr.strip().endswith("model 'cli-model' has no version 9; its versions are 1, 2")
    assert "Traceback" not in missing.stderr
