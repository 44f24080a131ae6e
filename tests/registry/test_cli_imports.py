"""``tp model`` runs as ``python -m train_platform.cli model ...`` and, for the registry
commands, imports neither torch nor ``ml`` nor Airflow: a registration checks the
checkpoint from its metadata file and file hashes.

Each command runs in a fresh interpreter through a wrapper that executes the CLI's
``__main__`` module and then writes down which of those packages were loaded. The working
folder is the repository root, so ``ml`` and ``operators`` are importable: nothing but the
code itself keeps them out.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "ml", "airflow", "operators")

WRAPPER = f"""
import json, runpy, sys
report, sys.argv = sys.argv[1], ["tp", *sys.argv[2:]]
code = 0
try:
    runpy.run_module("train_platform.cli", run_name="__main__", alter_sys=True)
except SystemExit as done:
    code = done.code
with open(report, "w") as handle:
    json.dump(sorted({{name.split(".")[0] for name in sys.modules}} & set({HEAVY!r})), handle)
sys.exit(code)
"""


def tp(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    report = tmp_path / "loaded.json"
    report.unlink(missing_ok=True)
    run = subprocess.run([sys.executable, "-c", WRAPPER, str(report), *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=180)
    return run, json.loads(report.read_text())


def test_register_list_and_show_import_no_torch(tp_home, checkpoints, tmp_path):
    run, loaded = tp(tmp_path, "model", "register", "cli-light", "--checkpoint", str(checkpoints["good"]),
                     "--gate", "passed")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "1"
    assert loaded == []

    run, loaded = tp(tmp_path, "model", "list", "cli-light", "--json")
    assert run.returncode == 0, run.stderr
    assert [(v["version"], v["task"], v["gate_status"]) for v in json.loads(run.stdout)] == [(1, "classification", "passed")]
    assert loaded == []

    run, loaded = tp(tmp_path, "model", "show", "model:cli-light:v1", "--json")
    assert run.returncode == 0, run.stderr
    shown = json.loads(run.stdout)
    assert (shown["ref"], shown["version"]) == ("model:cli-light:v1", 1)
    assert (Path(shown["checkpoint"]) / "model.pt").read_bytes() == (checkpoints["good"] / "model.pt").read_bytes()
    assert loaded == []

    run, loaded = tp(tmp_path, "model", "show", "model:cli-light:latest")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "model:cli-light:latest: cli-light version 1"
    assert lines[1].split() == ["checkpoint", shown["checkpoint"]]
    assert lines[3].split() == ["task", "classification"]
    assert lines[4].split() == ["gate", "passed:", "set", "by", "hand", "at", "registration"]
    assert loaded == []

    run, loaded = tp(tmp_path, "model", "show", "model:cli-light:production")
    assert run.returncode == 3
    assert run.stderr.strip().endswith(
        "model:cli-light:production: alias 'production' of model 'cli-light' points at no version")
    assert loaded == []


def test_a_damaged_checkpoint_is_refused_without_torch(tp_home, checkpoints, tmp_path):
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(checkpoints["good"], damaged)
    (damaged / "model.pt").write_bytes((damaged / "model.pt").read_bytes()[:-10])
    run, loaded = tp(tmp_path, "model", "register", "cli-light", "--checkpoint", str(damaged))
    assert run.returncode == 3
    assert run.stderr.strip().endswith("model.pt does not match the sha256 recorded in checkpoint.json "
                                       "(changed or cut short after training)")
    assert "Traceback" not in run.stderr
    assert loaded == []


def test_a_bad_reference_is_one_line_naming_it(tp_home, tmp_path):
    run, loaded = tp(tmp_path, "model", "show", "cli-light:1")
    assert run.returncode == 3
    assert run.stderr.strip() == (
        "tp: error: invalid model reference 'cli-light:1': it does not start with 'model:'; "
        "expected model:NAME:ALIAS or model:NAME:vN (e.g. model:sensor-classifier:production, "
        "model:sensor-classifier:v3)")
    assert loaded == []
