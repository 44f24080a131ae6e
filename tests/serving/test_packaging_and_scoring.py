"""Packaging a version as a Bento, and batch inference with ``python -m ml.serving.batch_inference``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml


@pytest.mark.slow
def test_packaging_builds_a_bento_with_service_pins_and_model(tp_home, checkpoints):
    from train_platform.registry import ModelRegistry, PackagingError
    from train_platform.registry.bento_store import bentoml_home
    from train_platform.registry.packaging import build_bento
    from train_platform.settings import get_settings

    registry = ModelRegistry(get_settings())
    registry.register("sensor", checkpoints["good"])
    tag = build_bento(registry, "sensor", "latest")
    assert tag == "tp-sensor:v1"
    assert registry.get("sensor", 1).bento_tag == tag
    assert registry.history("sensor")[-1].kind == "package"
    bento = bentoml_home(get_settings()) / "bentos" / "tp-sensor" / "v1"
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    assert info["service"] == "ml.service:InferenceService"
    assert [m["tag"] for m in info["models"]] == ["sensor:v1"]
    assert {"name": "TP_SERVE_MODEL", "value": "sensor"} in [{k: e[k] for k in ("name", "value")} for e in info["envs"]]
    assert (bento / "src" / "ml" / "service.py").exists()
    assert (bento / "src" / "include" / "train_platform" / "registry" / "model_registry.py").exists()
    assert not (bento / "src" / "tests").exists()
    # The exported Bento carries the model, byte for byte.
    import tarfile

    from train_platform.registry.packaging import export_bento

    archive = export_bento(registry, tag, str(tp_home / "sensor.bento"))
    with tarfile.open(archive) as tar:
        weights = tar.extractfile("./models/sensor/v1/model.pt").read()
    assert weights == (checkpoints["good"] / "model.pt").read_bytes()
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    for pin in ("torch==2.13.0", "bentoml==1.4.40", "redis==8.1.0", "numpy=="):
        assert pin in requirements
    with pytest.raises(PackagingError, match="not installed"):
        from train_platform.registry.packaging import pinned_packages

        pinned_packages(("no-such-package-xyz",))


@pytest.mark.slow
def test_packaging_an_unchanged_version_again_reuses_its_bento(tp_home, checkpoints, monkeypatch, caplog):
    import logging

    from train_platform.registry import ModelRegistry
    from train_platform.registry import packaging
    from train_platform.registry.bento_store import bento_store
    from train_platform.settings import get_settings

    caplog.set_level(logging.INFO, logger=packaging.__name__)
    registry = ModelRegistry(get_settings())
    registry.register("sensor", checkpoints["good"])
    first = packaging.build_bento(registry, "sensor", "latest")
    created = bento_store(get_settings()).get(first).info.creation_time
    assert packaging.build_bento(registry, "sensor", "latest") == first  # used to fail: "already exists"
    assert "up to date" in caplog.text
    assert bento_store(get_settings()).get(first).info.creation_time == created
    # Changed service code (here: a different package set) means a rebuilt Bento, same tag.
    monkeypatch.setattr(packaging, "pinned_packages", lambda: ["numpy==0.0.0-other"])
    monkeypatch.setattr(packaging, "build_digest", lambda packages: "changed")
    caplog.clear()
    assert packaging.build_bento(registry, "sensor", "latest") == first
    assert "rebuilding" in caplog.text
    rebuilt = bento_store(get_settings()).get(first)
    assert rebuilt.info.creation_time > created and rebuilt.info.labels["build_digest"] == "changed"


@pytest.mark.slow
def test_batch_scoring_writes_one_prediction_per_sample(tp_home, checkpoints, tmp_path):
    from ml.checkpoint import load_checkpoint
    from ml.predict import predict
    from train_platform.registry import ModelRegistry
    from train_platform.settings import get_settings

    registry = ModelRegistry(get_settings())
    registry.register("sensor", checkpoints["good"])
    registry.promote("sensor", 1)
    out = tmp_path / "out" / "predictions.jsonl"
    run = subprocess.run([sys.executable, "-m", "ml.serving.batch_inference", "--model", "model:sensor:production", "--data",
                          str(checkpoints["test_data"]), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["predictions"] == 40
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    data = np.load(checkpoints["test_data"])
    expected = predict(load_checkpoint(checkpoints["good"]), [{"sensor": x} for x in data["X"]])
    assert [r["id"] for r in rows] == [str(i) for i in range(40)]
    assert [r["label"] for r in rows] == [e["label"] for e in expected]
    assert {r["model_version"] for r in rows} == {1}

    missing = subprocess.run([sys.executable, "-m", "ml.serving.batch_inference", "--model", "model:sensor:candidate", "--data",
                              str(checkpoints["test_data"]), "--out", str(tmp_path / "x.jsonl")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0
    assert "alias 'candidate' of model 'sensor' points at no version" in missing.stderr
    assert not (tmp_path / "x.jsonl").exists()
