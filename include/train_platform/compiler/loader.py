"""Compiling the pipeline files of a dags folder into DAGs, for the one loader file in ``dags/``.

- Pipeline files are found by ``train_platform.spec.folder`` (``*.yaml``, ``*.yml``,
  ``*.json`` that mention ``train-platform/``, ``.airflowignore`` respected with the syntax
  Airflow is configured with).
- One broken file never stops the others. Airflow 3.3 cannot report an error for a single
  pipeline without dropping every DAG of the loader file (apache/airflow#53971), and its
  DAG processor only looks at ``.py`` files, so each broken file becomes a placeholder DAG
  tagged ``invalid-pipeline``: its description and docs carry the errors (file, line,
  field, message) and its only task fails with them.
- A placeholder takes the dag_id the file's pipeline would have if the file were valid
  (its name, or ``NAME__vVERSION``), when the file declares a readable name and no valid
  file has that dag_id; otherwise ``invalid__<file>``. Airflow 3.3 only deactivates a DAG
  that a file stopped producing in its periodic stale-DAG check (``[scheduler]
  parsing_cleanup_interval``, 60 s, once the DAG is ``[dag_processor] stale_dag_threshold``,
  50 s, older than the file's last parse), which a DAG file cannot speed up; sharing the
  dag_id means the parse that compiles a fixed file replaces its placeholder, so none is
  left behind. Only a fix that changes the id (a broken higher version, ``NAME__v2.0.0``,
  becomes ``NAME``) leaves the old row to that check, 30 to 90 s after the new DAG.
- Of several versions of one pipeline, the active one gets the pipeline's name as dag_id
  and its schedule; the others compile unscheduled and paused, as ``NAME__vVERSION``. A
  version Airflow refuses (say, a bad cron expression) becomes a placeholder and the next
  best version becomes active.
- Errors are logged when the whole folder is parsed (the DAG processor's log). When Airflow
  starts a task it tells the DAG file which DAG it needs (``airflow.sdk.get_parsing_context``);
  then only the files that can define that dag_id are parsed and validated (see
  ``candidates``), nothing about other files is logged, and when those files do not give
  the DAG the whole folder is compiled instead.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from train_platform.compiler import docs
from train_platform.compiler.plan import dag_id_for, dag_id_of
from train_platform.exceptions import SpecIssue
from train_platform.settings import Settings, get_settings
from train_platform.spec import versions
from train_platform.spec.folder import FolderScan, PipelineFile, scan_folder
from train_platform.spec.models import version_key

log = logging.getLogger(__name__)

INVALID_TAG = "invalid-pipeline"
INVALID_PREFIX = "invalid__"
# Airflow's limit on a dag_id (airflow.sdk.definitions._internal.node.validate_key).
_MAX_DAG_ID = 250


def _ignore_syntax() -> str:
    from airflow.configuration import conf

    return conf.get("core", "DAG_IGNORE_FILE_SYNTAX", fallback="glob")


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return path.name


def placeholder_ids(path: Path, folder: Path) -> tuple[str, str]:
    """The two ids a placeholder of ``path`` can have: ``invalid__<path in the folder>``
    (characters Airflow refuses in a dag_id become ``_``), and the same shortened with a
    digest of the path, used when the first is too long or already taken."""
    rel = _relative(path, folder)
    plain = INVALID_PREFIX + re.sub(r"[^\w.-]+", "_", rel)
    digest = hashlib.sha256(rel.encode()).hexdigest()[:10]
    return plain, f"{plain[:_MAX_DAG_ID - 12]}__{digest}"


def candidates(dag_id: str, folder: Path) -> tuple[set[str], Callable[[Path], bool] | None]:
    """What a partial scan must validate to compile ``dag_id``: the pipeline names it can
    belong to (itself, and NAME of ``NAME__vVERSION``), and for ``invalid__...`` a test
    that picks the file(s) whose placeholder it is."""
    names = {dag_id}
    for match in re.finditer("__v", dag_id):
        names.add(dag_id[:match.start()])
    paths = None
    if dag_id.startswith(INVALID_PREFIX):
        def paths(path: Path) -> bool:
            return dag_id in placeholder_ids(path, folder)
    return names, paths


def _requested_dag_id() -> str | None:
    """The dag_id Airflow is parsing the file for (a task run), or None (a full parse)."""
    from airflow.sdk import get_parsing_context

    return get_parsing_context().dag_id


def load_dags(folder: str | Path, settings: Settings | None = None) -> dict[str, Any]:
    """dag_id -> DAG for the pipeline files under ``folder`` (placeholders for broken ones);
    only the ones that can define the requested DAG when Airflow names one."""
    settings = settings or get_settings()
    folder = Path(folder)
    wanted = _requested_dag_id()
    if wanted:
        names, paths = candidates(wanted, folder)
        scan = scan_folder(folder, settings, ignore_syntax=_ignore_syntax(), names=names, paths=paths)
        dags = compile_scan(scan, folder, settings, report=False)
        if wanted in dags:
            log.debug("DAG %s: compiled %d of the %d pipeline files of %s", wanted, len(scan.files), scan.found,
                      folder)
            return dags
        log.info("no candidate file defines DAG %s (%d looked at); compiling the whole dags folder",
                 wanted, len(scan.files))
        return compile_scan(scan_folder(folder, settings, ignore_syntax=_ignore_syntax()), folder, settings,
                            report=False)
    scan = scan_folder(folder, settings, ignore_syntax=_ignore_syntax())
    return compile_scan(scan, folder, settings, report=True)


def compile_scan(scan: FolderScan, folder: Path, settings: Settings, *, report: bool) -> dict[str, Any]:
    """The DAGs of a folder scan. ``report`` logs every error of every broken file (the
    DAG processor's parse); a task run's parse leaves that to the placeholders."""
    from train_platform.compiler.compiler import build_dag

    by_name: dict[str, list[PipelineFile]] = {}
    for f in scan.files:
        if f.declared_name:
            by_name.setdefault(f.declared_name, []).append(f)
    built: dict[Path, tuple[str, Any]] = {}  # path -> (what its docs depend on, DAG)
    while True:
        ids = _assign_ids(scan, folder, by_name)
        rejected = False
        for f in scan.valid():
            spec = f.spec
            active = scan.active[spec.name] == spec.version
            rows = _version_rows(by_name[spec.name], scan, ids, folder)
            state = _state(f, scan)
            key = repr((ids[f.path], state, rows))
            if f.path in built and built[f.path][0] == key:
                continue
            try:
                dag = build_dag(spec, source=_relative(f.path, folder), active=active, settings=settings,
                                text=f.text, state=state, versions=rows)
                # The checks DagBag runs on every DAG of this file: one failing there would be
                # an import error for the whole file, hiding every other pipeline.
                dag.validate()
            except Exception as exc:  # Airflow refused the DAG (a bad cron expression, say)
                f.issues.append(SpecIssue(str(f.path), _line_hint(exc, f), "", f"Airflow rejected the pipeline: {exc}"))
                built.pop(f.path, None)
                rejected = True
                continue
            built[f.path] = (key, dag)
        if not rejected:
            break
        scan.choose_active(folder)  # the next best version of a refused one takes over
    dags: dict[str, Any] = {dag.dag_id: dag for _, dag in built.values()}
    for f in scan.broken():
        if report:
            for issue in f.issues:
                log.error("invalid pipeline file: %s", issue)
        rows = _version_rows(by_name[f.declared_name], scan, ids, folder) if f.declared_name else []
        dag = build_placeholder(f, folder, ids[f.path], rows)
        dags[dag.dag_id] = dag
    return dags


def _assign_ids(scan: FolderScan, folder: Path, by_name: dict[str, list[PipelineFile]]) -> dict[Path, str]:
    """The dag_id of every file of the scan. Two valid files that would share a dag_id
    (pipeline ``a`` version 1.0.0 inactive, and a pipeline named ``a__v1.0.0``): the
    second becomes broken, so neither hides the other."""
    while True:
        ids: dict[Path, str] = {}
        owner: dict[str, PipelineFile] = {}
        clash = False
        for f in scan.valid():
            dag_id = dag_id_for(f.spec, scan.active[f.spec.name] == f.spec.version)
            if dag_id in owner:
                f.issues.append(SpecIssue(str(f.path), 1, "metadata.name",
                                          f"its DAG id {dag_id!r} is already the DAG of {owner[dag_id].path}"))
                clash = True
                continue
            owner[dag_id] = f
            ids[f.path] = dag_id
        if not clash:
            break
        scan.choose_active(folder)
    taken = set(ids.values())
    for f in scan.broken():
        dag_id = _would_be_id(f, scan, by_name)
        if dag_id is None or dag_id in taken or len(dag_id) > _MAX_DAG_ID:
            plain, digested = placeholder_ids(f.path, folder)
            dag_id = plain if plain not in taken and len(plain) <= _MAX_DAG_ID else digested
        taken.add(dag_id)
        ids[f.path] = dag_id
    return ids


def _would_be_id(f: PipelineFile, scan: FolderScan, by_name: dict[str, list[PipelineFile]]) -> str | None:
    """The dag_id the broken file ``f`` would have if it were valid, when it can be told."""
    name, version = f.declared_name, f.declared_version
    if name is None:
        return None
    if name in scan.active:  # a valid version is active and keeps the name
        return dag_id_of(name, version, active=version == scan.active[name]) if version else None
    broken = [g for g in by_name[name] if g.issues]
    declared = [g.declared_version for g in broken if g.declared_version]
    if not declared:
        return name if len(broken) == 1 else None
    if version is None:
        return None
    return dag_id_of(name, version, active=version == versions.choose_active(declared, scan.pins.get(name)))


def _state(f: PipelineFile, scan: FolderScan) -> str:
    spec = f.spec
    active = scan.active.get(spec.name)
    if active != spec.version:
        return f"inactive (the active version is {active}, DAG {docs.code(spec.name)})"
    if scan.pins.get(spec.name) == spec.version:
        return f"active, pinned with {docs.code('tp pipeline activate')}"
    return "active, the highest version"


def _version_rows(files: list[PipelineFile], scan: FolderScan, ids: dict[Path, str],
                  folder: Path) -> list[docs.VersionRow]:
    """The version history of one pipeline: ``files`` are all the files that declare it."""
    rows = []
    for g in files:
        name = g.declared_name
        if g.issues:
            state = "invalid"
        elif scan.active.get(name) == g.spec.version:
            state = "active (pinned)" if scan.pins.get(name) == g.spec.version else "active"
        else:
            state = "inactive"
        rows.append(docs.VersionRow(g.declared_version, ids[g.path], state, _relative(g.path, folder), len(g.issues)))
    return sorted(rows, key=lambda r: (version_key(r.version) if r.version else (-1,), r.file), reverse=True)


def build_placeholder(f: PipelineFile, folder: Path, dag_id: str, history: list[docs.VersionRow] | None = None):
    """The paused DAG that stands for the broken file ``f``, with id ``dag_id``;
    ``history`` is every file of the pipeline the file declares, shown in its docs."""
    from airflow.sdk import DAG

    from operators.invalid_pipeline import InvalidPipelineOperator

    errors = [str(issue) for issue in f.issues]
    rel = _relative(f.path, folder)
    first = str(f.issues[0]).replace(str(f.path), rel, 1)
    more = len(errors) - 1
    suffix = f" (+{more} more)" if more else ""
    dag = DAG(
        dag_id=dag_id,
        description=docs.summary("", f"INVALID pipeline file: {first}", suffix),
        doc_md=docs.placeholder_doc_md(file=rel, errors=errors, text=f.text or None, name=f.declared_name,
                                       versions=history or [], dag_id=dag_id),
        schedule=None,
        tags=["train-platform", INVALID_TAG],
        is_paused_upon_creation=True,
    )
    InvalidPipelineOperator(task_id="report_errors", file=str(f.path), errors=errors, dag=dag, retries=0)
    return dag


def _line_hint(exc: Exception, f: PipelineFile) -> int:
    """Errors Airflow raises are about the schedule more often than anything else."""
    about_schedule = "timetable" in type(exc).__name__.lower() or any(
        word in str(exc).lower() for word in ("schedule", "cron"))
    if f.document is not None and about_schedule:
        return f.document.line_of(("spec", "schedule"))
    return 1
