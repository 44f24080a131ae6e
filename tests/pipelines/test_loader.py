"""The dags-folder loader: broken files never hide good ones, versions, light parsing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipelines.helpers import BIN, COMMAND_EXAMPLE, LOADER, airflow_project, minimal, write
from train_platform.cli import main
from train_platform.compiler.loader import load_dags

HEAVY = ("torch", "bentoml", "great_expectations", "pyiceberg")


@pytest.fixture
def dags_folder(tmp_path) -> Path:
    folder = tmp_path / "dags"
    folder.mkdir()
    shutil.copy(LOADER, folder / LOADER.name)
    return folder


def _broken_and_two_good(folder: Path) -> None:
    write(folder / "good_one.yaml", minimal("good-one"))
    write(folder / "team" / "good_two.yml", minimal("good-two"))
    write(folder / "broken.yaml", minimal("broken").replace("type: command", "type: comand"))


def test_one_broken_file_never_hides_the_others(dags_folder, tp_home):
    from airflow.dag_processing.dagbag import DagBag

    _broken_and_two_good(dags_folder)
    bag = DagBag(dag_folder=str(dags_folder))
    assert bag.import_errors == {}
    assert {"good-one", "good-two"} <= set(bag.dags)
    placeholder = bag.dags["invalid__broken.yaml"]
    assert "invalid-pipeline" in placeholder.tags
    expected = f"{dags_folder / 'broken.yaml'}:9: spec.tasks[0].type: unknown task type 'comand'"
    assert expected in placeholder.description
    assert expected in placeholder.doc_md
    assert expected in placeholder.get_task("report_errors").errors[0]


def test_placeholder_task_fails_with_the_error(dags_folder, tp_home):
    from operators.invalid_pipeline import InvalidPipelineError

    _broken_and_two_good(dags_folder)
    dags = load_dags(dags_folder)
    task = dags["invalid__broken.yaml"].get_task("report_errors")
    with pytest.raises(InvalidPipelineError, match="broken.yaml:9"):
        task.execute({})


def test_airflowignore_and_foreign_yaml_are_respected(dags_folder, tp_home):
    write(dags_folder / "good_one.yaml", minimal("good-one"))
    write(dags_folder / "ignored" / "p.yaml", minimal("ignored-one"))
    write(dags_folder / ".airflowignore", "ignored/\n")
    write(dags_folder / "other-tool.yaml", "some: config\nof: another tool\n")
    assert set(load_dags(dags_folder)) == {"good-one"}


def test_active_version_and_rollback(dags_folder, tp_home, capsys):
    for version in ("1.0.0", "1.2.0", "1.10.0"):
        write(dags_folder / f"p-{version}.yaml", minimal("multi", version))
    # semantic-version precedence, not string order: 1.10.0 > 1.2.0
    assert load_dags(dags_folder)["multi"].description.endswith("(v1.10.0)")
    write(dags_folder / "p-rc.yaml", minimal("multi", "2.0.0-rc.1"))
    dags = load_dags(dags_folder)
    assert main(["pipeline", "list", "--dags-folder", str(dags_folder), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    active = [row["version"] for row in listing["pipelines"] if row["active"]]
    assert active == ["2.0.0-rc.1"]
    assert dags["multi"].description.endswith("(v2.0.0-rc.1)")
    assert "multi__v1.0.0" in dags and type(dags["multi__v1.0.0"].timetable).__name__ == "NullTimetable"

    assert main(["pipeline", "activate", "multi", "1.2.0", "--dags-folder", str(dags_folder)]) == 0
    dags = load_dags(dags_folder)
    assert dags["multi"].description.endswith("(v1.2.0)")
    assert "multi__v2.0.0-rc.1" in dags and "inactive-version" in dags["multi__v2.0.0-rc.1"].tags

    assert main(["pipeline", "activate", "multi", "9.9.9", "--dags-folder", str(dags_folder)]) == 1
    assert "has no version '9.9.9'" in capsys.readouterr().err
    assert main(["pipeline", "activate", "multi", "--latest", "--dags-folder", str(dags_folder)]) == 0
    assert load_dags(dags_folder)["multi"].description.endswith("(v2.0.0-rc.1)")


def test_duplicate_name_and_version_is_reported(dags_folder, tp_home):
    write(dags_folder / "a.yaml", minimal("dup"))
    write(dags_folder / "b.yaml", minimal("dup"))
    dags = load_dags(dags_folder)
    assert "dup" in dags
    assert "is already defined in" in dags["invalid__b.yaml"].description


def test_parsing_imports_no_heavy_library(dags_folder, tmp_path):
    shutil.copy(COMMAND_EXAMPLE, dags_folder / "example.yaml")
    _broken_and_two_good(dags_folder)
    code = (
        "import sys, json\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(dags_folder)!r})\n"
        f"print(json.dumps({{'dags': sorted(bag.dags), 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))\n"
    )
    env = {**os.environ, "TP_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert {"example-command-pipeline", "good-one", "good-two", "invalid__broken.yaml"} <= set(result["dags"])


@pytest.mark.slow
def test_real_dag_processor_shows_good_dags_and_the_broken_files_error(tmp_path):
    """Not only DagBag: Airflow's own DAG processor parses the folder into its database."""
    env = airflow_project(tmp_path, [])
    dags_folder = Path(env["AIRFLOW__CORE__DAGS_FOLDER"])
    _broken_and_two_good(dags_folder)
    subprocess.run([str(BIN / "airflow"), "dag-processor", "-n", "1"], env=env, check=True, capture_output=True,
                   timeout=300)
    home = Path(env["AIRFLOW_HOME"])
    import sqlite3

    with sqlite3.connect(home / "airflow.db") as db:
        rows = dict(db.execute("select dag_id, description from dag").fetchall())
        errors = db.execute("select count(*) from import_error").fetchone()[0]
    assert errors == 0
    assert {"good-one", "good-two", "invalid__broken.yaml"} <= set(rows)
    assert "broken.yaml:9: spec.tasks[0].type: unknown task type 'comand'" in rows["invalid__broken.yaml"]


def test_a_bad_schedule_becomes_a_placeholder_pointing_at_its_line(dags_folder, tp_home):
    write(dags_folder / "bad_cron.yaml", minimal("bad-cron").replace("    spec:\n", "    spec:\n      schedule: \"61 * * * *\"\n", 1))
    write(dags_folder / "good_one.yaml", minimal("good-one"))
    dags = load_dags(dags_folder)
    assert "good-one" in dags and "bad-cron" not in dags
    description = dags["invalid__bad_cron.yaml"].description
    assert f"{dags_folder / 'bad_cron.yaml'}:7: spec.schedule: '61 * * * *' is not a cron expression" in description


def test_dagbag_records_no_import_error_for_a_rejected_schedule(dags_folder, tp_home):
    from airflow.dag_processing.dagbag import DagBag

    write(dags_folder / "bad_cron.yaml", minimal("bad-cron").replace("    spec:\n", "    spec:\n      schedule: \"61 * * * *\"\n", 1))
    write(dags_folder / "good_one.yaml", minimal("good-one"))
    bag = DagBag(dag_folder=str(dags_folder))
    assert bag.import_errors == {}
    assert {"good-one", "invalid__bad_cron.yaml"} <= set(bag.dags)
