"""``tp dataset check`` through the real command line in a subprocess: exit codes 0, 1 and 2,
the JSON it prints, and the HTML report it writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.quality.conftest import OWNER
from train_platform.datasets import open_dataset
from train_platform.datasets.dataset import create_dataset


def check(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "train_platform.cli", "dataset", "check", *argv],
                          capture_output=True, text=True, timeout=600)


def test_a_passing_check_exits_0_prints_json_and_writes_the_report(basic_motions, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    report = out / "report"
    done = check(basic_motions, "--as", OWNER, "--json", "--report", str(report))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert {"score", "passed", "checks", "label_issues", "report"} <= set(result)
    assert 0.0 <= result["score"] <= 1.0 and result["passed"] is True
    assert result["ref"] == "main" and result["samples"] == 40
    assert [set(c) >= {"name", "success", "sample_ids"} for c in result["checks"]] == [True] * 11
    assert all(set(i) >= {"sample_id", "given", "suggested", "confidence"} for i in result["label_issues"])
    # The report: Great Expectations' Data Docs with the validation's page, and the JSON.
    index = Path(result["report"])
    assert index == report / "index.html" and index.is_file()
    pages = list((report / "validations").rglob("*.html"))
    page = pages[0].read_text() if len(pages) == 1 else ""
    assert "Every sample id occurs once in the snapshot." in page and "The series holds no NaN or infinite value." in page
    assert json.loads((report / "check.json").read_text()) == result
    assert [p.name for p in out.iterdir()] == ["report"]  # no staging folder left behind


def test_a_check_below_the_minimum_exits_1_and_replaces_an_earlier_report(basic_motions, tmp_path):
    dataset = open_dataset(basic_motions, user=OWNER)
    dataset.branch("typo")
    dataset.label({"basicmotions-train-00002": "walkng"}, "typo")
    report = tmp_path / "report"
    assert check(basic_motions, "--as", OWNER, "--report", str(report)).returncode == 0

    done = check(f"{basic_motions}@typo", "--as", OWNER, "--json", "--min-score", "1.0", "--report", str(report))
    assert done.returncode == 1, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["passed"] is False and result["score"] < 1.0 and result["min_score"] == 1.0
    failed = {c["name"]: c["sample_ids"] for c in result["checks"] if not c["success"]}
    assert failed == {"labels_in_label_set": ["basicmotions-train-00002"]}
    assert json.loads((report / "check.json").read_text())["ref"] == "typo"

    # Without --json: a summary naming the failed check and its sample.
    text = check(f"{basic_motions}@typo", "--as", OWNER, "--min-score", "1.0")
    assert text.returncode == 1
    assert "FAIL labels_in_label_set: basicmotions-train-00002" in text.stdout and "FAILED (below 1.0)" in text.stdout


@pytest.mark.parametrize("case", ["unknown dataset", "unknown ref", "unknown snapshot", "empty ref", "unknown model",
                                  "malformed model", "bad min-score", "report folder in use"])
def test_bad_input_exits_2_naming_it_and_writes_nothing(basic_motions, tmp_path, case):
    out = tmp_path / "out"
    out.mkdir()
    report = out / "report"
    args = {
        "unknown dataset": (["nosuchdataset"], "no dataset named 'nosuchdataset'"),
        "unknown ref": ([f"{basic_motions}@nosuchbranch"], "no branch, tag or snapshot 'nosuchbranch'"),
        "unknown snapshot": ([f"{basic_motions}@123456789"], "no branch, tag or snapshot '123456789'"),
        "empty ref": ([f"{basic_motions}_empty"], "which holds no samples"),
        "unknown model": ([basic_motions, "--model", "model:nosuchmodel:production"], "model:nosuchmodel:production"),
        "malformed model": ([basic_motions, "--model", "nosuchmodel"], "--model nosuchmodel"),
        "bad min-score": ([basic_motions, "--min-score", "1.5"], "min_score must be within [0, 1], got 1.5"),
        "report folder in use": ([basic_motions], "holds files that are not an earlier report"),
    }
    argv, message = args[case]
    if case == "empty ref":
        create_dataset(f"{basic_motions}_empty", user=OWNER)  # main's head is the empty first snapshot
    if case == "report folder in use":
        report.mkdir()
        (report / "notes.txt").write_text("mine")
    dataset = open_dataset(basic_motions, user=OWNER)
    refs_before = dataset.refs()

    done = check(*argv, "--as", OWNER, "--json", "--report", str(report))

    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert message in done.stderr and done.stderr.count("tp: error:") == 1
    assert done.stdout == ""
    if case == "report folder in use":
        assert [p.name for p in report.iterdir()] == ["notes.txt"]
    else:
        assert not report.exists()
    assert [p.name for p in out.iterdir()] == (["report"] if case == "report folder in use" else [])
    assert dataset.refs() == refs_before
