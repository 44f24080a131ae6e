"""Small helpers shared by the pipeline tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT.parent / "shared" / "examples" / "incremental-learning-pipeline.yaml"
if not EXAMPLE.exists():  # the example is also vendored in the dags folder
    EXAMPLE = ROOT / "dags" / "pipelines" / "incremental-learning-pipeline.yaml"
COMMAND_EXAMPLE = ROOT / "dags" / "pipelines" / "example-command-pipeline.yaml"
LOADER = ROOT / "dags" / "train_platform_pipelines.py"


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
