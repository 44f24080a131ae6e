"""Task type ``evaluation``: metrics of a checkpoint on a test set with ``python -m ml.evaluate``."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any, Mapping

from operators.container_command import ContainerCommandOperator


class EvaluationOperator(ContainerCommandOperator):
    """Inputs: ``model`` (a checkpoint folder) and ``test_data``; optionally ``baseline``, the
    version to measure on the same data in the same run (``model:NAME:production``: what the
    deployment task's evaluation gate compares the candidate with). The first output folder
    receives ``metrics.json``."""

    task_type = "evaluation"
    ui_color = "#f3eafb"

    def default_command(self, inputs: Mapping[str, str], outputs: Mapping[str, str],
                        params: Mapping[str, Any]) -> list[str]:
        missing = [name for name in ("model", "test_data") if name not in inputs]
        if missing or not outputs:
            raise ValueError(f"{self.task_id}: evaluation needs inputs `model` and `test_data` and an output "
                             f"(missing: {', '.join(missing) or 'output'})")
        out = str(PurePosixPath(next(iter(outputs.values()))) / "metrics.json")
        command = ["python", "-m", "ml.evaluate", "--checkpoint", inputs["model"], "--data", inputs["test_data"],
                   "--out", out]
        if inputs.get("baseline"):
            command += ["--baseline", inputs["baseline"]]
        return command
