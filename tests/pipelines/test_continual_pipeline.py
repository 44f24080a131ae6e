"""The main job through Airflow: dataset -> training -> evaluation -> registry -> deployment ->
Bento, twice, the second run continuing from the model in production."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.pipelines.helpers import BIN, ROOT, airflow_project, dags_test

pytestmark = [pytest.mark.slow, pytest.mark.long(minutes=4)]
PIPELINE = ROOT / "dags" / "pipelines" / "sensor-continual-learning.yaml"
DAILY = ROOT / "dags" / "pipelines" / "daily-deployment.yaml"


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    env = airflow_project(tmp_path_factory.mktemp("continual"), [PIPELINE, DAILY])
    subprocess.run([str(BIN / "tp"), "dataset", "import", "sensors", "--from", "aeon:BasicMotions:train",
                    "--as", "platform-team"], env=env, check=True, capture_output=True)
    return env


def _run(env: dict[str, str]) -> str:
    # 6 epochs: enough for BasicMotions to pass the gate's default accuracy floor (0.7). The
    # second run retrains on the same 40 test recordings, where one recording is 2.5 points:
    # a 10-point tolerance keeps this test about continuing from production; the gate's own
    # rules are tested below and in tests/registry.
    run = dags_test(env, "sensor-continual-learning", {"epochs": 6, "test_data": "aeon:BasicMotions:test",
                                                         "model_name": "clf", "gate_max_metric_drop": 0.1})
    log = run.stdout + run.stderr
    assert run.returncode == 0 and "state=success" in log, log[-4000:]
    return log


def _tp(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([str(BIN / "tp"), *args], env=env, capture_output=True, text=True, check=True)
    return out.stdout


def _history(env: dict[str, str]) -> list[dict]:
    return json.loads(_tp(env, "model", "history", "clf", "--json"))


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
    assert '"action": "ab_started"' in second, json.dumps(_registry(env))[-3000:]
    versions = {v["version"]: v for v in _registry(env)}
    assert set(versions) == {1, 2}
    assert "candidate" in versions[2]["aliases"] and "production" in versions[1]["aliases"]
    assert "accuracy" in versions[2]["metrics"]
    # The gate compared v2 with production v1, measured on the same held-out data in one run.
    gate = versions[2]["gate_detail"]
    assert gate["passed"] and gate["figures"]["production"] == 1
    assert gate["figures"]["data"]["ref"] == "aeon:BasicMotions:test" and gate["figures"]["data"]["samples"] == 40
    assert set(gate["figures"]["old_class_accuracy"]) == {"candidate", "production"}
    assert versions[1]["gate_detail"]["reasons"][-1] == "no production version to compare with"
    # Tasks act as the pipeline's owner: every step is recorded as platform-team.
    assert {e["actor"] for e in _history(env)} == {"platform-team"}
    assert {v["created_by"] for v in versions.values()} == {"platform-team"}


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


def test_a_candidate_that_fails_its_gate_stops_the_pipeline_before_deployment(env, tmp_path):
    """A third run trains on a copy of the data with every label rotated by one class: a real
    candidate, far worse than production on the true held-out labels. With no A/B phase
    running, a passing candidate would start one (and v2, passed and not rejected, is
    eligible too); a failing one is registered with the reasons, and deploy and package are
    skipped."""
    import numpy as np

    from ml.data import load_ref

    train = load_ref("aeon:BasicMotions:train")
    names = sorted(set(train.labels))
    rotated = dict(zip(names, names[1:] + names[:1]))
    data = tmp_path / "rotated.npz"
    np.savez(data, X=np.stack(train.series), y=np.array([rotated[label] for label in train.labels]),
             ids=np.array(train.ids))
    subprocess.run([str(BIN / "tp"), "dataset", "import", "sensors_rotated", "--from", str(data), "--as",
                    "platform-team"], env=env, check=True, capture_output=True)
    _tp(env, "model", "experiment", "clear", "clf")  # no A/B phase runs now
    before = len(_history(env))
    bentos = sorted((Path(env["TP_HOME"]) / "bentoml" / "bentos").rglob("bento.yaml"))

    run = dags_test(env, "sensor-continual-learning", {"epochs": 6, "test_data": "aeon:BasicMotions:test",
                                                         "model_name": "clf", "dataset": "tp://sensors_rotated@main"})
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    assert "failed its evaluation gate" in log
    assert "state=success" in log  # a gate that fails is a decision, not a failed run
    run_id = re.search(r"DagRun Finished: dag_id=sensor-continual-learning, [^,]*, run_id=([^,]+),", log)[1]
    listed = subprocess.run([str(BIN / "airflow"), "tasks", "states-for-dag-run", "sensor-continual-learning", run_id,
                             "-o", "json"], env=env, capture_output=True, text=True, check=True)
    states = {t["task_id"]: t["state"] for t in json.loads(listed.stdout.strip().splitlines()[-1])}
    assert states == {"train": "success", "evaluate": "success", "deploy": "skipped", "package": "skipped"}

    versions = {v["version"]: v for v in _registry(env)}
    v3 = versions[3]
    assert v3["gate_status"] == "failed" and v3["aliases"] == [] and not v3["bento_tag"]
    reasons = v3["gate_detail"]["reasons"]
    assert any(r.startswith("accuracy ") and "< production v1's" in r for r in reasons), reasons
    assert any(r.startswith("accuracy on the classes production v1 knew") for r in reasons), reasons
    new = _history(env)[before:]
    assert [(e["kind"], e["version"], e["actor"]) for e in new] == [
        ("register", 3, "platform-team"), ("gate", 3, "platform-team")]
    assert "production" in versions[1]["aliases"] and "candidate" not in versions[2]["aliases"]
    assert sorted((Path(env["TP_HOME"]) / "bentoml" / "bentos").rglob("bento.yaml")) == bentos
    listed = _tp(env, "model", "list", "clf")
    assert "gate failed: " + "; ".join(reasons) in listed
