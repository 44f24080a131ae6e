"""Task type ``deployment``: one step of the scheduled deployment with ``tp model deploy``."""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any, Mapping

from operators.container_command import ContainerCommandOperator

# Pipeline parameters passed on as DeploymentPolicy fields (see train_platform.registry.deployment).
POLICY_PARAMS = ("candidate_share", "min_requests", "min_labelled", "require_accuracy",
                 "max_error_rate_increase", "max_latency_ratio", "latency_slack_ms",
                 "max_accuracy_drop", "max_ab_duration", "confidence_z")


class DeploymentOperator(ContainerCommandOperator):
    """Advances the deployment cycle of a registered model: starts an A/B phase for the
    newest candidate that passed its evaluation gate, then promotes it or rolls it back
    from its live metrics. The decision logic lives in ``train_platform.registry``.

    Model name: the ``model_name`` parameter, else the pipeline's name. Optional inputs:
    ``model`` (a checkpoint folder to register first) and ``evaluation`` (its metrics JSON,
    file or folder; without it a new checkpoint waits with a pending gate). The first
    output folder, if any, receives ``deployment.json``. Policy fields come from the
    parameters of the same name (``candidate_share``, ``min_requests``, ...).
    """

    task_type = "deployment"
    ui_color = "#e6f5ea"

    def default_command(self, inputs: Mapping[str, str], outputs: Mapping[str, str],
                        params: Mapping[str, Any]) -> list[str]:
        from train_platform.registry.names import check_name

        name = check_name(str(params.get("model_name") or self.pipeline), "model name")
        command = ["python", "-m", "train_platform.cli", "model", "deploy", name]
        if inputs.get("model"):
            command += ["--checkpoint", inputs["model"]]
        if inputs.get("evaluation"):
            command += ["--evaluation", inputs["evaluation"]]
        policy = {key: params[key] for key in POLICY_PARAMS if params.get(key) is not None}
        if policy:
            command += ["--policy", json.dumps(policy, sort_keys=True)]
        if outputs:
            command += ["--out", str(PurePosixPath(next(iter(outputs.values()))))]
        return command
