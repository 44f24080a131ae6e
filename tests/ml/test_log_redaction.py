"""No database password or S3 secret key reaches the log of a ``python -m ml.*`` command
(what a training task's log shows): log lines, logged tracebacks, the error line and an
unexpected error's traceback all go through ``train_platform.settings.redact``, as ``tp``'s
do. Each command runs as a real subprocess, as a task runs it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.ml.conftest import ROOT

PASSWORD = "Hunter2-ml-4be1f0"
URL = f"postgresql://tp:{PASSWORD}@db.internal:5432/catalog"
S3_SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYml01"

# Runs MODULE as `python -m MODULE` does, its main replaced by one that logs the secrets
# through the logging the module's own entry point (ml._cli.run_cli) sets up.
_LOGGING_MAIN = """
import logging, runpy, sys
import ml._cli

module, url, key = sys.argv[1:4]
real_run_cli = ml._cli.run_cli


def run_cli(main, argv=None):
    def logging_main(args):
        log = logging.getLogger(module)
        log.info("reading the catalog at %s", url)
        log.warning("S3 secret key in use: %s", key)
        try:
            raise ConnectionError(f"cannot reach {url}")
        except ConnectionError:
            log.exception("first attempt failed")
        raise RuntimeError(f"lost {url} (key {key})")

    return real_run_cli(logging_main, argv)


ml._cli.run_cli = run_cli
sys.argv = [module]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def _run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "TP_TORCH_THREADS": "1", "PYTHONPATH": str(ROOT), "AWS_SECRET_ACCESS_KEY": S3_SECRET}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _assert_redacted(done: subprocess.CompletedProcess) -> None:
    for secret in (PASSWORD, S3_SECRET):
        assert secret not in done.stdout and secret not in done.stderr, done.stderr[-3000:]


@pytest.mark.parametrize("module", ["ml.train", "ml.evaluate", "ml.serving.batch_inference"])
def test_a_commands_log_lines_and_tracebacks_are_redacted(module):
    done = _run("-c", _LOGGING_MAIN, module, URL, S3_SECRET)
    assert done.returncode == 1, done.stderr[-3000:]
    err = done.stderr
    # The lines are still there and still say which server: only the secrets are gone.
    assert f"INFO {module}: reading the catalog at postgresql://tp:***@db.internal:5432/catalog" in err
    assert f"WARNING {module}: S3 secret key in use: ***" in err
    assert "ConnectionError: cannot reach postgresql://tp:***@db.internal" in err  # the logged traceback
    assert "RuntimeError: lost postgresql://tp:***@db.internal:5432/catalog (key ***)" in err  # the unexpected one
    _assert_redacted(done)


def test_the_error_lines_of_the_real_commands_are_redacted(tmp_path):
    train = _run("-m", "ml.train", "--mode", "initial", "--task", "classification", "--data", URL,
                 "--out", str(tmp_path / "out"))
    prepare = _run("-m", "ml.prepare", "--input", URL, "--out", str(tmp_path / "prepared"))
    for done in (train, prepare):
        assert done.returncode != 0 and "error: unknown data ref 'postgresql://tp:***@db.internal" in done.stderr, \
            done.stderr[-3000:]
        _assert_redacted(done)


def test_the_prepare_commands_log_is_redacted(tmp_path):
    script = ("import logging, sys, ml.prepare as p\n"
              "real = p.prepare\n"
              "def prepare(inputs, out):\n"
              "    logging.getLogger('ml.prepare').warning('input %s, S3 key %s', inputs[0], sys.argv[-1])\n"
              "    return real(inputs, out)\n"
              "p.prepare = prepare\n"
              "sys.exit(p.main(sys.argv[1:-1]))\n")
    done = _run("-c", script, "--input", URL, "--out", str(tmp_path / "prepared"), S3_SECRET)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "WARNING ml.prepare: input postgresql://tp:***@db.internal:5432/catalog, S3 key ***" in done.stderr
    _assert_redacted(done)
