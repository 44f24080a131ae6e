"""``ml`` runs in the trainer image: importing it must not pull in Airflow."""

from __future__ import annotations

import subprocess
import sys

from tests.ml.conftest import ROOT


def test_ml_never_imports_airflow():
    code = ("import sys, ml.train, ml.evaluate, ml.training_run, ml.predict, ml.checkpoint, ml.metrics, ml.data;"
            " bad = sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.'));"
            " print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
