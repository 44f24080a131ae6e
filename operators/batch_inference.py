"""Task type ``batch_inference``: score a data set with ``python -m ml.serving.batch_inference``."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any, Mapping

from operators.container_command import ContainerCommandOperator


class BatchInferenceOperator(ContainerCommandOperator):
    """Scores every sample of a data set with a registered model version.

    Input ``data`` (the first input when not named so): a dataset ref ``tp://NAME@REF``,
    a file or an ``aeon:`` set. Model: the ``model_name`` parameter (else the pipeline's
    name) at ``model_version`` (a number, an alias or ``latest``; default ``production``),
    passed on as the reference ``model:NAME:ALIAS`` or ``model:NAME:vN``. The first output
    folder receives
    ``predictions.jsonl``, one line per sample with its id, the answer and the version.
    """

    task_type = "batch_inference"
    ui_color = "#e0f0f5"

    def default_command(self, inputs: Mapping[str, str], outputs: Mapping[str, str],
                        params: Mapping[str, Any]) -> list[str]:
        from train_platform.registry.refs import ModelRef

        if not inputs or not outputs:
            raise ValueError(f"{self.task_id}: batch_inference needs a `data` input and an output folder")
        data = inputs.get("data") or next(iter(inputs.values()))
        ref = ModelRef.of(str(params.get("model_name") or self.pipeline), params.get("model_version") or "production")
        out = str(PurePosixPath(next(iter(outputs.values()))) / "predictions.jsonl")
        return ["python", "-m", "ml.serving.batch_inference", "--model", str(ref), "--data", data, "--out", out]
