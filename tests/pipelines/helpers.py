"""Small helpers shared by the pipeline tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "dags" / "pipelines" / "incremental-learning-pipeline.yaml"
COMMAND_EXAMPLE = ROOT / "dags" / "pipelines" / "example-command-pipeline.yaml"
LOADER = ROOT / "dags" / "train_platform_pipelines.py"
BIN = Path(sys.executable).parent
# Service URLs the suite may export; an Airflow project of a test uses the embedded defaults.
_SCALE_SETTINGS = ("TP_CATALOG_URL", "TP_WAREHOUSE", "TP_S3_ENDPOINT", "TP_REDIS_URL", "TP_DATABASE_URL")


def airflow_project(root: Path, pipelines: list[Path], *, migrate: bool = True) -> dict[str, str]:
    """A dags folder with our loader and ``pipelines``, its own AIRFLOW_HOME (SQLite) and
    TP_HOME under ``root``; returns the environment to run Airflow commands in."""
    dags = root / "dags"
    dags.mkdir(parents=True)
    shutil.copy(LOADER, dags / LOADER.name)
    for pipeline in pipelines:
        shutil.copy(pipeline, dags / pipeline.name)
    env = {k: v for k, v in os.environ.items() if k not in _SCALE_SETTINGS}
    env.update({"AIRFLOW_HOME": str(root / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "TP_HOME": str(root / "tp")})
    if migrate:
        subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True)
    return env


def dags_test(env: dict[str, str], dag_id: str, conf: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    """One real DAG run with `airflow dags test` (an in-process scheduler)."""
    return subprocess.run([str(BIN / "airflow"), "dags", "test", dag_id, "-c", json.dumps(conf)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def minimal(name: str = "tiny", version: str = "1.0.0", extra_task: str = "") -> str:
    return f"""
    apiVersion: train-platform/v1
    kind: Pipeline
    metadata:
      name: {name}
      version: "{version}"
    spec:
      tasks:
        - name: only
          type: command
          command: ["python", "-c", "print('hi')"]
    {extra_task}
    """
