"""Task type ``training``: initial, incremental or full training with ``python -m ml.train``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from operators.container_command import ContainerCommandOperator

# Pipeline parameter -> ml.train config key, passed through --config when the pipeline has it.
_CONFIG_PARAMS = {"learning_rate": "lr", "batch_size": "batch_size", "seed": "seed"}


class TrainingOperator(ContainerCommandOperator):
    """Trains a model with the platform's trainer.

    Inputs: ``training_data`` (a file or a ``tp://dataset@ref``; the first input when not
    named so) and optionally ``base_model`` (a checkpoint folder). Output: the first output
    receives the new checkpoint. The mode is the ``mode`` parameter when the pipeline has
    one, else ``incremental`` when the base model folder holds a checkpoint and ``initial``
    otherwise, so the first run of a pipeline trains from scratch and later runs continue.
    """

    task_type = "training"
    ui_color = "#fdf0e0"

    def default_command(self, inputs: Mapping[str, str], outputs: Mapping[str, str],
                        params: Mapping[str, Any]) -> list[str]:
        if not inputs or not outputs:
            raise ValueError(f"{self.task_id}: training needs a `training_data` input and an output")
        data = inputs.get("training_data") or next(iter(inputs.values()))
        base = inputs.get("base_model")
        has_base = bool(base) and (Path(base) / "checkpoint.json").exists()
        mode = str(params.get("mode") or ("incremental" if has_base else "initial"))
        out = next(iter(outputs.values()))
        command = ["python", "-m", "ml.train", "--mode", mode, "--task", str(params.get("task", "classification")),
                   "--data", data, "--out", out]
        if mode == "incremental" and base:
            command += ["--init", base]
        if params.get("epochs") is not None:
            command += ["--epochs", str(params["epochs"])]
        config = {key: params[name] for name, key in _CONFIG_PARAMS.items() if params.get(name) is not None}
        if config:
            config_file = Path(out).parent / f".{self.task_id}-config.json"
            config_file.write_text(json.dumps(config))
            command += ["--config", str(config_file)]
        return command
