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
    # the placeholder has the dag_id the pipeline will have once the file is fixed
    placeholder = bag.dags["broken"]
    assert "invalid-pipeline" in placeholder.tags
    assert placeholder.description.startswith(
        "INVALID pipeline file: broken.yaml:9: spec.tasks[0].type: unknown task type 'comand'")
    expected = f"{dags_folder / 'broken.yaml'}:9: spec.tasks[0].type: unknown task type 'comand'"
    assert expected in placeholder.doc_md
    assert expected in placeholder.get_task("report_errors").errors[0]


def test_placeholder_task_fails_with_the_error(dags_folder, tp_home):
    from operators.invalid_pipeline import InvalidPipelineError

    _broken_and_two_good(dags_folder)
    dags = load_dags(dags_folder)
    task = dags["broken"].get_task("report_errors")
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
    assert {"example-command-pipeline", "good-one", "good-two", "broken"} <= set(result["dags"])


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
    assert {"good-one", "good-two", "broken"} <= set(rows)
    assert "broken.yaml:9: spec.tasks[0].type: unknown task type 'comand'" in rows["broken"]


def test_a_bad_schedule_becomes_a_placeholder_pointing_at_its_line(dags_folder, tp_home):
    write(dags_folder / "bad_cron.yaml", minimal("bad-cron").replace("    spec:\n", "    spec:\n      schedule: \"61 * * * *\"\n", 1))
    write(dags_folder / "good_one.yaml", minimal("good-one"))
    dags = load_dags(dags_folder)
    assert "good-one" in dags and "invalid-pipeline" in dags["bad-cron"].tags
    description = dags["bad-cron"].description
    assert "INVALID pipeline file: bad_cron.yaml:7: spec.schedule: '61 * * * *' is not a cron expression" in description


def test_dagbag_records_no_import_error_for_a_rejected_schedule(dags_folder, tp_home):
    from airflow.dag_processing.dagbag import DagBag

    write(dags_folder / "bad_cron.yaml", minimal("bad-cron").replace("    spec:\n", "    spec:\n      schedule: \"61 * * * *\"\n", 1))
    write(dags_folder / "good_one.yaml", minimal("good-one"))
    bag = DagBag(dag_folder=str(dags_folder))
    assert bag.import_errors == {}
    assert {"good-one", "bad-cron"} <= set(bag.dags) and "invalid-pipeline" in bag.dags["bad-cron"].tags


def test_placeholder_ids(dags_folder, tp_home):
    write(dags_folder / "syntax.yaml", "apiVersion: train-platform/v1\nkind: [unclosed\n")
    write(dags_folder / "a.yaml", minimal("dup"))
    write(dags_folder / "b.yaml", minimal("dup"))
    write(dags_folder / "p-1.yaml", minimal("multi"))
    write(dags_folder / "p-2.yaml", minimal("multi", "2.0.0").replace("type: command", "type: comand"))
    dags = load_dags(dags_folder)
    placeholders = {dag_id for dag_id, dag in dags.items() if "invalid-pipeline" in dag.tags}
    # no readable name: the file's own id; a duplicate version: its would-be id is taken
    assert placeholders == {"invalid__syntax.yaml", "invalid__b.yaml", "multi__v2.0.0"}
    # a broken new version leaves the working one active and scheduled under the name
    assert "invalid-pipeline" not in dags["multi"].tags and dags["multi"].description.endswith("(v1.0.0)")
    assert dags["multi__v2.0.0"].description.startswith("INVALID pipeline file: p-2.yaml:9:")


def test_docs_show_the_version_history(dags_folder, tp_home, capsys):
    for version in ("1.0.0", "1.2.0"):
        write(dags_folder / f"p-{version}.yaml", minimal("multi", version))
    write(dags_folder / "p-2.0.0.yaml", minimal("multi", "2.0.0").replace("type: command", "type: comand"))
    assert main(["pipeline", "activate", "multi", "1.0.0", "--dags-folder", str(dags_folder)]) == 0
    dags = load_dags(dags_folder)
    history = [
        "| 2.0.0 | `multi__v2.0.0` | invalid: 1 error | `p-2.0.0.yaml` |",
        "| 1.2.0 | `multi__v1.2.0` | inactive | `p-1.2.0.yaml` |",
        "| 1.0.0 | `multi` | active (pinned) | `p-1.0.0.yaml` |",
    ]
    for dag_id in ("multi", "multi__v1.2.0", "multi__v2.0.0"):
        doc = dags[dag_id].doc_md
        rows = [line.replace("**", "").replace(" (this DAG)", "") for line in doc.splitlines()
                if line.startswith("| ") and "p-" in line and "`multi" in line]
        assert rows == history, dag_id
        assert f"(this DAG) | `{dag_id}` |" in doc
    assert "`1.0.0`: active, pinned with `tp pipeline activate`" in dags["multi"].doc_md
    assert "inactive (the active version is 1.0.0, DAG `multi`)" in dags["multi__v1.2.0"].doc_md
    # each DAG's docs end with its own file, exactly
    assert dags["multi__v1.2.0"].doc_md.endswith(
        "```yaml\n" + (dags_folder / "p-1.2.0.yaml").read_text() + "```\n")
    assert (dags_folder / "p-2.0.0.yaml").read_text() in dags["multi__v2.0.0"].doc_md


def test_a_fixed_file_replaces_its_placeholder_in_the_same_parse(dags_folder, tp_home):
    broken = minimal("fixme").replace("type: command", "type: comand")
    write(dags_folder / "fixme.yaml", broken)
    write(dags_folder / "good_one.yaml", minimal("good-one"))
    before = load_dags(dags_folder)
    assert set(before) == {"fixme", "good-one"} and "invalid-pipeline" in before["fixme"].tags
    write(dags_folder / "fixme.yaml", minimal("fixme"))
    after = load_dags(dags_folder)
    # nothing the previous parse produced is missing from this one: Airflow has nothing to
    # deactivate later, the placeholder is simply replaced
    assert set(after) == set(before)
    assert "invalid-pipeline" not in after["fixme"].tags and after["fixme"].get_task("only")


def test_a_refused_highest_version_hands_the_name_to_the_next(dags_folder, tp_home):
    write(dags_folder / "v1.yaml", minimal("sched"))
    write(dags_folder / "v2.yaml", minimal("sched", "2.0.0").replace("    spec:\n", "    spec:\n      schedule: \"61 * * * *\"\n", 1))
    dags = load_dags(dags_folder)
    assert dags["sched"].description.endswith("(v1.0.0)") and "invalid-pipeline" not in dags["sched"].tags
    assert "invalid-pipeline" in dags["sched__v2.0.0"].tags
    assert "| 1.0.0 | `sched` | active | `v1.yaml` |" in dags["sched__v2.0.0"].doc_md


def test_two_pipelines_that_would_share_a_dag_id_both_show(dags_folder, tp_home):
    write(dags_folder / "a1.yaml", minimal("a"))
    write(dags_folder / "a2.yaml", minimal("a", "2.0.0"))
    write(dags_folder / "z.yaml", minimal("a__v1.0.0"))
    dags = load_dags(dags_folder)
    assert dags["a__v1.0.0"].description.endswith("(v1.0.0)") and "inactive-version" in dags["a__v1.0.0"].tags
    assert "is already the DAG of" in dags["invalid__z.yaml"].description


@pytest.mark.slow
def test_real_dag_processor_replaces_a_fixed_files_placeholder_in_one_parse(tmp_path):
    """Airflow deactivates a DAG a file no longer produces only in its stale-DAG check,
    a minute or two later; the fixed pipeline keeps its placeholder's dag_id, so the
    parse that compiles the fix leaves no placeholder behind."""
    import sqlite3

    env = airflow_project(tmp_path, [])
    dags_folder = Path(env["AIRFLOW__CORE__DAGS_FOLDER"])
    _broken_and_two_good(dags_folder)

    def parse() -> dict[str, tuple[int, str]]:
        subprocess.run([str(BIN / "airflow"), "dag-processor", "-n", "1"], env=env, check=True,
                       capture_output=True, timeout=300)
        with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
            return {dag_id: (stale, description) for dag_id, stale, description
                    in db.execute("select dag_id, is_stale, description from dag")}

    rows = parse()
    assert rows["broken"][0] == 0 and rows["broken"][1].startswith("INVALID pipeline file: broken.yaml:9")
    write(dags_folder / "broken.yaml", minimal("broken"))
    rows = parse()
    active = {dag_id for dag_id, (stale, _) in rows.items() if not stale}
    assert active == {"good-one", "good-two", "broken"}
    assert rows["broken"][1] == "1 task (only), triggered by hand (v1.0.0)"
