"""Spec -> Airflow DAG, with the Task SDK.

Each task becomes the operator its type maps to in ``operator_map.OPERATORS``; parameters
become Airflow Params (shown and validated in the trigger form with their descriptions,
templated into commands as ``{{ params.NAME }}``); schedule, default args, tags and owner
come from the spec; the description (a one-sentence summary) and the docs (full
description, parameters, version history, YAML source) are written by ``docs.py``.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

from train_platform.compiler import docs
from train_platform.compiler.operator_map import operator_class
from train_platform.compiler.plan import (
    DEFAULT_RETRIES,
    DEFAULT_RETRY_DELAY,
    dag_id_for,
    first_set,
    params_of,
    plan_tasks,
    schedule_of,
)
from train_platform.settings import Settings
from train_platform.spec.models import PipelineSpec

PLATFORM_TAG = "train-platform"
INACTIVE_TAG = "inactive-version"


def _schedule(spec: PipelineSpec, active: bool) -> Any:
    schedule = schedule_of(spec, active)
    if isinstance(schedule, dict):
        from airflow.sdk import Asset

        return [Asset(uri) for uri in schedule["assets"]]
    return schedule


def _start_date(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)


def build_dag(spec: PipelineSpec, *, source: str, active: bool, settings: Settings, text: str | None = None,
              state: str | None = None, versions: list[docs.VersionRow] | None = None):
    """The Airflow DAG of ``spec``. ``active`` False gives an unscheduled, paused version.

    ``source`` is the file as the docs name it, ``text`` its content (the docs show it),
    ``state`` what this version is ("active, pinned with ..."), ``versions`` every file of
    the pipeline in the dags folder for the docs' version history (the loader gives all
    three; without them the docs describe this version alone)."""
    from airflow.sdk import DAG, Param

    from train_platform.compiler.callbacks import dag_callbacks, task_callbacks

    defaults = spec.spec.default_args
    default_args: dict[str, Any] = {
        "owner": defaults.owner or spec.metadata.owner,
        "retries": first_set(defaults.retries, DEFAULT_RETRIES),
        "retry_delay": first_set(defaults.retry_delay, DEFAULT_RETRY_DELAY),
    }
    for key in ("depends_on_past", "email", "email_on_failure"):
        if getattr(defaults, key) is not None:
            default_args[key] = getattr(defaults, key)
    if defaults.timeout is not None:
        default_args["execution_timeout"] = defaults.timeout
    tags = [PLATFORM_TAG, *spec.metadata.tags, f"version:{spec.version}"]
    if not active:
        tags.append(INACTIVE_TAG)
    dag_id = dag_id_for(spec, active)
    params = params_of(spec)
    schedule = schedule_of(spec, active)
    upstream = spec.upstream_of()
    task_names = [task.name for task in spec.spec.tasks]
    state = state or ("active" if active else "inactive")
    doc_md = docs.pipeline_doc_md(
        name=spec.name, version=spec.version, dag_id=dag_id, description=spec.metadata.description,
        state=state, file=source, text=text, owner=default_args["owner"], schedule=schedule, active=active,
        tasks=[(task.name, task.type, upstream[task.name]) for task in spec.spec.tasks], params=params,
        versions=versions or [docs.VersionRow(spec.version, dag_id, state, source)])
    description = docs.summary(spec.metadata.description, docs.generated_summary(task_names, schedule, active),
                               f" (v{spec.version})")
    dag = DAG(
        dag_id=dag_id,
        description=description,
        doc_md=doc_md,
        schedule=_schedule(spec, active),
        start_date=_start_date(spec.spec.start_date),
        catchup=spec.spec.catchup,
        max_active_runs=spec.spec.max_active_runs,
        default_args=default_args,
        params={name: Param(**schema) for name, schema in params.items()},
        tags=sorted(set(tags)),
        is_paused_upon_creation=not active or None,
        **dag_callbacks(spec.name, spec.version, spec.spec.notify.conn_id),
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
            **task_callbacks(task.type, spec.name, spec.version, spec.spec.notify.conn_id),
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


