"""Shared fixtures. `make test` starts PostgreSQL, Redis and an S3 endpoint (moto's server)
and exports their URLs as TP_TEST_*; tests that need them take the fixtures below."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Airflow reads its configuration when first imported: give the whole session its own
# AIRFLOW_HOME (SQLite metadata DB), never the developer's ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="tp-test-airflow-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
os.environ.setdefault("TP_HOME", tempfile.mkdtemp(prefix="tp-test-home-"))


def _service_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        message = f"{name} is not set: run the suite with `make test`, which starts the services"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return value


@pytest.fixture
def tp_home(tmp_path, monkeypatch) -> Path:
    """A fresh TP_HOME for one test, with settings re-read."""
    from train_platform.settings import reload_settings

    home = tmp_path / "tp_home"
    home.mkdir()
    monkeypatch.setenv("TP_HOME", str(home))
    for var in ("TP_CATALOG_URL", "TP_WAREHOUSE", "TP_S3_ENDPOINT", "TP_REDIS_URL", "TP_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    reload_settings()
    yield home
    monkeypatch.undo()
    reload_settings()


@pytest.fixture
def kubeconfig(tmp_path, monkeypatch) -> Path:
    """An offline cluster config: KubernetesPodOperator reads one to label a pod; none is contacted.

    The kubernetes client reads ``KUBECONFIG`` once, when ``kubernetes.config`` is first imported,
    so setting the variable alone misses whenever an earlier test in this process imported it.
    """
    import yaml
    from kubernetes.config import kube_config

    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "offline",
        "clusters": [{"name": "offline", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "tester", "user": {"token": "unused"}}],
        "contexts": [{"name": "offline", "context": {"cluster": "offline", "user": "tester"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    return path


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return _service_env("TP_TEST_POSTGRES_URL")


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _service_env("TP_TEST_REDIS_URL")


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    return _service_env("TP_TEST_S3_ENDPOINT")


@pytest.fixture(scope="session")
def python_exe() -> str:
    return sys.executable


def pytest_collection_modifyitems(config, items):
    """Files with a test marked ``long(minutes=N)`` run first, longest first: `make test`
    spreads whole files over parallel workers, and a long file started last would keep one
    worker busy after the others are done. The sort is stable, so the rest keep their order."""
    minutes: dict = {}
    for item in items:
        marker = item.get_closest_marker("long")
        if marker is not None:
            minutes[item.path] = max(minutes.get(item.path, 0), marker.kwargs.get("minutes", 1))
    items.sort(key=lambda item: -minutes.get(item.path, 0))
