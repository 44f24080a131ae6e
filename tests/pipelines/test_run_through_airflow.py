"""End to end through Airflow on SQLite: a three-task command pipeline on the local executor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.pipelines.helpers import COMMAND_EXAMPLE, airflow_project, dags_test, write

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory) -> dict[str, str]:
    return airflow_project(tmp_path_factory.mktemp("airflow-e2e"), [COMMAND_EXAMPLE])


def test_outputs_feed_inputs_and_trigger_params_reach_commands(airflow_env):
    run = dags_test(airflow_env, "example-command-pipeline", {"samples": 37, "window": 3})
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-3000:]
    assert "generated 37 readings" in log
    assert "smoothed 37 readings with a window of 3" in log
    home = Path(airflow_env["TP_HOME"])
    # /mnt/demo is the pipeline's user-demo claim (spec.mounts): its local folder under TP_HOME
    summary = json.loads((home / "mounts/pvc/user-demo/summary/summary.json").read_text())
    assert summary["count"] == 37
    # every task of the run records the pipeline version it ran
    records = [json.loads(p.read_text()) for p in (home / "runs" / "example-command-pipeline").glob("*/*/task.json")]
    assert {r["task_id"] for r in records} == {"generate", "smooth", "summarize"}
    assert {r["pipeline_version"] for r in records} == {"1.0.0"}


def test_a_failing_command_fails_the_task_and_the_run(airflow_env):
    dags = Path(airflow_env["AIRFLOW__CORE__DAGS_FOLDER"])
    write(dags / "failing.yaml", """
    apiVersion: train-platform/v1
    kind: Pipeline
    metadata: {name: failing, version: "1.0.0"}
    spec:
      default_args: {retries: 0}
      tasks:
        - name: boom
          type: command
          command: ["python", "-c", "import sys; print('about to fail'); sys.exit(3)"]
        - name: after
          type: command
          command: ["python", "-c", "print('must not run')"]
          depends_on: [boom]
    """)
    run = dags_test(airflow_env, "failing", {})
    log = run.stdout + run.stderr
    assert "about to fail" in log
    assert "command exited with code 3" in log
    assert "must not run" not in log
    assert "state=failed" in log


def test_a_parameter_outside_its_schema_is_refused_at_trigger_time(airflow_env):
    run = dags_test(airflow_env, "example-command-pipeline", {"samples": 2})
    assert run.returncode != 0
    assert "samples" in run.stdout + run.stderr
