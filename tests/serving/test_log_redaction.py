"""No database password or S3 secret key reaches the inference service's log. BentoML
configures each worker's logging (its server configuration) and ``tp model serve``'s own
(its command-line configuration) before it imports ``ml/service.py``; importing the service
makes those handlers redact. Each case is a real subprocess doing what that process does,
in that order, then logging through the service's, the runtime's, BentoML's and uvicorn's
loggers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Hunter2-serve-9a3c5d"
URL = f"postgresql://tp:{PASSWORD}@db.internal:5432/registry"
S3_SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYsv02"

_PROCESS = """
import logging, sys
from bentoml._internal import log as bentoml_log

which, url, key = sys.argv[1:4]
# What BentoML does before it loads the service: a worker (_bentoml_impl.worker.service)
# configures the server logging, bentoml.serve (tp model serve) the command-line logging.
(bentoml_log.configure_server_logging if which == "worker" else bentoml_log.configure_logging)()
import ml.service  # noqa: E402,F401  (BentoML's loader imports it next)

for name in ("ml.service", "ml.serving.runtime", "bentoml.worker.service", "uvicorn.error"):
    logging.getLogger(name).warning("%s: registry at %s, S3 secret key %s", name, url, key)
try:
    raise ConnectionError(f"cannot reach {url}")
except ConnectionError:
    logging.getLogger("uvicorn.error").exception("startup failed")
    logging.getLogger("ml.serving.runtime").exception("refresh failed")
"""


@pytest.mark.parametrize("which", ["worker", "serve"])
def test_the_services_log_lines_are_redacted(which):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AWS_SECRET_ACCESS_KEY": S3_SECRET, "TP_SERVE_WORKERS": "1"}
    done = subprocess.run([sys.executable, "-c", _PROCESS, which, URL, S3_SECRET], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout + done.stderr
    for name in ("ml.service", "ml.serving.runtime", "bentoml.worker.service", "uvicorn.error"):
        # Still logged, still saying which server: only the secrets are gone.
        assert f"{name}: registry at postgresql://tp:***@db.internal:5432/registry, S3 secret key ***" in out, out[-3000:]
    assert out.count("ConnectionError: cannot reach postgresql://tp:***@db.internal") >= 2, out[-3000:]
    assert PASSWORD not in out and S3_SECRET not in out, out[-3000:]
