"""Real inference servers for the serving tests: ``tp model serve``'s code path
(``bentoml.serve`` of ml/service.py) on loopback, a SQLite registry in a temporary TP_HOME,
and two models trained by ``ml.train``. ``served`` uses the real Redis as cache and
prediction log; ``served_local`` (tests/serving/test_hardening.py) runs without Redis and
with small bounds."""

from __future__ import annotations

import contextlib
import re
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.registry.models import trained_models

TOKEN = "test-token-1"
# Named tokens with one scope each (TP_API_TOKENS NAME:SCOPES=TOKEN); TOKEN has both.
PREDICTOR_TOKEN = "predict-only-token"
LABELLER_TOKEN = "feedback-only-token"


@dataclass
class Served:
    url: str
    name: str
    registry: object
    checkpoints: dict
    redis_url: str | None
    home: Path
    workers: int

    def samples(self, n: int, seed: int = 0) -> tuple[list[list[list[float]]], list[str]]:
        """Real test samples (distinct per seed, so the cache does not answer) and labels."""
        data = np.load(self.checkpoints["test_data"])
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(data["X"]), n)
        x = data["X"][idx] + rng.normal(0, 1e-3, (n, 1, data["X"].shape[2])).astype(np.float32)
        return x.tolist(), [str(v) for v in data["y"][idx]]


def worker_gauges(url: str, name: str, **labels: str) -> dict[str, float]:
    """A per-worker gauge (``multiprocess_mode="liveall"``) of ``/metrics``: pid -> value,
    for the series whose labels include ``labels``."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    found = {}
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            pid = re.search(r'pid="([^"]+)"', head)
            found[pid.group(1) if pid else ""] = float(value)
    return found


def wait_until_every_worker(served: "Served", role: str, version: int, timeout: float = 15.0) -> None:
    """Until each of the server's worker processes reports (``tp_served_version``) that it
    routes ``role`` (production, candidate) to ``version``."""
    deadline = time.monotonic() + timeout
    seen: dict[str, float] = {}
    while time.monotonic() < deadline:
        seen = worker_gauges(served.url, "tp_served_version", model=served.name, role=role)
        if len(seen) == served.workers and all(v == version for v in seen.values()):
            return
        time.sleep(0.05)
    raise AssertionError(f"not every worker routes {role} to v{version} within {timeout} s: {seen}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the inference server at {url} did not become ready in {timeout:.0f} s")


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict:
    return trained_models(tmp_path_factory.getbasetemp() / "tp-models")


@contextlib.contextmanager
def start_served(home: Path, checkpoints: dict, *, redis_url: str | None, workers: int = 2,
                 env: dict[str, str] | None = None) -> Iterator[Served]:
    """A server for a new model (v1 good, v2 bad, v1 production) in ``home``, with the
    environment the workers inherit set for its lifetime."""
    from train_platform.registry import ModelRegistry
    from train_platform.registry.serve import start_server
    from train_platform.settings import reload_settings

    name = f"svc-{uuid.uuid4().hex[:8]}"  # Redis is shared between runs: keys carry the name
    with pytest.MonkeyPatch.context() as mp:
        for var in ("TP_DATABASE_URL", "TP_CATALOG_URL", "TP_WAREHOUSE", "TP_S3_ENDPOINT", "BENTOML_HOME",
                    "TP_REDIS_URL", "TP_USER"):
            mp.delenv(var, raising=False)
        mp.setenv("TP_HOME", str(home))
        if redis_url:
            mp.setenv("TP_REDIS_URL", redis_url)
        mp.setenv("TP_API_TOKENS", f"{TOKEN},second-token,predictor:predict={PREDICTOR_TOKEN},"
                                   f"labeller:feedback={LABELLER_TOKEN}")
        mp.setenv("TP_SERVE_WORKERS", str(workers))
        # Fast polling and flushing so tests see registry changes and live stats quickly.
        mp.setenv("TP_SERVE_POLL_S", "0.2")
        mp.setenv("TP_SERVE_STATS_FLUSH_S", "0.3")
        # A short drift window (~80 requests of 24 steps) so a shift shows within one test.
        mp.setenv("TP_SERVE_DRIFT_WINDOW", "2000")
        for var, value in (env or {}).items():
            mp.setenv(var, value)
        registry = ModelRegistry(reload_settings())
        registry.register(name, checkpoints["good"], gate_status="passed")
        registry.register(name, checkpoints["bad"], gate_status="passed")
        registry.promote(name, 1)
        # The deployment tasks of these tests act as the pipeline owner, who needs a role.
        registry.grant(name, "platform-team", "maintainer")
        url = f"http://127.0.0.1:{_free_port()}"
        server = start_server(name, port=int(url.rsplit(":", 1)[1]))
        try:
            wait_ready(url)
            served = Served(url=url, name=name, registry=registry, checkpoints=checkpoints,
                            redis_url=redis_url, home=home, workers=workers)
            wait_until_every_worker(served, "production", 1, timeout=60.0)
            yield served
        finally:
            server.stop()
    reload_settings()


@pytest.fixture(scope="module")
def served(tmp_path_factory, redis_url, checkpoints):
    with start_served(tmp_path_factory.mktemp("serving-home"), checkpoints, redis_url=redis_url) as server:
        yield server
