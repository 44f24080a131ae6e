"""Fixtures of the sampling and pre-label tests: the small classifiers of
``tests/registry/models.py`` (trained once per session by ``python -m ml.train``), one of
them registered, and a dataset holding their 40 test recordings, unlabelled, on the
embedded shape and (``services``) on PostgreSQL, Redis and the S3 endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.datasets.conftest import backend, ds_name, s3_bucket  # noqa: F401  (fixtures)
from tests.registry.models import trained_models

ROOT = Path(__file__).resolve().parents[2]
OWNER = "alice"


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict:
    return trained_models(tmp_path_factory.getbasetemp() / "tp-models")


@dataclass
class Pool:
    name: str
    model: str  # a registered version's reference
    truth: dict[str, str]  # the true label of each sample id
    ids: list[str]

    def tp(self, *args: str, user: str = OWNER, timeout: int = 300) -> subprocess.CompletedProcess:
        """``tp ARGS`` in a fresh interpreter, as ``user``."""
        return subprocess.run([sys.executable, "-m", "train_platform.cli", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, "TP_USER": user})

    def json(self, *args: str, user: str = OWNER) -> dict:
        run = self.tp(*args, "--json", user=user)
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout)

    def rows(self, ref: str = "main") -> dict[str, dict]:
        from train_platform.datasets import open_dataset

        table = open_dataset(self.name, user=OWNER).read(ref, columns=("sample_id", "label", "label_source", "confidence",
                                                                        "status", "annotator", "alternatives"))
        # No alternatives reads as null or as [] (a rewritten data file), the same thing.
        return {r["sample_id"]: {**r, "alternatives": r["alternatives"] or None} for r in table.to_pylist()}


@pytest.fixture
def pool(backend, ds_name, checkpoints, tmp_path) -> Pool:  # noqa: F811
    from train_platform.datasets import create_dataset
    from train_platform.registry import ModelRegistry

    data = np.load(checkpoints["test_data"])
    ids = [f"rec-{i:03d}" for i in range(len(data["X"]))]
    source = tmp_path / "pool.npz"
    np.savez(source, X=data["X"], ids=np.array(ids))
    create_dataset(ds_name, user=OWNER, source=str(source))
    ModelRegistry(backend).register("clf", checkpoints["good"], gate_status="passed")
    return Pool(name=ds_name, model="model:clf:v1", truth=dict(zip(ids, (str(v) for v in data["y"]))), ids=ids)
