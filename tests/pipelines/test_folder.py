"""Finding pipeline files (``train_platform.spec.folder``) the way Airflow's DAG processor
walks the dags folder, and pins that cannot hide pipelines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.pipelines.helpers import minimal, write
from train_platform.settings import get_settings
from train_platform.spec.folder import PIPELINE_SUFFIXES, discover, scan_folder

IGNORE_FILES = {
    "glob": "# comment\n*.tmp.yaml\n/top_only.yaml\nscratch/\n!keep.tmp.yaml\nteam/drafts/*\n",
    "regexp": "\\.tmp\\.yaml$\n^top_only\\.yaml$\nscratch/\nteam/drafts/\n",
}


def _tree(folder: Path, syntax: str) -> None:
    for rel in ("a.yaml", "top_only.yaml", "sub/top_only.yaml", "x.tmp.yaml", "keep.tmp.yaml",
                "scratch/s.yaml", "deep/scratch/t.yml", "team/ok.json", "team/drafts/d.yaml",
                "team/drafts/more/e.yaml", "notes.txt"):
        write(folder / rel, "x: 1\n")
    write(folder / ".airflowignore", IGNORE_FILES[syntax])
    write(folder / "team" / ".airflowignore", "ok_but_not.json\n" if syntax == "glob" else "ok_but_not\\.json\n")
    write(folder / "team" / "ok_but_not.json", "{}")


@pytest.mark.parametrize("syntax", ["glob", "regexp"])
def test_discover_agrees_with_airflows_own_walk(tmp_path, syntax):
    from airflow._shared.module_loading.file_discovery import find_path_from_directory

    _tree(tmp_path, syntax)
    theirs = sorted(Path(p) for p in find_path_from_directory(str(tmp_path), ".airflowignore", syntax)
                    if p.endswith(PIPELINE_SUFFIXES))
    ours = discover(tmp_path, syntax)
    assert ours == theirs
    # and the rules did something: each ignore line removed at least one file
    assert tmp_path / "a.yaml" in ours and tmp_path / "x.tmp.yaml" not in ours
    assert tmp_path / "team" / "drafts" / "d.yaml" not in ours


def test_unknown_ignore_syntax_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unsupported dag_ignore_file_syntax 'fnmatch'"):
        discover(tmp_path, "fnmatch")


@pytest.mark.parametrize("pins", ['["v1"]', '"1.0.0"', "42", 'null', '{"good-one": 3}', "\x00\xff not json"])
def test_a_damaged_pins_file_hides_no_pipeline(tmp_path, tp_home, pins, caplog):
    folder = tmp_path / "dags"
    write(folder / "good_one.yaml", minimal("good-one"))
    state = get_settings().pipeline_state_dir
    state.mkdir(parents=True, exist_ok=True)
    (state / "active.json").write_text(pins, encoding="latin-1")
    scan = scan_folder(folder)
    assert scan.active == {"good-one": "1.0.0"}
    assert "pins" in caplog.text


def test_valid_pins_are_kept(tmp_path, tp_home):
    folder = tmp_path / "dags"
    write(folder / "v1.yaml", minimal("p"))
    write(folder / "v2.yaml", minimal("p", version="2.0.0"))
    state = get_settings().pipeline_state_dir
    state.mkdir(parents=True, exist_ok=True)
    (state / "active.json").write_text(json.dumps({"p": "1.0.0"}))
    assert scan_folder(folder).active == {"p": "1.0.0"}


def test_a_symlink_loop_is_skipped_and_hides_nothing(tmp_path, tp_home, caplog):
    folder = tmp_path / "dags"
    write(folder / "top.yaml", minimal("top"))
    write(folder / "team" / "good_one.yaml", minimal("good-one"))
    (folder / "team" / "loop").symlink_to(folder, target_is_directory=True)
    scan = scan_folder(folder)
    assert scan.active == {"good-one": "1.0.0", "top": "1.0.0"}
    assert not scan.broken()  # each file found once: no duplicate-version error
    assert "symlink loop" in caplog.text
