"""Served data comes back: keyed predictions captured at TP_SERVE_CAPTURE_RATE reach the
dataset's intake branch as pre-labelled samples, through each worker's spool and a flush
off the request path (a real server with two workers importing themselves), and each spool
file is imported exactly once, also when writers and importers are killed."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.serving.conftest import start_served
from tests.serving.helpers import DATASET, concurrent, create_target, intake_rows, metric, post

pytestmark = [pytest.mark.slow]

RATE = 0.5


def wait_for_intake(home, ids: set[str], timeout: float = 60.0) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        rows = intake_rows(home)
        if ids <= rows.keys():
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(ids - rows.keys())} of {len(ids)} captured samples not on intake "
                                 f"within {timeout:.0f} s")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def served_capture(tmp_path_factory, checkpoints):
    home = tmp_path_factory.mktemp("serving-capture")
    create_target(home)
    env = {"TP_SERVE_CAPTURE_RATE": str(RATE), "TP_SERVE_CAPTURE_DATASET": DATASET,
           "TP_SERVE_CAPTURE_FLUSH_S": "0.5", "TP_SERVE_CAPTURE_FLUSH_SAMPLES": "20"}
    with start_served(home, checkpoints, redis_url=None, workers=2, env=env) as server:
        yield server


def test_sampled_keyed_predictions_reach_intake_once_with_their_prelabels(served_capture):
    from train_platform.datasets.served import is_captured, served_sample_id

    served = served_capture
    sensors, _ = served.samples(60, seed=50)
    keys = [f"cap-{i}" for i in range(len(sensors))]
    answers = concurrent(f"{served.url}/predict", [{"sensor": s, "key": k} for s, k in zip(sensors, keys)],
                         concurrency=8, fresh_connections=True)
    assert {s for s, _ in answers} == {200}
    assert {s for s, _ in concurrent(f"{served.url}/predict", [{"sensor": s} for s in sensors[:10]])} == {200}
    # Which keys are captured is a hash of the key: known before sending.
    expected = {served_sample_id(served.name, k): (s, a) for k, s, (_, a) in zip(keys, sensors, answers)
                if is_captured(k, RATE)}
    assert 15 <= len(expected) <= 45, len(expected)
    rows = wait_for_intake(served.home, set(expected))
    assert set(rows) == set(expected)  # nothing else: not the unkeyed requests, not the other half
    for sample_id, (sensor, answer) in expected.items():
        row = rows[sample_id]
        assert row["label"] == answer["label"] and row["confidence"] == pytest.approx(answer["confidence"])
        assert (row["label_source"], row["status"]) == ("model", "pending")
        assert row["annotator"] == f"model:{served.name}:v1"
        assert row["batch_id"].startswith(f"served-{served.name}-20")
        np.testing.assert_array_equal(row["series"], np.asarray(sensor, dtype=np.float32))

    # Replayed keys, with other inputs: spooled again, not captured twice.
    duplicates = metric(served.url, "tp_capture_samples_total", outcome="duplicate")
    other, _ = served.samples(len(keys), seed=51)
    assert {s for s, _ in concurrent(f"{served.url}/predict", [{"sensor": s, "key": k} for s, k in zip(other, keys)],
                                     concurrency=8, fresh_connections=True)} == {200}
    deadline = time.monotonic() + 30
    while metric(served.url, "tp_capture_samples_total", outcome="duplicate") < duplicates + len(expected):
        assert time.monotonic() < deadline, "the replayed captures were not flushed"
        time.sleep(0.2)
    again = intake_rows(served.home)
    assert set(again) == set(expected)
    for sample_id, (sensor, _) in expected.items():  # the first capture of a key is kept
        np.testing.assert_array_equal(again[sample_id]["series"], np.asarray(sensor, dtype=np.float32))


def test_predict_does_not_wait_for_a_flush_stuck_on_the_catalog(served_capture):
    """A flush whose commit waits on the catalog's write lock for 4 s: every prediction made
    meanwhile is answered at its usual speed, and the samples land once the lock is free."""
    from train_platform.datasets.served import is_captured, served_sample_id

    served = served_capture
    keys = [k for k in (f"stuck-{i}" for i in range(400)) if is_captured(k, RATE)][:60]
    sensors, _ = served.samples(len(keys), seed=52)
    slow_flushes = metric(served.url, "tp_capture_flush_seconds_count") - \
        metric(served.url, "tp_capture_flush_seconds_bucket", le="2.5")
    lock = sqlite3.connect(served.home / "catalog.db", timeout=30, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # the catalog's write lock: no commit can land now
    latencies = []
    try:
        started = time.monotonic()
        for sensor, key in zip(sensors, keys):
            t0 = time.perf_counter()
            status, _, _ = post(f"{served.url}/predict", {"sensor": sensor, "key": key})
            latencies.append(time.perf_counter() - t0)
            assert status == 200
        time.sleep(max(0.0, 4.0 - (time.monotonic() - started)))
        assert intake_rows(served.home).keys().isdisjoint(served_sample_id(served.name, k) for k in keys)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    # 60 captures at 20 per flush: flushes were due, and stuck, while these were answered.
    assert max(latencies) < 1.0, sorted(latencies)[-5:]
    wait_for_intake(served.home, {served_sample_id(served.name, k) for k in keys})
    assert metric(served.url, "tp_capture_flush_seconds_count") - \
        metric(served.url, "tp_capture_flush_seconds_bucket", le="2.5") > slow_flushes


_KILLED_WRITER = """
import sys, time
import numpy as np
from train_platform.datasets.served import SpoolWriter, capture_record
writer = SpoolWriter(sys.argv[1])
for i in range(5):
    writer.append(capture_record("m", 3, f"killed-{i}", np.full((4, 2), i, np.float32), {"label": "low", "confidence": 0.5}))
import os
os.write(writer._fd, b'{"v": 1, "id": "served-m-torn"')  # killed in the middle of a line
print("ready", flush=True)
time.sleep(600)
"""


def _spool(directory, keys: list[str], model: str = "m", version: int = 2) -> None:
    from train_platform.datasets.served import SpoolWriter, capture_record

    writer = SpoolWriter(directory)
    for i, key in enumerate(keys):
        writer.append(capture_record(model, version, key, np.full((6, 3), i, np.float32),
                                     {"label": "high", "confidence": 0.75}))
    writer.rotate()


def test_each_spool_file_is_imported_exactly_once_by_racing_and_killed_importers(tp_home):
    from train_platform.datasets.served import served_sample_id, spool_dir

    create_target(tp_home, "spooled")
    directory = spool_dir(tp_home, "spooled")
    # A writer killed with SIGKILL: its open file, unlocked now, ends in a torn line.
    writer = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(directory)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    # Two workers' files, one key captured by both, and a key replayed within one file.
    _spool(directory, [f"a-{i}" for i in range(10)] + ["a-0", "both"])
    _spool(directory, [f"b-{i}" for i in range(10)] + ["both"])
    expected = {served_sample_id("m", k) for k in [f"a-{i}" for i in range(10)] + [f"b-{i}" for i in range(10)]}
    expected |= {served_sample_id("m", "both")} | {served_sample_id("m", f"killed-{i}") for i in range(5)}

    # Two `tp dataset intake-served` at once.
    env = {**os.environ, "TP_HOME": str(tp_home)}
    runs = [subprocess.Popen([sys.executable, "-m", "train_platform.cli", "dataset", "intake-served", "spooled", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = []
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        results.append(json.loads(out))
    assert sum(r["imported"] for r in results) == len(expected), results
    assert sum(r["files"] for r in results) == 3 and sum(r["skipped"] for r in results) == 1, results
    rows = intake_rows(tp_home, "spooled")
    assert set(rows) == expected
    assert list(directory.iterdir()) == []
    row = rows[served_sample_id("m", "a-3")]
    assert (row["label"], row["confidence"], row["status"], row["annotator"]) == ("high", 0.75, "pending", "model:m:v2")
    np.testing.assert_array_equal(row["series"], np.full((6, 3), 3, np.float32))

    # An importer killed after its commit, before deleting its file: the file is back (as
    # the kill left it), the next import commits nothing and deletes it.
    _spool(directory, ["late-0", "late-1"])
    ready = next(directory.glob("*.ready"))
    kept = ready.read_bytes()
    from train_platform.datasets.dataset import open_dataset
    from train_platform.datasets.served import import_spool

    dataset = open_dataset("spooled")
    assert import_spool(dataset).imported == 2
    ready.write_bytes(kept)
    head = dataset.resolve("intake").snapshot_id
    again = import_spool(dataset)
    assert (again.imported, again.duplicates, again.files, again.snapshot_id) == (0, 2, 1, None)
    assert dataset.resolve("intake").snapshot_id == head and not ready.exists()
    assert len(intake_rows(tp_home, "spooled")) == len(expected) + 2


def test_capture_settings_are_checked_before_serving(tp_home):
    from ml.exceptions import ConfigError
    from ml.serving.config import ServingConfig
    from train_platform.datasets.exceptions import DatasetNotFoundError, PermissionDeniedError
    from train_platform.datasets.served import check_capture_target
    from train_platform.settings import get_settings

    with pytest.raises(ConfigError, match="TP_SERVE_CAPTURE_RATE must be between 0 and 1, not 1.5"):
        ServingConfig.from_env({"TP_SERVE_MODEL": "m", "TP_SERVE_CAPTURE_RATE": "1.5"})
    with pytest.raises(ConfigError, match="TP_SERVE_CAPTURE_DATASET names no dataset"):
        ServingConfig.from_env({"TP_SERVE_MODEL": "m", "TP_SERVE_CAPTURE_RATE": "0.1"})
    with pytest.raises(ConfigError, match="TP_SERVE_CAPTURE_DATASET: dataset name 'Bad-Name' is invalid"):
        ServingConfig.from_env({"TP_SERVE_MODEL": "m", "TP_SERVE_CAPTURE_RATE": "0.1", "TP_SERVE_CAPTURE_DATASET": "Bad-Name"})
    with pytest.raises(ConfigError, match="TP_SERVE_CAPTURE_IMPORT must be 'service' or 'command'"):
        ServingConfig.from_env({"TP_SERVE_MODEL": "m", "TP_SERVE_CAPTURE_IMPORT": "cron"})
    assert ServingConfig.from_env({"TP_SERVE_MODEL": "m"}).capture_rate == 0.0
    settings = get_settings()
    with pytest.raises(DatasetNotFoundError, match="TP_SERVE_CAPTURE_DATASET: no dataset named 'nowhere'"):
        check_capture_target("nowhere", settings.os_user, settings)
    create_target(tp_home, "guarded")
    with pytest.raises(PermissionDeniedError, match="the service acts as 'mallory', who has no role on dataset "
                                                    "'guarded'; capturing needs writer"):
        check_capture_target("guarded", "mallory", settings)
    assert check_capture_target("guarded", settings.os_user, settings).name == "guarded"
