"""A task acts as its pipeline's owner: the platform sets TP_USER, a task's env cannot."""

from __future__ import annotations

import pytest

from tests.pipelines.helpers import airflow_project, dags_test, write

pytestmark = pytest.mark.slow

PIPELINE = """
apiVersion: train-platform/v1
kind: Pipeline
metadata: {name: who-acts, version: "1.0.0", owner: platform-team}
spec:
  tasks:
    - name: who
      type: command
      env: {TP_USER: mallory, OTHER: kept}
      command: ["python", "-c", "import os; print('acting as', os.environ['TP_USER'], 'other', os.environ['OTHER'])"]
"""


def test_a_tasks_env_cannot_name_another_user(tmp_path):
    path = write(tmp_path / "src" / "who-acts.yaml", PIPELINE)
    env = airflow_project(tmp_path / "project", [path])
    run = dags_test(env, "who-acts", {})
    log = run.stdout + run.stderr
    assert run.returncode == 0 and "state=success" in log, log[-3000:]
    assert "acting as platform-team other kept" in log
    assert "acting as mallory" not in log
