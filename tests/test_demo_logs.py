"""The runs `make demo` makes have task logs the Airflow UI can show.

scripts/demo.py runs each pipeline with `airflow dags test --use-executor` against an
`airflow api-server` of its own; these tests make one such run of the example command pipeline
with the demo's own functions and read its task logs from the API server's log endpoint, the one
the UI's log view calls (`GET /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try}`).
"""

from __future__ import annotations

import importlib.util
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from tests.pipelines.helpers import BIN, COMMAND_EXAMPLE, airflow_project

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DAG_ID = "example-command-pipeline"


def _load_demo():
    spec = importlib.util.spec_from_file_location("tp_demo", ROOT / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = _load_demo()


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo-logs")
    env = demo.airflow_env(airflow_project(root, [COMMAND_EXAMPLE]))
    with demo.ApiServer(env, root / "api-server.log") as server:
        yield server


def _log(api, run_id: str, task_id: str) -> list[dict]:
    """The whole answer of the log endpoint for try 1, source header included."""
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/{task_id}/logs/1"
    return api.get(path)["content"]


def test_every_task_of_a_demo_run_has_its_log_in_the_ui(api, capsys):
    demo.run_dag(DAG_ID, {"samples": 37}, api, ("generated ",))
    assert "task logs in the UI: generate (" in capsys.readouterr().out
    run_id = api.latest_run_id(DAG_ID)

    found = api.task_logs(DAG_ID, run_id)
    assert set(found) == {"generate", "smooth", "summarize"}
    assert all(isinstance(lines, list) for lines in found.values()), found  # every task ran
    logs = {task: [str(line["event"]) for line in lines] for task, lines in found.items()}
    assert any("generated 37 readings" in event for event in logs["generate"]), logs["generate"]
    assert any("smoothed 37 readings with a window of 5" in event for event in logs["smooth"]), logs["smooth"]
    assert any(event.startswith("summary: ") for event in logs["summarize"]), logs["summarize"]

    # read from the file Airflow's task supervisor wrote under [logging] base_log_folder
    sources = [str(line["event"]) for line in _log(api, run_id, "generate") if not line.get("timestamp")]
    folder = Path(api.env["AIRFLOW_HOME"]) / "logs" / f"dag_id={DAG_ID}"
    assert any(source.startswith(str(folder)) and source.endswith("task_id=generate/attempt=1.log")
               for source in sources), sources


def test_a_plain_dags_test_run_leaves_no_log_for_the_ui(api):
    """Why the demo passes --use-executor: without it, `airflow dags test` runs the tasks inside
    its own process and writes their logs to its stdout only."""
    result = subprocess.run([str(BIN / "airflow"), "dags", "test", DAG_ID, "-c", '{"samples": 12}'],
                            env=api.env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "generated 12 readings" in result.stdout + result.stderr
    run_id = api.latest_run_id(DAG_ID)
    assert api.task_logs(DAG_ID, run_id)["generate"] == []
    assert not any("generated 12 readings" in str(line["event"]) for line in _log(api, run_id, "generate"))
