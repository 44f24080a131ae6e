"""Faults and abuse at the inference endpoint, against a real server with two workers and no
Redis (``served_local``): the body-size limit, a bound on every input dimension, requests
of different shapes batched side by side, the in-process cache's byte bound, ``/feedback``
counted once per prediction through the replica's shared prediction log, a scope per route,
and every keyed prediction captured (rate 1) for ``tp dataset intake-served``."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from tests.serving.conftest import LABELLER_TOKEN, PREDICTOR_TOKEN, TOKEN, start_served
from tests.serving.helpers import concurrent, create_target, intake_rows, metric, post, raw_http, request_head, series

pytestmark = [pytest.mark.slow]

BODY_LIMIT = 64 * 1024
CACHE_BYTES = 8192
CAPTURE_DATASET = "local_intake"
BOUNDS = {"TP_SERVE_MAX_STEPS": "40", "TP_SERVE_MAX_CHANNELS": "8", "TP_SERVE_MAX_TEXT_TOKENS": "100",
          "TP_SERVE_MAX_FRAMES": "4", "TP_SERVE_MAX_IMAGE_CHANNELS": "2", "TP_SERVE_MAX_IMAGE_SIDE": "16",
          "TP_SERVE_MAX_AUDIO_SAMPLES": "2000", "TP_SERVE_MAX_KEY_CHARS": "32"}


@pytest.fixture(scope="module")
def served_local(tmp_path_factory, checkpoints):
    # Every keyed prediction is captured and spooled; only `tp dataset intake-served` imports.
    capture = {"TP_SERVE_CAPTURE_RATE": "1", "TP_SERVE_CAPTURE_DATASET": CAPTURE_DATASET,
               "TP_SERVE_CAPTURE_IMPORT": "command", "TP_SERVE_CAPTURE_FLUSH_S": "0.5"}
    env = {"TP_SERVE_MAX_BODY_BYTES": str(BODY_LIMIT), "TP_SERVE_LOCAL_CACHE_BYTES": str(CACHE_BYTES), **BOUNDS,
           **capture}
    with start_served(tmp_path_factory.mktemp("serving-local"), checkpoints, redis_url=None, workers=2,
                      env=env) as server:
        yield server


def test_a_body_over_the_limit_gets_413_before_it_is_read(served_local):
    url = served_local.url
    # Only the head is sent: the answer comes without the server waiting for the body.
    status, answer = raw_http(url, request_head(url, f"Content-Length: {BODY_LIMIT + 1}\r\n"))
    assert status == 413
    assert answer["error"] == (f"request body of {BODY_LIMIT + 1} bytes is over the limit of {BODY_LIMIT} bytes "
                               f"(TP_SERVE_MAX_BODY_BYTES)")
    # Chunked, so no length is announced: refused once the bytes read pass the limit.
    chunk = b"x" * 8192
    chunks = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (BODY_LIMIT // len(chunk) + 2)
    status, answer = raw_http(url, request_head(url, "Transfer-Encoding: chunked\r\n"), chunks)
    assert status == 413 and "TP_SERVE_MAX_BODY_BYTES" in answer["error"]
    # A body just under the limit is parsed and answered as usual (JSON whitespace pads it).
    sample = json.dumps({"sensor": served_local.samples(1, seed=40)[0][0]})
    padded = sample[:-1] + " " * (BODY_LIMIT - len(sample)) + "}"
    assert len(padded) == BODY_LIMIT
    status, answer, _ = post(f"{url}/predict", padded.encode(), raw=True)
    assert status == 200 and answer["model_version"] == 1
    # Chunked and under the limit: read whole and answered.
    body = sample.encode()
    status, answer = raw_http(url, request_head(url, "Transfer-Encoding: chunked\r\n"),
                              [b"%x\r\n%s\r\n" % (len(body), body), b"0\r\n\r\n"])
    assert status == 200 and answer["model_version"] == 1


def _sensor(steps: int, channels: int = 3) -> list:
    return np.random.default_rng(steps).normal(0, 1, (steps, channels)).round(3).tolist()


GOOD = _sensor(24)


@pytest.mark.parametrize("body, message", [
    ({"sensor": _sensor(41)}, "sensor: 41 time steps, the service takes at most 40 (TP_SERVE_MAX_STEPS)"),
    ({"sensor": _sensor(4, channels=9)},
     "sensor: 9 channels per time step, the service takes at most 8 (TP_SERVE_MAX_CHANNELS)"),
    ({"sensor": GOOD[:4], "timestamps": list(range(41))},
     "timestamps: 41 values, the service takes at most 40 (TP_SERVE_MAX_STEPS)"),
    ({"sensor": GOOD, "text": list(range(1, 102))},
     "text: 101 tokens, the service takes at most 100 (TP_SERVE_MAX_TEXT_TOKENS)"),
    # 51 characters, 102 UTF-8 bytes: tokens are bytes.
    ({"sensor": GOOD, "text": "\u00e9" * 51},
     "text: 102 tokens (UTF-8 bytes), the service takes at most 100 (TP_SERVE_MAX_TEXT_TOKENS)"),
    # A lone surrogate has no UTF-8 form: the JSON parser refuses it.
    ({"sensor": GOOD, "text": "ab\ud800"}, "1 validation error for Input"),
    ({"sensor": GOOD, "image": np.zeros((5, 8, 8)).tolist()},
     "image: 5 frames, the service takes at most 4 (TP_SERVE_MAX_FRAMES)"),
    ({"sensor": GOOD, "image": np.zeros((2, 3, 8, 8)).tolist()},
     "image: 3 colour channels, the service takes at most 2 (TP_SERVE_MAX_IMAGE_CHANNELS)"),
    ({"sensor": GOOD, "image": np.zeros((2, 17, 8)).tolist()},
     "image: 17 pixels of frame height, the service takes at most 16 (TP_SERVE_MAX_IMAGE_SIDE)"),
    ({"sensor": GOOD, "image": np.zeros((8, 17)).tolist()},
     "image: 17 pixels of frame width, the service takes at most 16 (TP_SERVE_MAX_IMAGE_SIDE)"),
    ({"sensor": GOOD, "audio": [0.0] * 2001},
     "audio: 2001 samples, the service takes at most 2000 (TP_SERVE_MAX_AUDIO_SAMPLES)"),
    ({"sensor": GOOD, "key": "k" * 33}, "key: 33 characters, the service takes at most 32 (TP_SERVE_MAX_KEY_CHARS)"),
    # Finite, but far outside the training range: the model's answer would be NaN.
    ({"sensor": [[3e38, -3e38, 1.0]] * 10}, "the model's answer for this input is not finite"),
])
def test_every_input_dimension_has_a_bound_named_in_the_400(served_local, body, message):
    status, answer, _ = post(f"{served_local.url}/predict", body)
    assert status == 400, answer
    assert answer["error"].startswith(message), answer


def test_the_models_own_bound_applies_when_it_is_the_tighter(served_local):
    # The service takes 40 steps here; a model trained with max_len 64 takes 64 and
    # audio of 48 samples at least.
    status, answer, _ = post(f"{served_local.url}/predict", {"sensor": GOOD, "audio": [0.0] * 20})
    assert status == 400 and answer["error"] == "audio: 20 samples, the model takes 48..32000"


def test_feedback_keys_and_labels_are_bounded(served_local):
    status, answer, _ = post(f"{served_local.url}/feedback", {"key": "k" * 33, "label": "low"})
    assert status == 400
    assert answer["error"] == "key: 33 characters, the service takes at most 32 (TP_SERVE_MAX_KEY_CHARS)"
    status, answer, _ = post(f"{served_local.url}/feedback", {"key": "k", "label": "x" * 33})
    assert status == 400 and answer["error"].startswith("label: 33 characters")


def test_requests_of_different_shapes_at_once_each_get_their_own_answer(served_local):
    """Frames of two sizes, with and without images, text and timestamps, and one request the
    model cannot answer, all at once: each answer is what the model gives for that sample
    alone, and only the bad request fails."""
    from ml.checkpoint import load_checkpoint
    from ml.predict import predict

    rng = np.random.default_rng(41)
    sensors, _ = served_local.samples(96, seed=41)
    bodies = []
    for i, sensor in enumerate(sensors):
        body: dict = {"sensor": sensor}
        kind = i % 4
        if kind in (0, 1):  # two frame sizes: never stacked together
            side = 8 if kind == 0 else 12
            body["image"] = rng.normal(0, 1, (2, side, side)).round(3).tolist()
        elif kind == 2:
            body["text"] = f"sample {i}"
            body["timestamps"] = [float(t) for t in range(len(sensor))]
        bodies.append(body)
    poisoned = len(bodies) // 2
    bodies.insert(poisoned, {"sensor": [[3e38, -3e38, 1.0]] * 10})
    batches_before = (metric(served_local.url, "tp_batch_size_count", version="1"),
                      metric(served_local.url, "tp_batch_size_sum", version="1"))
    answers = concurrent(f"{served_local.url}/predict", bodies, concurrency=48)
    status, answer = answers.pop(poisoned)
    bodies.pop(poisoned)
    assert status == 400 and "not finite" in answer["error"]
    assert [s for s, _ in answers] == [200] * len(bodies), [a for s, a in answers if s != 200][:3]
    checkpoint = load_checkpoint(served_local.checkpoints["good"])
    for body, (_, got) in zip(bodies, answers):
        want = predict(checkpoint, [body])[0]
        assert got["label"] == want["label"]
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-5)
    # They were served in shared forward passes, not one by one.
    count = metric(served_local.url, "tp_batch_size_count", version="1") - batches_before[0]
    total = metric(served_local.url, "tp_batch_size_sum", version="1") - batches_before[1]
    assert total >= len(bodies) and count < total, (count, total)


def test_the_in_process_cache_stays_within_its_byte_bound(served_local):
    sensors, _ = served_local.samples(80, seed=42)
    answers = concurrent(f"{served_local.url}/predict", [{"sensor": s} for s in sensors], concurrency=8,
                         fresh_connections=True)
    assert {s for s, _ in answers} == {200}
    # The gauges are set at each stats flush (every 0.3 s here). 80 answers of ~0.5 KB are
    # ~5x what the two workers' caches hold: wait until both are full to their bound.
    full = served_local.workers * (CACHE_BYTES - 1024)
    deadline = time.monotonic() + 30
    while (size := metric(served_local.url, "tp_cache_local_bytes", model=served_local.name)) < full:
        assert time.monotonic() < deadline, f"the caches hold {size} bytes, expected at least {full}"
        time.sleep(0.05)
    entries = metric(served_local.url, "tp_cache_local_entries", model=served_local.name)
    assert size <= served_local.workers * CACHE_BYTES, size
    assert 0 < entries < len(sensors), entries


def _stats_by_replica(served) -> dict[str, dict[str, int]]:
    from sqlalchemy import func, select

    from train_platform.registry import schema

    table = schema.serving_stats
    with schema.read(served.registry.url) as conn:
        rows = conn.execute(
            select(table.c.replica, func.sum(table.c.requests), func.sum(table.c.labelled))
            .join(schema.models, schema.models.c.id == table.c.model_id)
            .where(schema.models.c.name == served.name).group_by(table.c.replica)).all()
    return {replica: {"requests": int(requests), "labelled": int(labelled)} for replica, requests, labelled in rows}


def test_feedback_without_redis_reaches_every_worker_and_counts_once(served_local):
    served = served_local
    n = 60
    sensors, labels = served.samples(n, seed=43)
    keys = [f"local-{i}" for i in range(n)]
    labelled_before = sum(r["labelled"] for r in _stats_by_replica(served).values())
    counted_before = metric(served.url, "tp_feedback_total", outcome="counted")
    confirmed_before = metric(served.url, "tp_confirmed_predictions_total", version="1")
    answers = concurrent(f"{served.url}/predict", [{"sensor": s, "key": k} for s, k in zip(sensors, keys)],
                         concurrency=8, fresh_connections=True)
    assert {s for s, _ in answers} == {200}
    # Every label three times at once, each on a fresh connection: the copies of one label
    # land on either worker, whichever served its prediction.
    feedback = [{"key": k, "label": y} for k, y in zip(keys, labels)] * 3
    replies = concurrent(f"{served.url}/feedback", feedback, concurrency=16, fresh_connections=True)
    assert {s for s, _ in replies} == {200}, [r for s, r in replies if s != 200][:3]
    per_key: dict[str, list[bool]] = {}
    for (_, reply), sent in zip(replies, feedback):
        assert reply["key"] == sent["key"] and reply["model_version"] == 1
        per_key.setdefault(sent["key"], []).append(reply["duplicate"])
    assert all(sorted(flags) == [False, True, True] for flags in per_key.values()), per_key
    # Another label for a confirmed prediction: refused, counts nothing.
    other = next(c for c in ("low", "high", "rising", "falling") if c != labels[0])
    status, answer, _ = post(f"{served.url}/feedback", {"key": keys[0], "label": other})
    assert status == 409 and f"already confirmed as {labels[0]!r}" in answer["error"]
    assert post(f"{served.url}/feedback", {"key": "never-predicted", "label": "low"})[0] == 404
    assert metric(served.url, "tp_feedback_total", outcome="counted") == counted_before + n, \
        series(served.url, "tp_feedback_total")
    assert metric(served.url, "tp_confirmed_predictions_total", version="1") == confirmed_before + n, \
        series(served.url, "tp_confirmed_predictions_total")
    # Live stats hold each label once, and both workers served predictions and labels.
    deadline = time.monotonic() + 30
    while True:
        replicas = _stats_by_replica(served)
        labelled = sum(r["labelled"] for r in replicas.values())
        if labelled >= labelled_before + n and len(replicas) == served.workers:
            break
        assert time.monotonic() < deadline, replicas
        time.sleep(0.1)
    assert labelled == labelled_before + n
    assert all(r["requests"] > 0 and r["labelled"] > 0 for r in replicas.values()), replicas
    assert (served.home / "serving" / "prediction-log.sqlite").exists()
    # A new prediction under the same key replaces the logged one and may be confirmed anew.
    assert post(f"{served.url}/predict", {"sensor": sensors[0], "key": keys[0]})[0] == 200
    status, again, _ = post(f"{served.url}/feedback", {"key": keys[0], "label": other})
    assert status == 200 and again["duplicate"] is False


def test_a_failing_batch_fails_only_the_request_that_caused_it():
    """The batcher alone, in process: a batch that raises is run again item by item."""
    from ml.serving.batching import AdaptiveBatcher

    calls: list[list[int]] = []

    def run_batch(group, items):
        calls.append(list(items))
        if 13 in items:
            raise ValueError("item 13 cannot be computed")
        return [item * 10 for item in items]

    async def traffic():
        batcher = AdaptiveBatcher(run_batch, max_batch_size=64, max_latency_ms=5000)
        try:
            return await asyncio.gather(*(batcher.submit("g", i) for i in range(20)), return_exceptions=True)
        finally:
            batcher.close()

    results = asyncio.run(traffic())
    assert isinstance(results[13], ValueError) and "item 13" in str(results[13])
    assert [r for i, r in enumerate(results) if i != 13] == [i * 10 for i in range(20) if i != 13]
    assert any(len(batch) > 1 and 13 in batch for batch in calls)  # it was batched, then split


def test_the_in_process_cache_evicts_by_bytes_and_entries_least_recently_used_first():
    """``PredictionCache`` alone (no Redis): the byte bound, the entry bound, LRU order, and
    answers too big to cache."""
    from ml.serving.cache import PredictionCache

    answer = {"label": "low", "probabilities": {"low": 0.5, "high": 0.5}}
    text = json.dumps(answer)
    one = PredictionCache.entry_bytes("tp:pred:m:1:" + "0" * 32, text)
    cache = PredictionCache("m", redis_url=None, ttl_s=60, local_entries=1000, local_bytes=5 * one,
                            max_entry_bytes=4096)

    async def scenario():
        for i in range(5):
            await cache.put(1, f"{i:032d}", text)
        assert cache.entries == 5 and cache.size_bytes == 5 * one
        assert await cache.get(1, f"{0:032d}") == answer  # 0 is now the most recently used
        await cache.put(1, f"{5:032d}", text)  # over the byte bound: 1, the least recent, goes
        assert cache.entries == 5 and cache.size_bytes <= 5 * one
        assert await cache.get(1, f"{1:032d}") is None
        assert await cache.get(1, f"{0:032d}") == answer and await cache.get(1, f"{5:032d}") == answer
        await cache.put(1, "big", json.dumps({"scores": [0.123456789] * 1000}))  # ~13 KB of JSON: not cached
        assert await cache.get(1, "big") is None and cache.entries == 5
        await cache.put(1, f"{0:032d}", text)  # replacing an entry does not count it twice
        assert cache.size_bytes <= 5 * one and cache.entries == 5
        by_entries = PredictionCache("m", redis_url=None, ttl_s=60, local_entries=2, local_bytes=10**6,
                                     max_entry_bytes=4096)
        for i in range(3):
            await by_entries.put(1, f"{i:032d}", text)
        assert by_entries.entries == 2 and await by_entries.get(1, f"{0:032d}") is None

    asyncio.run(scenario())


def test_each_route_needs_its_scope_and_the_prediction_log_names_the_clients(served_local):
    url = served_local.url
    sensor = served_local.samples(1, seed=45)[0][0]
    forbidden = metric(url, "tp_predict_requests_total", outcome="forbidden")
    assert post(f"{url}/predict", {"sensor": sensor, "key": "scoped-1"}, token=PREDICTOR_TOKEN)[0] == 200
    status, answer, headers = post(f"{url}/feedback", {"key": "scoped-1", "label": "low"}, token=PREDICTOR_TOKEN)
    assert status == 403 and answer == {"error": "the token of client 'predictor' lacks the 'feedback' scope that "
                                                 "POST /feedback needs (it has: predict)"}
    assert 'error="insufficient_scope"' in headers.get("www-authenticate", headers.get("WWW-Authenticate", ""))
    status, answer, _ = post(f"{url}/predict", {"sensor": sensor}, token=LABELLER_TOKEN)
    assert status == 403 and answer == {"error": "the token of client 'labeller' lacks the 'predict' scope that "
                                                 "POST /predict needs (it has: feedback)"}
    assert metric(url, "tp_predict_requests_total", outcome="forbidden") == forbidden + 1
    status, answer, _ = post(f"{url}/feedback", {"key": "scoped-1", "label": "low"}, token=LABELLER_TOKEN)
    assert status == 200 and answer["duplicate"] is False
    # A bare token (both scopes) is named by its hash: the token itself is stored nowhere.
    assert post(f"{url}/predict", {"sensor": sensor, "key": "scoped-2"}, token=TOKEN)[0] == 200
    with sqlite3.connect(served_local.home / "serving" / "prediction-log.sqlite") as conn:
        rows = dict((key, (caller, by)) for key, caller, by in conn.execute(
            "SELECT key, caller, confirmed_by FROM tp_prediction_log WHERE model = ? AND key LIKE 'scoped-%'",
            (served_local.name,)))
    assert rows == {"scoped-1": ("predictor", "labeller"),
                    "scoped-2": ("token-" + hashlib.sha256(TOKEN.encode()).hexdigest()[:8], None)}
    # Metrics and probes answer without a token.
    for path in ("/metrics", "/readyz"):
        with urllib.request.urlopen(f"{url}{path}", timeout=10) as resp:
            assert resp.status == 200


def test_at_capture_rate_1_every_keyed_prediction_reaches_intake_through_the_command(served_local):
    from train_platform.datasets.served import served_sample_id, spool_dir

    served = served_local
    sensors, _ = served.samples(30, seed=46)
    keys = [f"all-{i}" for i in range(len(sensors))]
    answers = concurrent(f"{served.url}/predict", [{"sensor": s, "key": k} for s, k in zip(sensors, keys)],
                         concurrency=8, fresh_connections=True)
    assert {s for s, _ in answers} == {200}
    expected = {served_sample_id(served.name, k): a for k, (_, a) in zip(keys, answers)}
    # The workers hand their spool files over every 0.5 s; nothing is imported meanwhile.
    directory = spool_dir(served.home, CAPTURE_DATASET)
    deadline = time.monotonic() + 30
    while True:
        spooled = {json.loads(line)["id"] for path in directory.glob("*.ready")
                   for line in path.read_text().splitlines()}
        if set(expected) <= spooled:
            break
        assert time.monotonic() < deadline, f"{len(set(expected) - spooled)} captures not handed over"
        time.sleep(0.2)
    create_target(served.home, CAPTURE_DATASET)
    run = subprocess.run([sys.executable, "-m", "train_platform.cli", "dataset", "intake-served", CAPTURE_DATASET,
                          "--json"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TP_HOME": str(served.home)})
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    rows = intake_rows(served.home, CAPTURE_DATASET)
    assert set(expected) <= set(rows) and result["imported"] == len(rows), result
    for sample_id, answer in expected.items():
        assert (rows[sample_id]["label"], rows[sample_id]["status"]) == (answer["label"], "pending")
        assert rows[sample_id]["confidence"] == pytest.approx(answer["confidence"])
