"""Compiling every pipeline file of a dags folder into DAGs, for the one loader file in ``dags/``.

- Pipeline files are found by ``train_platform.spec.folder`` (``*.yaml``, ``*.yml``,
  ``*.json`` that mention ``train-platform/``, ``.airflowignore`` respected with the syntax
  Airflow is configured with).
- One broken file never stops the others. Airflow 3.3 cannot report an error for a single
  pipeline without dropping every DAG of the loader file (apache/airflow#53971), and its
  DAG processor only looks at ``.py`` files, so each broken file becomes a placeholder DAG
  tagged ``invalid-pipeline``: its description and docs carry the errors (file, line,
  field, message) and its only task fails with them. The errors are logged too.
- Of several versions of one pipeline, the active one gets the pipeline's name as dag_id
  and its schedule; the others compile unscheduled and paused, as ``NAME__vVERSION``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from train_platform.exceptions import SpecIssue
from train_platform.settings import Settings, get_settings
from train_platform.spec.folder import PipelineFile, scan_folder

log = logging.getLogger(__name__)

INVALID_TAG = "invalid-pipeline"


def _ignore_syntax() -> str:
    from airflow.configuration import conf

    return conf.get("core", "DAG_IGNORE_FILE_SYNTAX", fallback="glob")


def _placeholder_id(path: Path, folder: Path) -> str:
    try:
        rel = str(path.relative_to(folder))
    except ValueError:
        rel = path.name
    return "invalid__" + re.sub(r"[^A-Za-z0-9_.-]+", "_", rel)


def build_placeholder(f: PipelineFile, folder: Path):
    from airflow.sdk import DAG

    from operators.invalid_pipeline import InvalidPipelineOperator

    errors = [str(issue) for issue in f.issues]
    doc = "\n".join([f"# Invalid pipeline file `{f.path}`", "",
                     "This file did not compile, so its pipeline is not scheduled. Fix these errors:", "",
                     *[f"- `{line}`" for line in errors]])
    dag = DAG(
        dag_id=_placeholder_id(f.path, folder),
        description=f"INVALID pipeline file: {errors[0]}"[:500],
        doc_md=doc,
        schedule=None,
        tags=["train-platform", INVALID_TAG],
        is_paused_upon_creation=True,
    )
    InvalidPipelineOperator(task_id="report_errors", file=str(f.path), errors=errors, dag=dag, retries=0)
    return dag


def load_dags(folder: str | Path, settings: Settings | None = None) -> dict[str, Any]:
    """dag_id -> DAG for every pipeline file under ``folder`` (placeholders for broken ones)."""
    from train_platform.compiler.compiler import build_dag

    settings = settings or get_settings()
    folder = Path(folder)
    scan = scan_folder(folder, settings, ignore_syntax=_ignore_syntax())
    dags: dict[str, Any] = {}
    for f in scan.valid():
        spec = f.spec
        assert spec is not None
        try:
            dag = build_dag(spec, source=str(f.path), active=scan.active[spec.name] == spec.version, settings=settings)
            # The checks DagBag runs on every DAG of this file: one failing there would be
            # an import error for the whole file, hiding every other pipeline.
            dag.validate()
        except Exception as exc:  # Airflow refused the DAG (a bad cron expression, say)
            f.issues.append(SpecIssue(str(f.path), _line_hint(exc, f), "", f"Airflow rejected the pipeline: {exc}"))
            continue
        dags[dag.dag_id] = dag
    for f in scan.broken():
        for issue in f.issues:
            log.error("invalid pipeline file: %s", issue)
        dag = build_placeholder(f, folder)
        dags[dag.dag_id] = dag
    return dags


def _line_hint(exc: Exception, f: PipelineFile) -> int:
    """Errors Airflow raises are about the schedule more often than anything else."""
    about_schedule = "timetable" in type(exc).__name__.lower() or any(
        word in str(exc).lower() for word in ("schedule", "cron"))
    if f.document is not None and about_schedule:
        return f.document.line_of(("spec", "schedule"))
    return 1
