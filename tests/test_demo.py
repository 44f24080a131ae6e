"""`ROUNDS=1 KEEP=1 make demo` as the README gives it, from a plain shell: the loop closes by
itself through a running Airflow (no `airflow dags test`), one round of new data; Airflow and
the endpoint are left running with the URL and login printed, and the printed command stops
everything the demo started."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.long(minutes=4)]

ROOT = Path(__file__).resolve().parents[1]


def _processes_of(home: Path, pids: bool = False) -> list[str]:
    """Command lines (or pids) of the processes whose environment names ``home``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if str(home).encode() in (proc / "environ").read_bytes():
                found.append(proc.name if pids else
                             (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return found


def test_one_round_of_the_demo_closes_the_loop_and_reports(tmp_path):
    # A plain shell: none of the suite's settings, and no make of ours around it (`make test`
    # runs this test; an outer make's MAKEFLAGS/MAKELEVEL would make the demo's make print
    # "Entering/Leaving directory" after the report line).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "TP_", "MAKE", "MFLAGS"))}
    env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":") if ".venv" not in p)
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow"), TP_HOME=str(tmp_path / "tp"))
    readme = (ROOT / "README.md").read_text()
    assert "\nROUNDS=1 KEEP=1 make demo " in readme
    try:
        result = subprocess.run(["bash", "-c", "ROUNDS=1 KEEP=1 make demo"], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=1200)
        out = result.stdout
        assert result.returncode == 0, (out + result.stderr)[-6000:]
        kept = re.search(r"KEEP=1: Airflow is still running at (\S+) \(user admin, password (\S+);", out)
        stop = re.search(r"Stop them with: (kill -INT \d+; kill [\d ]+)$", out, flags=re.M)
        assert kept and stop, out[-3000:]
        login = urllib.request.Request(kept[1] + "/auth/token", method="POST", headers={"Content-Type": "application/json"},
                                       data=json.dumps({"username": "admin", "password": kept[2]}).encode())
        with urllib.request.urlopen(login, timeout=30) as answer:
            assert "access_token" in json.loads(answer.read())
        subprocess.run(["bash", "-c", stop[1]], check=True)
        deadline = time.monotonic() + 120
        while _processes_of(tmp_path) and time.monotonic() < deadline:
            time.sleep(2)
        leftover = _processes_of(tmp_path)
    finally:
        for line in _processes_of(tmp_path, pids=True):
            os.kill(int(line), 9)
    assert "airflow dags test" not in out
    # Round 0 was triggered once; everything after it started by itself.
    assert re.search(r"sensor-continual-learning run asset_triggered__\S+ started by asset_triggered", out), out[-4000:]
    assert "[simulated reviewer] reviewer on" in out and "Required Action answered by admin: Approve" in out
    assert "sensor-intake-review.intake: success" in out and "sensor-intake-review.review: success" in out
    assert "endpoint now answers from v2 (production), no restart" in out
    summary = re.search(r"round 1 \(v2, new activity '(\w+)'\): accuracy on old activities ([\d.]+) -> ([\d.]+) "
                        r"\(forgetting ([-+][\d.]+)\), on the new one ([\d.]+); training ([\d.]+) s incremental vs "
                        r"([\d.]+) s full retrain", out)
    assert summary, out[-4000:]
    assert float(summary[3]) >= 0.8 and float(summary[5]) >= 0.5  # old activities kept, the new one learnt
    last = out.strip().splitlines()[-1]
    assert last.startswith("report: ")
    report = Path(last.removeprefix("report: "))
    assert report.is_file() and report.parent == tmp_path / "tp"
    page = report.read_text()
    assert page.count("<svg") == 3 and f"<td>{summary[1]}</td>" in page
    # The runs are Airflow's own, with their task logs where the UI reads them.
    logs = tmp_path / "airflow" / "logs"
    assert list(logs.glob("dag_id=sensor-intake-review/run_id=scheduled__*/task_id=review/attempt=1.log"))
    assert list(logs.glob("dag_id=sensor-continual-learning/run_id=asset_triggered__*/task_id=train/attempt=*.log"))
    assert leftover == [], leftover
