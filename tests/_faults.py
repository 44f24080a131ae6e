"""Fault injection for the crash-safety tests: run a real command in a subprocess, stop it
at an exact point of its code, and SIGKILL it there.

The subprocess is ``python tests/_faults.py SPEC -- -m MODULE ARGS...``: before running
``MODULE`` as ``__main__`` (the command itself: ``train_platform.cli``, ``ml.train``), it
wraps one function, named ``package.module:attribute[.attribute]``, so that its ``hit``-th
call, ``before`` or ``after`` the real call, writes the marker file and then waits. The
test waits for the marker and kills the process: the kill lands at that point, every time,
with no hook in the code under test. A test can also let it go on (``release_file``), to
see what a second process does while the first is held there.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import runpy
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Point:
    """Where to stop: the ``hit``-th call of ``target``, ``before`` or ``after`` it runs."""

    target: str
    when: str = "before"
    hit: int = 1

    def __str__(self) -> str:
        return f"{self.when} call {self.hit} of {self.target}"


def _resolve(target: str):
    module_name, _, path = target.partition(":")
    owner = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for part in parents:
        owner = getattr(owner, part)
    return owner, name


def _install(point: Point, marker: Path) -> None:
    owner, name = _resolve(point.target)
    if isinstance(owner, type):  # the raw attribute (a staticmethod stays one), maybe inherited
        raw = next(klass.__dict__[name] for klass in owner.__mro__ if name in klass.__dict__)
    else:
        raw = getattr(owner, name)
    kind = type(raw) if isinstance(raw, (staticmethod, classmethod)) else None
    original = raw.__func__ if kind else raw
    calls = [0]

    def stop() -> None:
        tmp = marker.with_name(marker.name + ".tmp")
        tmp.write_text(str(os.getpid()))
        os.replace(tmp, marker)
        go = release_file(marker)
        while not go.exists():  # the test kills us here, or lets us go on
            time.sleep(0.02)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        calls[0] += 1
        if point.when == "before" and calls[0] == point.hit:
            stop()
        result = original(*args, **kwargs)
        if point.when == "after" and calls[0] == point.hit:
            stop()
        return result

    setattr(owner, name, kind(wrapper) if kind else wrapper)


def release_file(marker: Path) -> Path:
    """The file that lets a process stopped at its point go on."""
    return marker.with_name(marker.name + ".go")


def spawn(point: Point, args: list[str], marker: Path, *, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen:
    """Starts ``python -m ARGS`` with ``point`` armed; ``args`` starts with the module."""
    spec = json.dumps({"target": point.target, "when": point.when, "hit": point.hit, "marker": str(marker)})
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), full_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), spec, "--", *args], env=full_env,
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_at(point: Point, args: list[str], marker: Path, *, env: dict[str, str] | None = None,
            timeout: float = 120, cwd: Path | None = None) -> None:
    """Runs the command until it reaches ``point``, then SIGKILLs it; fails when the command
    ends (or times out) before reaching it."""
    marker.unlink(missing_ok=True)
    proc = spawn(point, args, marker, env=env, cwd=cwd)
    deadline = time.monotonic() + timeout
    try:
        while not marker.exists():
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"{' '.join(args)} exited {proc.returncode} before {point}:\n{out}\n{err[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{' '.join(args)} did not reach {point} in {timeout} s")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        marker.unlink(missing_ok=True)


def main() -> None:
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if p != here]  # tests/ itself is no import root
    spec = json.loads(sys.argv[1])
    assert sys.argv[2] == "--" and sys.argv[3] == "-m", sys.argv
    module, args = sys.argv[4], sys.argv[5:]
    _install(Point(spec["target"], spec["when"], spec["hit"]), Path(spec["marker"]))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
