"""The local executor: output streamed to the log, exit codes, timeouts that leave no orphan."""

from __future__ import annotations

import logging
import os
import time

import pytest

from train_platform.exceptions import TaskExecutionError
from train_platform.execution.local import LocalProcess


def test_output_is_streamed_to_the_task_log(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    proc = LocalProcess(["python", "-c", "import os; print('hello', os.environ['X'])"], env={"X": "42"}, cwd=tmp_path)
    assert proc.run() == 0
    assert "hello 42" in caplog.text


def test_non_zero_exit_fails(tmp_path):
    with pytest.raises(TaskExecutionError, match="exited with code 7"):
        LocalProcess(["python", "-c", "raise SystemExit(7)"], env={}, cwd=tmp_path).run()


def test_missing_program_is_a_clear_error(tmp_path):
    with pytest.raises(TaskExecutionError, match="command not found: 'no-such-program'"):
        LocalProcess(["no-such-program"], env={}, cwd=tmp_path).run()


def test_timeout_kills_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    with pytest.raises(TaskExecutionError, match="timed out"):
        LocalProcess(["python", "-c", script], env={}, cwd=tmp_path, timeout=2).run()
    assert time.monotonic() - started < 20
    child = int(pid_file.read_text())
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the grandchild process survived the timeout")
