"""Spec -> Airflow DAG, with the Task SDK.

Each task becomes the operator its type maps to in ``task_types.TASK_TYPES``; parameters
become Airflow Params (shown and validated in the trigger form, templated into commands as
``{{ params.NAME }}``); schedule, default args, tags, owner and docs come from the spec.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from train_platform.compiler.task_types import TASK_TYPES, operator_class
from train_platform.settings import Settings
from train_platform.spec.models import AssetSchedule, PipelineSpec
from train_platform.spec.validate import infer_type, is_parameter_schema

PLATFORM_TAG = "train-platform"
INACTIVE_TAG = "inactive-version"
# Without retries a transient failure (a node preempted, a registry timeout) fails the run.
DEFAULT_RETRIES = 1
DEFAULT_RETRY_DELAY = timedelta(minutes=1)


@dataclass(frozen=True)
class CompiledTask:
    task_id: str
    type: str
    operator: str
    upstream: list[str]
    resources: dict[str, Any]
    retries: int
    priority_weight: int
    pool: str
    executor: str


def dag_id_for(spec: PipelineSpec, active: bool) -> str:
    if active:
        return spec.name
    return f"{spec.name}__v{re.sub(r'[^A-Za-z0-9_.-]', '_', spec.version)}"


def params_of(spec: PipelineSpec) -> dict[str, dict[str, Any]]:
    """Parameter name -> JSON-schema keywords (with ``default``) for an Airflow Param."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in spec.spec.parameters.items():
        if is_parameter_schema(value):
            schema = {k: v for k, v in value.items() if v is not None}
            schema.setdefault("type", infer_type(schema.get("default")) or "string")
        else:
            schema = {"default": value, "type": infer_type(value) or ["null", "string"]}
        if schema["type"] == "number":  # YAML writes 3 for 3.0; a float param should accept both
            schema["type"] = ["number", "integer"]
        out[name] = schema
    return out


def _schedule(spec: PipelineSpec, active: bool) -> Any:
    if not active:
        return None
    schedule = spec.spec.schedule
    if isinstance(schedule, AssetSchedule):
        from airflow.sdk import Asset

        return [Asset(uri) for uri in schedule.assets]
    return schedule


def _start_date(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)


def plan_tasks(spec: PipelineSpec, settings: Settings) -> list[CompiledTask]:
    """What the DAG will contain, without building it (used by `tp pipeline compile`)."""
    defaults = spec.spec.default_args
    upstream = spec.upstream_of()
    planned = []
    for task in spec.spec.tasks:
        planned.append(CompiledTask(
            task_id=task.name,
            type=task.type,
            operator=TASK_TYPES[task.type].operator_name,
            upstream=upstream[task.name],
            resources={"cpu": task.resources.cpu, "memory": task.resources.memory, "gpu": task.resources.gpu},
            retries=_first(task.retries, defaults.retries, DEFAULT_RETRIES),
            priority_weight=_first(task.priority, defaults.priority, 1),
            pool=_first(task.pool, defaults.pool, "default_pool"),
            executor=_first(task.executor, defaults.executor, settings.default_executor),
        ))
    return planned


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else ""


def _doc_md(spec: PipelineSpec, source: str) -> str:
    lines = [f"# {spec.name} {spec.version}", ""]
    if spec.metadata.description:
        lines += [spec.metadata.description, ""]
    lines += [f"Pipeline `{spec.name}` version `{spec.version}`, compiled by train-platform from `{source}`."]
    return "\n".join(lines)


def build_dag(spec: PipelineSpec, *, source: str, active: bool, settings: Settings):
    """The Airflow DAG of ``spec``. ``active`` False gives an unscheduled, paused version."""
    from airflow.sdk import DAG, Param

    defaults = spec.spec.default_args
    default_args: dict[str, Any] = {
        "owner": defaults.owner or spec.metadata.owner,
        "retries": _first(defaults.retries, DEFAULT_RETRIES),
        "retry_delay": _first(defaults.retry_delay, DEFAULT_RETRY_DELAY),
    }
    for key in ("depends_on_past", "email", "email_on_failure"):
        if getattr(defaults, key) is not None:
            default_args[key] = getattr(defaults, key)
    if defaults.timeout is not None:
        default_args["execution_timeout"] = defaults.timeout
    tags = [PLATFORM_TAG, *spec.metadata.tags, f"version:{spec.version}"]
    if not active:
        tags.append(INACTIVE_TAG)
    dag = DAG(
        dag_id=dag_id_for(spec, active),
        description=f"{_first_line(spec.metadata.description) or spec.name} (v{spec.version})",
        doc_md=_doc_md(spec, source),
        schedule=_schedule(spec, active),
        start_date=_start_date(spec.spec.start_date),
        catchup=spec.spec.catchup,
        max_active_runs=spec.spec.max_active_runs,
        default_args=default_args,
        params={name: Param(**schema) for name, schema in params_of(spec).items()},
        tags=sorted(set(tags)),
        is_paused_upon_creation=not active or None,
    )
    pipeline_mounts = _as_list(spec.spec.mounts)
    planned = {task.task_id: task for task in plan_tasks(spec, settings)}
    operators = {}
    for task in spec.spec.tasks:
        plan = planned[task.name]
        kwargs: dict[str, Any] = dict(
            task_id=task.name,
            dag=dag,
            command=task.argv(),
            image=task.image,
            inputs={item.name: item.source for item in task.inputs},
            outputs={item.name: item.destination for item in task.outputs},
            env=task.env,
            container_resources=plan.resources,
            mounts=pipeline_mounts,
            task_mounts=_as_list(task.mounts),
            runner=plan.executor,
            pipeline=spec.name,
            pipeline_version=spec.version,
            retries=plan.retries,
            priority_weight=plan.priority_weight,
            pool=plan.pool,
        )
        if task.retry_delay is not None:
            kwargs["retry_delay"] = task.retry_delay
        if task.timeout is not None:
            kwargs["execution_timeout"] = task.timeout
        operators[task.name] = operator_class(task.type)(**kwargs)
    for name, op in operators.items():
        for upstream in planned[name].upstream:
            operators[upstream] >> op
    return dag


def _as_list(value: Any) -> list:
    if value in (None, "", []):
        return []
    return [value] if isinstance(value, (str, dict)) else list(value)


def describe(spec: PipelineSpec, settings: Settings, active: bool = True) -> dict[str, Any]:
    """The JSON `tp pipeline compile --json` prints."""
    schedule = _schedule(spec, active)
    if isinstance(schedule, list):
        schedule = {"assets": [asset.uri for asset in schedule]}
    return {
        "dag_id": dag_id_for(spec, active),
        "version": spec.version,
        "schedule": schedule,
        "params": {name: schema.get("default") for name, schema in params_of(spec).items()},
        "tasks": [task.__dict__ for task in plan_tasks(spec, settings)],
    }
