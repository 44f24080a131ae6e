"""The main job through Airflow: dataset -> training -> evaluation -> registry -> deployment ->
Bento, twice, the second run continuing from the model in production."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.pipelines.helpers import BIN, ROOT, airflow_project, dags_test

pytestmark = pytest.mark.slow
PIPELINE = ROOT / "dags" / "pipelines" / "sensor-continual-learning.yaml"


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    env = airflow_project(tmp_path_factory.mktemp("continual"), [PIPELINE])
    subprocess.run([str(BIN / "tp"), "dataset", "import", "sensors", "--from", "aeon:BasicMotions:train",
                    "--as", "platform-team"], env=env, check=True, capture_output=True)
    return env


def _run(env: dict[str, str]) -> str:
    run = dags_test(env, "sensor-continual-learning", {"epochs": 2, "test_data": "aeon:BasicMotions:test",
                                                         "model_name": "clf"})
    log = run.stdout + run.stderr
    assert run.returncode == 0 and "state=success" in log, log[-4000:]
    return log


def _registry(env: dict[str, str]) -> list[dict]:
    out = subprocess.run([str(BIN / "tp"), "model", "list", "clf", "--json"], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def test_first_run_trains_from_scratch_and_second_continues_from_production(env):
    first = _run(env)
    assert "--mode initial" in first and "--init" not in first
    assert '"action": "first_production"' in first
    versions = _registry(env)
    assert [v["version"] for v in versions] == [1]
    assert "production" in versions[0]["aliases"] and versions[0]["gate_status"] == "passed"
    assert versions[0]["bento_tag"]

    second = _run(env)
    production = Path(env["TP_HOME"]) / "bentoml" / "models" / "clf" / "v1"
    assert "--mode incremental" in second and f"--init {production}" in second
    assert '"action": "ab_started"' in second
    versions = {v["version"]: v for v in _registry(env)}
    assert set(versions) == {1, 2}
    assert "candidate" in versions[2]["aliases"] and "production" in versions[1]["aliases"]
    assert "accuracy" in versions[2]["metrics"]
