"""Task type ``annotation_check``: check a dataset's annotations with ``tp dataset check``."""

from __future__ import annotations

from typing import Any, Mapping

from operators.container_command import ContainerCommandOperator


class AnnotationCheckOperator(ContainerCommandOperator):
    """Runs the annotation check of a dataset snapshot: data expectations, likely wrong
    labels, annotator agreement, one score. The command exits non-zero when the score is
    below the minimum (or on bad input), which fails the task, so the tasks that depend on
    it (training, a merge) do not run.

    Input ``data`` (the first input when not named so): a dataset ref ``tp://NAME@REF``.
    Optional input ``model``: a model reference ``model:NAME:ALIAS|vN`` whose predictions
    judge the labels (else a cross-validated classifier does). Parameter ``min_score``
    (default: the command's, 0.95). The first output folder, when there is one, receives the
    report (the HTML Data Docs, ``index.html``, and ``check.json``).
    """

    task_type = "annotation_check"
    ui_color = "#fbf0e0"

    def default_command(self, inputs: Mapping[str, str], outputs: Mapping[str, str],
                        params: Mapping[str, Any]) -> list[str]:
        if not inputs:
            raise ValueError(f"{self.task_id}: annotation_check needs a `data` input (a dataset ref tp://NAME@REF)")
        data = inputs.get("data") or next(iter(inputs.values()))
        if not data.startswith("tp://"):
            raise ValueError(f"{self.task_id}: annotation_check's `data` input must be a dataset ref tp://NAME@REF, got {data!r}")
        command = ["python", "-m", "train_platform.cli", "dataset", "check", data, "--json"]
        if inputs.get("model"):
            command += ["--model", inputs["model"]]
        if params.get("min_score") is not None:
            command += ["--min-score", str(params["min_score"])]
        if outputs:
            command += ["--report", next(iter(outputs.values()))]
        return command
