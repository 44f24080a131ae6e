"""Task type ``prelabel``: a model's labels as pending pre-labels with ``tp dataset prelabel``."""

from __future__ import annotations

from typing import Any, Mapping

from operators.container_command import ContainerCommandOperator
from operators.dataset_refs import branch_output, dataset_input


class PrelabelOperator(ContainerCommandOperator):
    """Writes a model's label, confidence and runners-up (``alternatives``) onto every
    unconfirmed sample of a dataset snapshot, status ``pending`` and ``label_source`` ``model`` (``model-accepted`` at or
    above ``accept_above``); a person's annotation is never replaced.

    Input ``data`` (the first input when not named so): a dataset ref ``tp://NAME@REF``.
    Input ``model``: the model reference ``model:NAME:ALIAS|vN`` (default: the
    ``model_name`` parameter, else the pipeline's name, at ``model_version``, default
    ``production``). Output ``prelabels`` (the first output when not named so), when given:
    a dataset ref ``tp://NAME@BRANCH`` of the same dataset to write to (created at REF when
    missing); without one the pre-labels go to REF itself. Parameters ``accept_above`` and
    ``alternatives`` (how many runners-up to store with each pre-label; default 3, 0 none).
    """

    task_type = "prelabel"
    ui_color = "#f5eee6"

    def default_command(self, inputs: Mapping[str, str], outputs: Mapping[str, str],
                        params: Mapping[str, Any]) -> list[str]:
        from train_platform.registry.refs import ModelRef

        data = dataset_input(self.task_id, "prelabel", inputs)
        if inputs.get("model"):
            model = str(ModelRef.parse(inputs["model"]))
        else:
            model = str(ModelRef.of(str(params.get("model_name") or self.pipeline), params.get("model_version") or "production"))
        command = ["python", "-m", "train_platform.cli", "dataset", "prelabel", data.removeprefix("tp://"),
                   "--model", model, "--json"]
        if params.get("accept_above") is not None:
            command += ["--accept-above", str(params["accept_above"])]
        if params.get("alternatives") is not None:
            command += ["--alternatives", str(int(params["alternatives"]))]
        if outputs:
            command += ["--to", branch_output(self.task_id, data, outputs.get("prelabels") or next(iter(outputs.values())))]
        return command
