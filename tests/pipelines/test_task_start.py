"""Starting a task: Airflow names the DAG it needs (its parsing context), and the loader
compiles only the files that can define it, saying nothing about the other files."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

import airflow.sdk  # noqa: F401 - Airflow sets up logging on import; before caplog attaches, not during a test
import pytest

from tests.pipelines.helpers import BIN, LOADER, airflow_project, minimal, write
from train_platform.compiler.loader import load_dags
from train_platform.spec.folder import scan_folder


@pytest.fixture
def dags_folder(tmp_path) -> Path:
    folder = tmp_path / "dags"
    folder.mkdir()
    shutil.copy(LOADER, folder / LOADER.name)
    return folder


def _load_for(dag_id: str, folder: Path) -> dict:
    """``load_dags`` under the parsing context Airflow's task runner sets."""
    from airflow.sdk.definitions._internal.dag_parsing_context import _airflow_parsing_context_manager
    from airflow.sdk.definitions.context import _AIRFLOW_PARSING_CONTEXT_DAG_ID, _AIRFLOW_PARSING_CONTEXT_TASK_ID

    try:
        with _airflow_parsing_context_manager(dag_id=dag_id, task_id="only"):
            return load_dags(folder)
    finally:  # Airflow's context manager leaves the variables set when they were unset before
        os.environ.pop(_AIRFLOW_PARSING_CONTEXT_DAG_ID, None)
        os.environ.pop(_AIRFLOW_PARSING_CONTEXT_TASK_ID, None)


def _folder_with_noise(folder: Path) -> None:
    write(folder / "good_one.yaml", minimal("good-one"))
    write(folder / "broken.yaml", minimal("broken").replace("type: command", "type: comand"))
    for i in range(1, 21):  # pipeline-1 .. pipeline-20: "pipeline-1" is inside "pipeline-10"
        write(folder / "many" / f"p{i}.yaml", minimal(f"pipeline-{i}"))


def test_a_task_run_compiles_only_the_files_of_its_dag(dags_folder, tp_home, caplog):
    _folder_with_noise(dags_folder)
    caplog.set_level(logging.DEBUG, logger="train_platform")
    assert set(_load_for("good-one", dags_folder)) == {"good-one"}
    assert set(_load_for("pipeline-1", dags_folder)) == {"pipeline-1"}
    assert f"DAG pipeline-1: compiled 1 of the 22 pipeline files of {dags_folder}" in caplog.text
    # nothing about the broken file, which the task does not need
    assert "broken" not in caplog.text and "comand" not in caplog.text
    # the full parse (the DAG processor's) reports it, with its line
    caplog.clear()
    dags = load_dags(dags_folder)
    assert {"good-one", "broken", "pipeline-1", "pipeline-20"} <= set(dags)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith(
        f"invalid pipeline file: {dags_folder / 'broken.yaml'}:9: spec.tasks[0].type: unknown task type 'comand'")


def test_only_candidate_files_are_parsed_and_validated(dags_folder, tp_home, monkeypatch):
    from train_platform.spec import folder

    _folder_with_noise(dags_folder)
    parsed: list[str] = []
    validated: list[str] = []
    real_parse, real_validate = folder.parse_text, folder.validate_document

    def parse_text(text, file):  # the real functions, counted
        parsed.append(Path(file).name)
        return real_parse(text, file)

    def validate_document(document):
        validated.append(Path(document.file).name)
        return real_validate(document)

    monkeypatch.setattr(folder, "parse_text", parse_text)
    monkeypatch.setattr(folder, "validate_document", validate_document)
    full = scan_folder(dags_folder)
    assert full.complete and len(full.files) == full.found == 22 and len(parsed) == len(validated) == 22
    parsed.clear(), validated.clear()
    partial = scan_folder(dags_folder, names={"pipeline-1"})
    assert not partial.complete and partial.found == 22
    assert [f.path for f in partial.files] == [dags_folder / "many" / "p1.yaml"]
    assert parsed == validated == ["p1.yaml"]
    assert partial.active == {"pipeline-1": "1.0.0"}


def test_a_task_of_an_inactive_version_gets_every_version_of_its_pipeline(dags_folder, tp_home):
    _folder_with_noise(dags_folder)
    for version in ("1.0.0", "1.2.0"):
        write(dags_folder / f"multi-{version}.yaml", minimal("multi", version))
    dags = _load_for("multi__v1.0.0", dags_folder)
    # the active version is chosen among all of them, so the dag_ids are the full parse's
    assert set(dags) == {"multi", "multi__v1.0.0"}
    assert dags["multi"].description.endswith("(v1.2.0)")
    assert dags["multi__v1.0.0"].doc_md == load_dags(dags_folder)["multi__v1.0.0"].doc_md


def test_a_placeholder_task_gets_its_file_and_the_files_it_clashes_with(dags_folder, tp_home):
    _folder_with_noise(dags_folder)
    write(dags_folder / "a.yaml", minimal("dup"))
    write(dags_folder / "b.yaml", minimal("dup"))
    write(dags_folder / "syntax.yaml", "apiVersion: train-platform/v1\nkind: [unclosed\n")
    assert set(_load_for("invalid__b.yaml", dags_folder)) == {"dup", "invalid__b.yaml"}
    assert set(_load_for("invalid__syntax.yaml", dags_folder)) == {"invalid__syntax.yaml"}
    broken = _load_for("broken", dags_folder)
    assert set(broken) == {"broken"} and "invalid-pipeline" in broken["broken"].tags


def test_a_name_spelled_with_escapes_is_still_found(dags_folder, tp_home):
    _folder_with_noise(dags_folder)
    # "hidden" written as \x68idden: no literal "hidden" in the file
    write(dags_folder / "escaped.yaml", minimal("hidden").replace("name: hidden", 'name: "\\x68idden"'))
    assert "hidden" not in (dags_folder / "escaped.yaml").read_text()
    assert set(_load_for("hidden", dags_folder)) == {"hidden"}


def test_a_dag_no_candidate_defines_falls_back_to_the_whole_folder(dags_folder, tp_home, caplog):
    _folder_with_noise(dags_folder)
    caplog.set_level(logging.INFO, logger="train_platform")
    dags = _load_for("not-a-pipeline-here", dags_folder)
    assert {"good-one", "broken", "pipeline-1", "pipeline-20"} <= set(dags)
    assert "compiling the whole dags folder" in caplog.text
    # still no error logged about other files in a task's log
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.slow
def test_airflow_tasks_test_logs_nothing_about_a_broken_file(tmp_path):
    """A real `airflow tasks test` (it parses the dags folder under the parsing context, as
    the task runner does) with a broken file in the folder: the task runs, and its output
    says nothing about the broken file."""
    env = airflow_project(tmp_path, [])
    dags = Path(env["AIRFLOW__CORE__DAGS_FOLDER"])
    write(dags / "good_one.yaml", minimal("good-one"))
    write(dags / "broken.yaml", minimal("broken").replace("type: command", "type: comand"))
    run = subprocess.run([str(BIN / "airflow"), "tasks", "test", "good-one", "only"], env=env,
                         capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert "hi" in out.split()  # the task's own command ran
    assert "broken" not in out and "comand" not in out and "invalid pipeline" not in out.lower()
    # the broken file's errors are reported where they belong: its placeholder's task
    own = subprocess.run([str(BIN / "airflow"), "tasks", "test", "broken", "report_errors"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert "broken.yaml:9: spec.tasks[0].type: unknown task type 'comand'" in own.stdout + own.stderr


def _spy_reads(monkeypatch) -> list[str]:
    """The names of the files the scan opens, through the real reader."""
    from train_platform.spec import folder

    opened: list[str] = []
    real = folder._read

    def _read(path):
        opened.append(path.name)
        return real(path)

    monkeypatch.setattr(folder, "_read", _read)
    return opened


def test_a_task_start_does_not_read_files_the_name_index_vouches_for(dags_folder, tp_home, monkeypatch):
    _folder_with_noise(dags_folder)
    time.sleep(2.1)  # the index trusts files that had settled when it was written
    scan_folder(dags_folder)  # a full scan (the DAG processor's) writes the index
    opened = _spy_reads(monkeypatch)
    partial = scan_folder(dags_folder, names={"pipeline-1"})
    assert opened == ["p1.yaml"] and [f.path.name for f in partial.files] == ["p1.yaml"]
    assert partial.found == 22

    # a file changed since: read again, and its new name counts
    opened.clear()
    write(dags_folder / "many" / "p2.yaml", minimal("pipeline-1", "2.0.0"))
    partial = scan_folder(dags_folder, names={"pipeline-1"})
    assert sorted(opened) == ["p1.yaml", "p2.yaml"]
    assert partial.active == {"pipeline-1": "2.0.0"} and len(partial.files) == 2


def test_a_damaged_name_index_is_only_ignored(dags_folder, tp_home, monkeypatch):
    _folder_with_noise(dags_folder)
    time.sleep(2.1)
    scan_folder(dags_folder)
    [index] = (tp_home / "pipelines" / "name-index").glob("*.json")
    opened = _spy_reads(monkeypatch)
    for damage in ("{not json", '{"format": 1, "folder": 3}', "[]", '{"format": 1, "folder": "%s", "written_ns": 0, '
                   '"files": {"x": [1]}}' % dags_folder.resolve()):
        index.write_text(damage)
        opened.clear()
        partial = scan_folder(dags_folder, names={"pipeline-1"})
        assert len(opened) == 22 and [f.path.name for f in partial.files] == ["p1.yaml"]
