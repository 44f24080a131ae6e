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
DAILY = ROOT / "dags" / "pipelines" / "daily-deployment.yaml"


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    env = airflow_project(tmp_path_factory.mktemp("continual"), [PIPELINE, DAILY])
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


def test_daily_deployment_succeeds_on_consecutive_days(env):
    """Run right after the two runs above (production v1 with its Bento, v2 in an A/B phase
    without traffic yet): production has not changed, so packaging reuses v1's Bento, and
    the next day's run succeeds as well instead of failing on "already exists"."""
    before = {v["version"]: v["bento_tag"] for v in _registry(env)}
    for day in (1, 2):
        run = dags_test(env, "daily-deployment", {"model_name": "clf", "min_requests": 1000})
        log = run.stdout + run.stderr
        assert run.returncode == 0 and "state=success" in log, f"day {day}: {log[-4000:]}"
        assert "already exists" not in log
    after = {v["version"]: v for v in _registry(env)}
    assert after[1]["bento_tag"] == before[1] == "tp-clf:v1"
    assert "production" in after[1]["aliases"]
