"""Task type ``deployment``: one step of the scheduled deployment with ``tp model deploy``."""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any, Mapping

from airflow.sdk.exceptions import AirflowSkipException

from operators.container_command import ContainerCommandOperator
from train_platform.exceptions import TaskExecutionError
from train_platform.registry.deployment import GATE_FAILED_EXIT_CODE

# Pipeline parameters passed on as DeploymentPolicy fields (see train_platform.registry.deployment).
POLICY_PARAMS = ("candidate_share", "min_requests", "min_labelled", "require_accuracy",
                 "max_error_rate_increase", "max_latency_ratio", "latency_slack_ms",
                 "max_accuracy_drop", "max_ab_duration", "confidence_z")
# Pipeline parameter -> GatePolicy field (see train_platform.registry.gate).
GATE_PARAMS = {"gate_metric": "metric", "gate_floor": "floor", "gate_max_metric_drop": "max_metric_drop",
               "gate_max_error_increase": "max_error_increase", "gate_max_old_class_drop": "max_old_class_drop"}


class DeploymentOperator(ContainerCommandOperator):
    """Advances the deployment cycle of a registered model: starts an A/B phase for the
    newest candidate that passed its evaluation gate, then promotes it or rolls it back
    from its live metrics. The decision logic lives in ``train_platform.registry``.

    Model name: the ``model_name`` parameter, else the pipeline's name. Optional inputs:
    ``model`` (a checkpoint folder to register first) and ``evaluation`` (its metrics JSON
    from ``python -m ml.evaluate``, file or folder; the registry's evaluation gate decides
    from it; without it a new checkpoint waits with a pending gate). The first output
    folder, if any, receives ``deployment.json``. Policy fields come from the parameters of
    the same name (``candidate_share``, ``min_requests``, ...), gate policy fields from the
    ``gate_*`` parameters (``gate_floor``, ``gate_max_metric_drop``, ...).

    When the checkpoint fails its gate, nothing is deployed: the command exits with
    ``GATE_FAILED_EXIT_CODE`` and the task ends skipped, so the tasks after it (packaging)
    are skipped too; the reasons are on the version in the registry.
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
        gate = {field: params[key] for key, field in GATE_PARAMS.items() if params.get(key) is not None}
        if gate:
            command += ["--gate-policy", json.dumps(gate, sort_keys=True)]
        if outputs:
            command += ["--out", str(PurePosixPath(next(iter(outputs.values()))))]
        return command

    def _run_local(self, command: list[str], env: dict[str, str], run_id: str) -> None:
        try:
            super()._run_local(command, env, run_id)
        except TaskExecutionError:
            # LocalProcess keeps the finished process; its exit code says a gate failed.
            process = getattr(getattr(self, "_process", None), "_proc", None)
            if process is not None and process.returncode == GATE_FAILED_EXIT_CODE:
                raise AirflowSkipException(_SKIPPED) from None
            raise

    def pod_operator_kwargs(self, command: list[str], env: dict[str, str]) -> dict[str, Any]:
        # KubernetesPodOperator ends the task skipped when the pod exits with this code.
        return {**super().pod_operator_kwargs(command, env), "skip_on_exit_code": GATE_FAILED_EXIT_CODE}


_SKIPPED = ("the candidate failed its evaluation gate: nothing deployed, the tasks after this one are skipped "
            "(reasons: tp model list / tp model history)")
