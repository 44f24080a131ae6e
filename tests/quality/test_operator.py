"""The annotation_check task: its default command, that parsing a pipeline holding one loads
none of the check's libraries, and that a failed check stops the run before what depends on
it (through Airflow, on the local executor)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from operators.annotation_check import AnnotationCheckOperator
from tests.pipelines.helpers import airflow_project, dags_test, write


def _task() -> AnnotationCheckOperator:
    return AnnotationCheckOperator(task_id="check", pipeline="p", pipeline_version="1.0.0")


def test_the_default_command_runs_tp_dataset_check(tmp_path):
    command = _task().default_command({"data": "tp://sensors@relabel", "model": "model:sensors:production"},
                                      {"report": str(tmp_path / "report")}, {"min_score": 0.9})
    assert command == ["python", "-m", "train_platform.cli", "dataset", "check", "tp://sensors@relabel", "--json",
                       "--model", "model:sensors:production", "--min-score", "0.9", "--report", str(tmp_path / "report")]


def test_without_model_min_score_or_output_the_commands_defaults_apply():
    command = _task().default_command({"samples": "tp://sensors@main"}, {}, {})
    assert command == ["python", "-m", "train_platform.cli", "dataset", "check", "tp://sensors@main", "--json"]


@pytest.mark.parametrize("inputs, message", [({}, "needs a `data` input"),
                                             ({"data": "/mnt/data/x.npz"}, "must be a dataset ref tp://NAME@REF")])
def test_a_task_without_a_dataset_ref_is_refused(inputs, message):
    with pytest.raises(ValueError, match=message):
        _task().default_command(inputs, {}, {})


PIPELINE = """
apiVersion: train-platform/v1
kind: Pipeline
metadata: {{name: {name}, version: "1.0.0", owner: alice}}
spec:
  parameters:
    min_score: {{type: number, default: {min_score}}}
  default_args: {{retries: 0}}
  tasks:
    - name: check-labels
      type: annotation_check
      inputs: [{{name: data, source: "tp://{dataset}@{ref}"}}]
      outputs: [{{name: report, destination: /mnt/quality/{name}}}]
    - name: train
      type: command
      command: ["python", "-c", "print('training on checked labels')"]
      depends_on: [check-labels]
"""


def test_parsing_a_pipeline_with_a_check_loads_none_of_its_libraries(tmp_path):
    dags = tmp_path / "dags"
    write(dags / "checked.yaml", PIPELINE.format(name="checked", dataset="vib", ref="main", min_score=0.95))
    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys, json\n"
        "from train_platform.compiler.loader import load_dags\n"
        f"dags = load_dags({str(dags)!r})\n"
        "heavy = ('great_expectations', 'cleanlab', 'sklearn', 'statsmodels', 'pandas', 'pyiceberg', 'torch')\n"
        "print(json.dumps({'dags': sorted(dags), 'operators': sorted({type(t).__name__ for t in dags['checked'].tasks}),"
        " 'heavy': [m for m in heavy if m in sys.modules]}))\n"
    )
    env = {**os.environ, "TP_HOME": str(tmp_path / "home"), "AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=root, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["dags"] == ["checked"] and "AnnotationCheckOperator" in result["operators"]
    assert result["heavy"] == []


@pytest.mark.slow
def test_a_failed_check_fails_its_task_and_the_run_stops_before_training(tmp_path):
    env = airflow_project(tmp_path, [])
    dags = Path(env["AIRFLOW__CORE__DAGS_FOLDER"])

    def tp(*argv: str) -> None:
        subprocess.run([sys.executable, "-m", "train_platform.cli", "dataset", *argv, "--as", "alice"],
                       env=env, check=True, capture_output=True, text=True, timeout=300)

    tp("import", "vib", "--from", "aeon:BasicMotions:train")
    tp("branch", "vib", "typo")
    tp("label", "vib@typo", "basicmotions-train-00002=walkng")
    write(dags / "good.yaml", PIPELINE.format(name="good", dataset="vib", ref="main", min_score=0.95))
    write(dags / "bad.yaml", PIPELINE.format(name="bad", dataset="vib", ref="typo", min_score=1.0))

    good = dags_test(env, "good", {})
    log = good.stdout + good.stderr
    assert good.returncode == 0, log[-3000:]
    assert "training on checked labels" in log
    home = Path(env["TP_HOME"])
    report = json.loads((home / "fs/mnt/quality/good/check.json").read_text())
    assert report["passed"] is True and (home / "fs/mnt/quality/good/index.html").is_file()

    bad = dags_test(env, "bad", {})
    log = bad.stdout + bad.stderr
    assert "labels_in_label_set" in log  # the check's JSON is in the task's log
    assert "command exited with code 1" in log
    assert "training on checked labels" not in log
    assert "state=failed" in log
    report = json.loads((home / "fs/mnt/quality/bad/check.json").read_text())
    assert report["passed"] is False and report["ref"] == "typo"
