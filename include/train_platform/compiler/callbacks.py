"""The callbacks the compiler sets on every DAG and task: pipeline metrics for Prometheus
(``train_platform.registry.metrics_export``) and webhook notifications (``notify``).

| callback | metrics (group) | notification |
|---|---|---|
| DAG ``on_success_callback`` | run duration, failed=0 (``tp_pipeline_run``) | - |
| DAG ``on_failure_callback`` | run duration, failed=1 (``tp_pipeline_run``) | ``run_failed`` |
| task ``on_success_callback`` | duration, failed=0 (``tp_task_status``); results (``tp_task_result``) | - |
| task ``on_failure_callback`` (last try) | duration, failed=1 (``tp_task_status``) | ``task_failed`` |
| task ``on_skipped_callback`` | duration, failed=0; a deployment task's gate verdict | ``gate_failed`` (deployment tasks) |

Task callbacks run in the task's own process, DAG callbacks in the DAG processor (the
scheduler's loop under ``airflow dags test``); both read ``TP_PUSHGATEWAY_URL`` /
``TP_METRICS_TEXTFILE_DIR`` there. Airflow logs a callback that raises and carries on, so a
metric or notification that fails never changes a task's state.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any, Mapping

from train_platform.compiler.notify import DEFAULT_CONN_ID, WebhookNotifier

log = logging.getLogger(__name__)


def _seconds(start: Any, end: Any) -> float | None:
    if not isinstance(start, datetime):
        return None
    end = end if isinstance(end, datetime) else datetime.now(timezone.utc)
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    if end.tzinfo is None:
        end = end.replace(tzinfo=timezone.utc)
    return (end - start).total_seconds()


class TaskMetrics:
    """Exports a finished task's status and, for training, evaluation and deployment tasks,
    what its output files say (``metrics_export.task_results``)."""

    def __init__(self, *, failed: bool, pipeline: str) -> None:
        self.failed = failed
        self.pipeline = pipeline

    def __repr__(self) -> str:
        return f"TaskMetrics(failed={self.failed})"

    def __call__(self, context: Mapping[str, Any]) -> None:
        # The registry package imports SQLAlchemy: loaded when a callback runs, not at DAG parse.
        from train_platform.registry import metrics_export

        config = metrics_export.MetricsExportConfig.from_env()
        if not config.enabled:
            return
        ti = context.get("ti") or context.get("task_instance")
        task = context.get("task")
        task_id = getattr(ti, "task_id", None) or getattr(task, "task_id", "")
        duration = _seconds(getattr(ti, "start_date", None), getattr(ti, "end_date", None))
        grouping = {"pipeline": self.pipeline, "task": task_id}
        metrics_export.export(metrics_export.STATUS_JOB, grouping, metrics_export.task_status(
            self.pipeline, task_id, failed=self.failed, duration=duration, finished_at=time.time()), config)
        if self.failed:
            return
        results = metrics_export.task_results(
            getattr(task, "task_type", ""), self.pipeline, task_id,
            getattr(task, "resolved_inputs", None) or {}, getattr(task, "resolved_outputs", None) or {})
        metrics_export.export(metrics_export.RESULT_JOB, grouping, results, config)


class RunMetrics:
    """Exports a finished DAG run's duration and whether it failed."""

    def __init__(self, *, failed: bool, pipeline: str) -> None:
        self.failed = failed
        self.pipeline = pipeline

    def __repr__(self) -> str:
        return f"RunMetrics(failed={self.failed})"

    def __call__(self, context: Mapping[str, Any]) -> None:
        # The registry package imports SQLAlchemy: loaded when a callback runs, not at DAG parse.
        from train_platform.registry import metrics_export

        config = metrics_export.MetricsExportConfig.from_env()
        if not config.enabled:
            return
        dag_run = context.get("dag_run")
        duration = _seconds(getattr(dag_run, "start_date", None), getattr(dag_run, "end_date", None))
        metrics_export.export(metrics_export.RUN_JOB, {"pipeline": self.pipeline}, metrics_export.run_status(
            self.pipeline, failed=self.failed, duration=duration, finished_at=time.time()), config)


def dag_callbacks(pipeline: str, version: str, conn_id: str = DEFAULT_CONN_ID) -> dict[str, list]:
    """``on_success_callback`` / ``on_failure_callback`` of a pipeline's DAG."""
    return {
        "on_success_callback": [RunMetrics(failed=False, pipeline=pipeline)],
        "on_failure_callback": [
            WebhookNotifier("run_failed", conn_id=conn_id, pipeline=pipeline, pipeline_version=version),
            RunMetrics(failed=True, pipeline=pipeline),
        ],
    }


def task_callbacks(task_type: str, pipeline: str, version: str, conn_id: str = DEFAULT_CONN_ID) -> dict[str, list]:
    """``on_success_callback`` / ``on_failure_callback`` / ``on_skipped_callback`` of a task."""
    skipped: list = [TaskMetrics(failed=False, pipeline=pipeline)]
    if task_type == "deployment":  # the only skip a deployment task raises itself: a failed gate
        skipped.insert(0, WebhookNotifier("gate_failed", conn_id=conn_id, pipeline=pipeline, pipeline_version=version))
    return {
        "on_success_callback": [TaskMetrics(failed=False, pipeline=pipeline)],
        "on_failure_callback": [
            WebhookNotifier("task_failed", conn_id=conn_id, pipeline=pipeline, pipeline_version=version),
            TaskMetrics(failed=True, pipeline=pipeline),
        ],
        "on_skipped_callback": skipped,
    }
