"""Task type ``training``: initial, incremental or full training with ``python -m ml.train``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from operators.container_command import ContainerCommandOperator

# Pipeline parameter -> ml.train config key, passed with --set when the pipeline has it.
_CONFIG_PARAMS = {"learning_rate": "lr", "batch_size": "batch_size", "seed": "seed"}


class TrainingOperator(ContainerCommandOperator):
    """Trains a model with the platform's trainer.

    Inputs: ``training_data`` (a file or a ``tp://dataset@ref``; the first input when not
    named so) and optionally ``base_model``: a checkpoint folder, or a model reference
    ``model:NAME:ALIAS`` or ``model:NAME:vN`` (``model:sensor-classifier:production``)
    looked up in the registry. Output: the first output receives the new checkpoint. The mode is the ``mode``
    parameter when the pipeline has one, else ``incremental`` when the base model exists and
    ``initial`` otherwise, so the first run of a pipeline trains from scratch and later runs
    continue from the model in production.
    """

    task_type = "training"
    ui_color = "#fdf0e0"
    # Set from the task instance at execute: an Airflow retry (try 2+) passes --resume, so
    # ml.train continues from the last epoch checkpoint the failed try left in the output.
    try_number = 1

    def execute(self, context):
        ti = context.get("ti") or context.get("task_instance")
        self.try_number = int(getattr(ti, "try_number", 1) or 1)
        return super().execute(context)

    def default_command(self, inputs: Mapping[str, str], outputs: Mapping[str, str],
                        params: Mapping[str, Any]) -> list[str]:
        if not inputs or not outputs:
            raise ValueError(f"{self.task_id}: training needs a `training_data` input and an output")
        data = inputs.get("training_data") or next(iter(inputs.values()))
        base = self._base_checkpoint(inputs.get("base_model"))
        has_base = base is not None and (Path(base) / "checkpoint.json").exists()
        mode = str(params.get("mode") or ("incremental" if has_base else "initial"))
        out = next(iter(outputs.values()))
        command = ["python", "-m", "ml.train", "--mode", mode, "--task", str(params.get("task", "classification")),
                   "--data", data, "--out", out]
        if mode == "incremental":
            if not has_base:
                raise ValueError(f"{self.task_id}: mode 'incremental' needs a base model, and "
                                 f"{inputs.get('base_model')!r} holds none")
            command += ["--init", base]
        if params.get("epochs") is not None:
            command += ["--epochs", str(params["epochs"])]
        config = {key: params[name] for name, key in _CONFIG_PARAMS.items() if params.get(name) is not None}
        if config:  # inline, so the same command works in a pod, where no worker file exists
            command += ["--set", json.dumps(config, sort_keys=True)]
        if self.try_number > 1:
            command.append("--resume")
        return command

    def _base_checkpoint(self, location: str | None) -> str | None:
        """The checkpoint folder behind ``base_model``; None when there is none yet.

        A reference to a model that is not registered yet, or to an alias that points at no
        version yet, means none yet; a malformed reference or a missing version is an error.
        """
        from train_platform.registry.refs import ModelRef

        if not ModelRef.is_ref(location):
            return location
        from train_platform.registry import AliasNotSetError, ModelNotFoundError, resolve

        ref = ModelRef.parse(location)
        try:
            found = resolve(ref)
        except (ModelNotFoundError, AliasNotSetError) as exc:  # the first run trains from scratch
            self.log.info("base model not available (%s); training from scratch", exc)
            return None
        self.log.info("base model %s is version %s at %s", ref, found.version.version, found.checkpoint)
        return str(found.checkpoint)
