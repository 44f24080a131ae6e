"""What a pipeline compiles to, without Airflow: dag_id, Params, and the planned tasks.

``build_dag`` (``compiler.py``) turns this plan into an Airflow DAG; ``tp pipeline compile``
prints it. Nothing here imports Airflow or an operator module.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from train_platform.compiler.operator_map import operator_name
from train_platform.settings import Settings
from train_platform.spec.models import AssetSchedule, PipelineSpec
from train_platform.spec.validate import infer_type, is_parameter_schema

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


def dag_id_of(name: str, version: str, active: bool) -> str:
    """The dag_id of version ``version`` of pipeline ``name``: the name for the active
    version, ``NAME__vVERSION`` for the others."""
    if active:
        return name
    return f"{name}__v{re.sub(r'[^A-Za-z0-9_.-]', '_', version)}"


def dag_id_for(spec: PipelineSpec, active: bool) -> str:
    return dag_id_of(spec.name, spec.version, active)


def params_of(spec: PipelineSpec) -> dict[str, dict[str, Any]]:
    """Parameter name -> JSON-schema keywords (with ``default``) and a ``description`` for
    an Airflow Param; a parameter the file does not describe gets ``default_description``."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in spec.spec.parameters.items():
        if is_parameter_schema(value):
            schema = {k: v for k, v in value.items() if v is not None}
            schema.setdefault("type", infer_type(schema.get("default")) or "string")
        else:
            schema = {"default": value, "type": infer_type(value) or ["null", "string"]}
        if schema["type"] == "number":  # YAML writes 3 for 3.0; a float param should accept both
            schema["type"] = ["number", "integer"]
        if not str(schema.get("description") or "").strip():
            schema["description"] = default_description(schema)
        out[name] = schema
    return out


def type_label(schema: dict[str, Any]) -> str:
    """``integer``, ``number`` (for ``["number", "integer"]``), ``string or null``..."""
    kind = schema.get("type", "string")
    kinds = [kind] if isinstance(kind, str) else list(kind)
    if "number" in kinds:
        kinds = [k for k in kinds if k != "integer"]
    return " or ".join(k for k in kinds if k != "null") + (" or null" if "null" in kinds else "")


def default_description(schema: dict[str, Any]) -> str:
    """What a parameter the pipeline file leaves undescribed says in the trigger form: its
    type, bounds or choices, and default, e.g. ``Integer from 10 to 100000; default 200.``"""
    text = constraints_label(schema)
    default = schema.get("default")
    text += "; no default" if default is None else f"; default {json.dumps(default, ensure_ascii=False)}"
    return text[:1].upper() + text[1:] + "."


def constraints_label(schema: dict[str, Any]) -> str:
    """The type with its bounds and choices: ``integer from 10 to 100000``."""
    text = type_label(schema)
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        text += f" from {_number(low)} to {_number(high)}"
    elif low is not None:
        text += f", at least {_number(low)}"
    elif high is not None:
        text += f", at most {_number(high)}"
    if schema.get("enum"):
        text += ", one of " + ", ".join(json.dumps(v, ensure_ascii=False) for v in schema["enum"])
    return text


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def plan_tasks(spec: PipelineSpec, settings: Settings) -> list[CompiledTask]:
    """What the DAG will contain, without building it (used by `tp pipeline compile`)."""
    defaults = spec.spec.default_args
    upstream = spec.upstream_of()
    planned = []
    for task in spec.spec.tasks:
        planned.append(CompiledTask(
            task_id=task.name,
            type=task.type,
            operator=operator_name(task.type),
            upstream=upstream[task.name],
            resources={"cpu": task.resources.cpu, "memory": task.resources.memory, "gpu": task.resources.gpu},
            retries=first_set(task.retries, defaults.retries, DEFAULT_RETRIES),
            priority_weight=first_set(task.priority, defaults.priority, 1),
            pool=first_set(task.pool, defaults.pool, "default_pool"),
            executor=first_set(task.executor, defaults.executor, settings.default_executor),
        ))
    return planned


def first_set(*values: Any) -> Any:
    """The first value that is not None (task setting, then default_args, then ours)."""
    return next(v for v in values if v is not None)


def schedule_of(spec: PipelineSpec, active: bool) -> Any:
    """The schedule as the spec gives it; assets as ``{"assets": [uri, ...]}``; None when
    the version is not the active one (inactive versions never run on a schedule)."""
    if not active:
        return None
    schedule = spec.spec.schedule
    if isinstance(schedule, AssetSchedule):
        return {"assets": list(schedule.assets)}
    return schedule


def describe(spec: PipelineSpec, settings: Settings, active: bool = True) -> dict[str, Any]:
    """The JSON `tp pipeline compile --json` prints."""
    return {
        "dag_id": dag_id_for(spec, active),
        "version": spec.version,
        "schedule": schedule_of(spec, active),
        "params": {name: schema.get("default") for name, schema in params_of(spec).items()},
        "tasks": [task.__dict__ for task in plan_tasks(spec, settings)],
    }
