"""Task type ``data_processing``: merge and check raw sensor files into one training-ready file."""

from __future__ import annotations

from typing import Any, Mapping

from operators.container_command import ContainerCommandOperator


class DataProcessingOperator(ContainerCommandOperator):
    """By default runs ``python -m ml.prepare`` over every input folder or file and writes
    ``data.npz`` into the first output. Give ``command`` to run your own preparation."""

    task_type = "data_processing"
    ui_color = "#eaf6ea"

    def default_command(self, inputs: Mapping[str, str], outputs: Mapping[str, str],
                        params: Mapping[str, Any]) -> list[str]:
        if not inputs or not outputs:
            raise ValueError(f"{self.task_id}: data_processing needs at least one input and one output")
        command = ["python", "-m", "ml.prepare", "--out", next(iter(outputs.values()))]
        for location in inputs.values():
            command += ["--input", location]
        return command
