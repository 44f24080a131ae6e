"""Compiling every pipeline file of a dags folder into DAGs, for the one loader file in ``dags/``.

- Pipeline files are ``*.yaml``, ``*.yml`` and ``*.json`` that mention ``train-platform/``
  (other YAML, say another tool's config, is left alone), found under the dags folder with
  ``.airflowignore`` respected.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from train_platform.compiler import versions
from train_platform.exceptions import PipelineSpecError, SpecIssue
from train_platform.settings import Settings, get_settings
from train_platform.spec.models import PipelineSpec
from train_platform.spec.validate import validate_document
from train_platform.spec.yaml_source import SourceDocument, parse_text

log = logging.getLogger(__name__)

PIPELINE_SUFFIXES = (".yaml", ".yml", ".json")
INVALID_TAG = "invalid-pipeline"
_MARKER = "train-platform/"


@dataclass
class PipelineFile:
    path: Path
    spec: PipelineSpec | None = None
    # The parsed file, kept for the line numbers of errors found after validation.
    document: SourceDocument | None = None
    issues: list[SpecIssue] = field(default_factory=list)


@dataclass
class FolderScan:
    """Every pipeline file of a folder, and which version of each pipeline is active."""

    files: list[PipelineFile]
    active: dict[str, str]

    def valid(self) -> list[PipelineFile]:
        return [f for f in self.files if f.spec is not None and not f.issues]

    def broken(self) -> list[PipelineFile]:
        return [f for f in self.files if f.issues]

    def versions_of(self, name: str) -> dict[str, PipelineFile]:
        return {f.spec.version: f for f in self.valid() if f.spec.name == name}


def discover(folder: Path) -> list[Path]:
    """Candidate pipeline files under ``folder``, honouring ``.airflowignore``."""
    try:
        from airflow._shared.module_loading.file_discovery import find_path_from_directory
        from airflow.configuration import conf

        syntax = conf.get("core", "DAG_IGNORE_FILE_SYNTAX", fallback="glob")
        candidates: Iterable[str] = find_path_from_directory(str(folder), ".airflowignore", syntax)
    except ImportError:  # outside an Airflow installation (the CLI in a slim image)
        candidates = (str(p) for p in folder.rglob("*"))
    return sorted(Path(p) for p in candidates if p.endswith(PIPELINE_SUFFIXES))


def scan_folder(folder: str | Path, settings: Settings | None = None) -> FolderScan:
    settings = settings or get_settings()
    folder = Path(folder)
    files: list[PipelineFile] = []
    for path in discover(folder):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            files.append(PipelineFile(path, issues=[SpecIssue(str(path), 1, "", f"cannot read the file: {exc}")]))
            continue
        if _MARKER not in text:
            continue  # not a pipeline of ours
        try:
            document = parse_text(text, str(path))
            spec = validate_document(document)
        except PipelineSpecError as exc:
            files.append(PipelineFile(path, issues=exc.issues))
            continue
        files.append(PipelineFile(path, spec=spec, document=document))
    _flag_duplicates(files)
    pins = versions.read_pins(settings)
    active: dict[str, str] = {}
    by_name: dict[str, list[str]] = {}
    for f in files:
        if f.spec is not None and not f.issues:
            by_name.setdefault(f.spec.name, []).append(f.spec.version)
    for name, found in by_name.items():
        active[name] = versions.choose_active(found, pins.get(name))
        if pins.get(name) and pins[name] not in found:
            log.warning("pipeline %s is pinned to version %s, which is not in %s; using %s",
                        name, pins[name], folder, active[name])
    return FolderScan(files=files, active=active)


def _flag_duplicates(files: list[PipelineFile]) -> None:
    seen: dict[tuple[str, str], Path] = {}
    for f in files:
        if f.spec is None:
            continue
        key = (f.spec.name, f.spec.version)
        if key in seen:
            f.issues.append(SpecIssue(str(f.path), 1, "metadata.version",
                                      f"pipeline {key[0]!r} version {key[1]} is already defined in {seen[key]}"))
        else:
            seen[key] = f.path


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
    scan = scan_folder(folder, settings)
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
