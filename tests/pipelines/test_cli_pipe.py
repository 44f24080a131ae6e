"""A ``tp`` command whose output pipe closes early (``| head``) exits 0 without a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.pipelines.helpers import minimal, write

TP = Path(sys.executable).with_name("tp")


def test_tp_is_quiet_and_succeeds_when_its_reader_goes_away(tmp_path):
    folder = tmp_path / "dags"
    # well over a pipe buffer (64 KiB) of `tp pipeline list` output, so tp is still
    # writing when `head` exits
    for i in range(900):
        write(folder / f"p{i:04d}.yaml", minimal(f"pipeline-with-a-long-name-number-{i:04d}"))
    env = {**os.environ, "TP_HOME": str(tmp_path / "home")}
    done = subprocess.run(["bash", "-c", f"set -o pipefail; {TP} pipeline list --dags-folder {folder} | head -1"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.stdout.startswith("NAME")
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr
