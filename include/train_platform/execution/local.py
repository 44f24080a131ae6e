"""The local executor: a task's container command as a subprocess of the worker.

The command runs in the project's own Python environment (``python`` means the worker's
interpreter), its output is streamed line by line to the task log, a non-zero exit fails
the task, and a timeout or kill ends the whole process group so no orphan keeps running.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Mapping, Sequence

from train_platform.exceptions import TaskExecutionError

_PYTHON_NAMES = {"python", "python3", "python3.11"}


def _argv(command: Sequence[str]) -> list[str]:
    argv = [str(part) for part in command]
    if not argv:
        raise TaskExecutionError("the task has an empty command")
    if argv[0] in _PYTHON_NAMES:
        argv[0] = sys.executable
    return argv


class LocalProcess:
    """One command run; ``run`` blocks until it exits, ``kill`` may be called from another thread."""

    def __init__(self, command: Sequence[str], *, env: Mapping[str, str], cwd: Path,
                 timeout: float | None = None, log: logging.Logger | None = None):
        self.argv = _argv(command)
        self.env = {**os.environ, **env}
        self.cwd = cwd
        self.timeout = timeout
        self.log = log or logging.getLogger(__name__)
        self._proc: subprocess.Popen | None = None

    def run(self) -> int:
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.log.info("running: %s (in %s)", shlex.join(self.argv), self.cwd)
        started = time.monotonic()
        try:
            self._proc = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, bufsize=1, start_new_session=True,
            )
        except FileNotFoundError:
            raise TaskExecutionError(f"command not found: {self.argv[0]!r}") from None
        reader = threading.Thread(target=self._stream, daemon=True)
        reader.start()
        try:
            code = self._proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TaskExecutionError(f"command timed out after {self.timeout:.0f} s: {' '.join(self.argv)}") from None
        except BaseException:
            # The worker is being stopped (task timeout, SIGTERM): take the command with it.
            self.kill()
            raise
        finally:
            reader.join(timeout=5)
        elapsed = time.monotonic() - started
        if code != 0:
            raise TaskExecutionError(f"command exited with code {code} after {elapsed:.1f} s: {' '.join(self.argv)}")
        self.log.info("command finished in %.1f s", elapsed)
        return code

    def _stream(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self.log.info("%s", line.rstrip("\n"))

    def kill(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
