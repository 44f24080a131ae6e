"""The base of every task that runs a container command.

``ContainerCommandOperator`` runs one command with a task's inputs, outputs, resources and
environment, on the executor the spec chose: ``local`` runs it as a subprocess of the worker
(the embedded default), ``kubernetes`` runs it in a pod through ``KubernetesPodOperator``.
Type-specific operators subclass it and only say what their default command is.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from airflow.sdk import BaseOperator

from train_platform.exceptions import TaskExecutionError
from train_platform.execution import paths
from train_platform.settings import get_settings

if TYPE_CHECKING:
    from airflow.sdk import Context

# The spec's `executor:` field. Named `runner` on the operator because BaseOperator's own
# `executor` picks an Airflow executor (Celery, Kubernetes), which is a different thing.
RUNNERS = ("local", "kubernetes")


class ContainerCommandOperator(BaseOperator):
    """Run a container command locally or in a Kubernetes pod.

    :param command: the command and its arguments; ``None`` uses the type's default
        command. (templated)
    :param image: the container image used on the ``kubernetes`` executor.
    :param inputs: input name -> container path or ref. (templated)
    :param outputs: output name -> container path or ref. (templated)
    :param env: extra environment variables. (templated)
    :param container_resources: ``{"cpu", "memory", "gpu"}`` as Kubernetes quantities.
    :param mounts: the pipeline's storage mounts (spec form: shorthand strings or dicts).
    :param task_mounts: the task's own mounts; they replace pipeline mounts at the same path.
    :param runner: where the command runs, ``local`` or ``kubernetes`` (the spec's ``executor``).
    :param pipeline: name of the pipeline the task belongs to.
    :param pipeline_version: its version, recorded with every run.
    """

    template_fields: Sequence[str] = ("command", "inputs", "outputs", "env")
    ui_color = "#e8f1fb"
    # Shown in `tp pipeline compile` and the UI; subclasses set their own.
    task_type: ClassVar[str] = "command"

    def __init__(
        self,
        *,
        command: Sequence[str] | None = None,
        image: str | None = None,
        inputs: Mapping[str, str] | None = None,
        outputs: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        container_resources: Mapping[str, Any] | None = None,
        mounts: Sequence[Any] = (),
        task_mounts: Sequence[Any] = (),
        runner: str = "local",
        pipeline: str = "",
        pipeline_version: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if runner not in RUNNERS:
            raise ValueError(f"{self.task_id}: executor must be one of {RUNNERS}, got {runner!r}")
        if runner == "kubernetes" and not image:
            raise ValueError(f"{self.task_id}: the kubernetes executor needs an `image`")
        self.command = list(command) if command is not None else None
        self.image = image
        self.inputs = dict(inputs or {})
        self.outputs = dict(outputs or {})
        self.env = dict(env or {})
        self.container_resources = dict(container_resources or {})
        self.mounts = list(mounts)
        self.task_mounts = list(task_mounts)
        self.runner = runner
        self.pipeline = pipeline
        self.pipeline_version = pipeline_version
        if self.command is None and type(self).default_command is ContainerCommandOperator.default_command:
            raise ValueError(f"{self.task_id}: a {self.task_type!r} task needs a `command`")

    # --- what subclasses override ---------------------------------------------------

    def default_command(self, inputs: Mapping[str, str], outputs: Mapping[str, str],
                        params: Mapping[str, Any]) -> list[str]:
        """The command used when the spec gives none; paths are already resolved."""
        raise NotImplementedError

    # --- execution -------------------------------------------------------------------

    @cached_property
    def parsed_mounts(self) -> list:
        if not self.mounts and not self.task_mounts:
            return []
        from train_platform.storage import merge_mounts, parse_mounts

        return merge_mounts(parse_mounts(self.mounts), parse_mounts(self.task_mounts))

    def render_template_fields(self, context: Context, jinja_env=None) -> None:
        # Inputs and outputs render first, so that `{{ inputs.x }}` / `{{ outputs.y }}` in
        # the command mean the resolved locations on this task's executor.
        jinja_env = jinja_env or self.get_template_env()
        self._do_render_template_fields(self, ("inputs", "outputs", "env"), context, jinja_env, set())
        self.resolved_inputs = self._resolve(self.inputs)
        self.resolved_outputs = self._resolve(self.outputs)
        if self.command is not None:
            extended = {**context, "inputs": self.resolved_inputs, "outputs": self.resolved_outputs}
            self._do_render_template_fields(self, ("command",), extended, jinja_env, set())
            self.command = [part for part in self.command if part != ""]

    def _resolve(self, locations: Mapping[str, str]) -> dict[str, str]:
        settings = get_settings()
        try:
            return {name: paths.resolve(loc, self.runner, settings, self.parsed_mounts) for name, loc in locations.items()}
        except ValueError as exc:
            raise TaskExecutionError(f"{self.task_id}: {exc}") from None

    def execute(self, context: Context) -> dict[str, Any]:
        params = dict(context.get("params") or {})
        command = self.command or self.default_command(self.resolved_inputs, self.resolved_outputs, params)
        run_id = context["run_id"]
        env = {
            **self.env,
            # Tasks act on datasets and models as the pipeline's owner, whose roles decide
            # what they may read and write: set by the platform after the spec's env, so a
            # task cannot name another user.
            "TP_USER": self.owner,
            "TP_PIPELINE": self.pipeline,
            "TP_PIPELINE_VERSION": self.pipeline_version,
            "TP_RUN_ID": run_id,
            "TP_TASK_ID": self.task_id,
            "TP_PARAMS": json.dumps(params, default=str),
            **{f"TP_INPUT_{_env_name(k)}": v for k, v in self.resolved_inputs.items()},
            **{f"TP_OUTPUT_{_env_name(k)}": v for k, v in self.resolved_outputs.items()},
        }
        self.log.info("pipeline %s version %s, task %s on the %s executor",
                      self.pipeline, self.pipeline_version, self.task_id, self.runner)
        if self.runner == "local":
            self._run_local(command, env, run_id)
        else:
            self._run_pod(command, env, context)
        # Only small references travel through XCom, never payloads.
        return {"pipeline_version": self.pipeline_version, "outputs": self.resolved_outputs}

    def _run_local(self, command: list[str], env: dict[str, str], run_id: str) -> None:
        from train_platform.execution.local import LocalProcess

        settings = get_settings()
        for name, location in self.resolved_inputs.items():
            if not paths.is_ref(location) and not Path(location).exists():
                raise TaskExecutionError(f"{self.task_id}: input {name!r} does not exist: {location}")
        for location in self.resolved_outputs.values():
            if not paths.is_ref(location):
                Path(location).mkdir(parents=True, exist_ok=True)
        workdir = settings.runs_dir / _safe(self.dag_id) / _safe(run_id) / self.task_id
        self._process = LocalProcess(command, env=env, cwd=workdir, log=self.log,
                                     timeout=self.execution_timeout.total_seconds() if self.execution_timeout else None)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "task.json").write_text(json.dumps({
            "pipeline": self.pipeline, "pipeline_version": self.pipeline_version, "run_id": run_id,
            "task_id": self.task_id, "command": command, "inputs": self.resolved_inputs,
            "outputs": self.resolved_outputs}, indent=2))
        self._process.run()

    def pod_operator_kwargs(self, command: list[str], env: dict[str, str]) -> dict[str, Any]:
        from train_platform.compiler.pods import pod_operator_kwargs

        return pod_operator_kwargs(
            task_id=self.task_id, pipeline=self.pipeline, pipeline_version=self.pipeline_version,
            image=self.image or "", command=command, resources=self.container_resources, env=env,
            mounts=self.parsed_mounts, settings=get_settings(),
        )

    def _run_pod(self, command: list[str], env: dict[str, str], context: Context) -> None:
        from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

        pod = KubernetesPodOperator(**self.pod_operator_kwargs(command, env))
        self._pod_operator = pod
        pod.execute(context)

    def on_kill(self) -> None:
        if getattr(self, "_process", None) is not None:
            self._process.kill()
        if getattr(self, "_pod_operator", None) is not None:
            self._pod_operator.on_kill()


def _env_name(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).upper()


def _safe(value: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in value)
