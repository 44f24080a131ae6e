"""The inference endpoint, end to end against a real server (see conftest.py)."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest

from tests.serving.conftest import LABELLER_TOKEN, PREDICTOR_TOKEN, TOKEN, wait_until_every_worker
from tests.serving.helpers import metric, post, raw_http, request_head

pytestmark = [pytest.mark.slow, pytest.mark.services]


def direct(checkpoint_dir, sensor: list) -> dict:
    from ml.checkpoint import load_checkpoint
    from ml.predict import predict

    return predict(load_checkpoint(checkpoint_dir), [{"sensor": sensor}])[0]


def wait_for_version(served, version: int) -> None:
    """Until every worker process serves ``version`` alone (production, no experiment)."""
    wait_until_every_worker(served, "production", version)
    wait_until_every_worker(served, "candidate", 0)


def wait_for_split(served, candidate: int) -> None:
    """Until every worker process routes by the experiment with ``candidate``."""
    wait_until_every_worker(served, "candidate", candidate)


async def _many(url: str, bodies: list[dict], concurrency: int = 16) -> list[tuple[int, dict]]:
    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async with aiohttp.ClientSession(headers=headers) as session:
        async def one(body: dict) -> tuple[int, dict]:
            async with sem, session.post(url, json=body) as resp:
                return resp.status, await resp.json()

        return await asyncio.gather(*(one(b) for b in bodies))


def many(url: str, bodies: list[dict]) -> list[tuple[int, dict]]:
    return asyncio.run(_many(url, bodies))


def test_starting_a_server_leaves_the_callers_logging_as_it_was(served, caplog):
    """bentoml.serve configures the calling process's logging for a server and disables every
    logger that exists; start_server (which `served` went through) puts them back."""
    import logging

    log = logging.getLogger("train_platform.registry.checkpoints")  # imported before the server started
    assert not log.disabled
    with caplog.at_level(logging.INFO):
        log.info("still heard after the server started")
    assert "still heard after the server started" in caplog.text


def test_predictions_equal_the_model_called_directly(served):
    import bentoml

    sensors, _ = served.samples(4, seed=1)
    with bentoml.SyncHTTPClient(served.url, token=TOKEN) as client:
        for sensor in sensors:
            expected = direct(served.checkpoints["good"], sensor)
            via_client = client.predict(sensor=sensor)
            status, via_http, _ = post(f"{served.url}/predict", {"sensor": sensor, "key": "any"})
            assert status == 200
            for answer in (via_client, via_http):
                assert answer["model_version"] == 1
                assert answer["label"] == expected["label"]
                assert answer["confidence"] == pytest.approx(expected["confidence"], abs=1e-6)
                assert answer["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)


@pytest.mark.parametrize("body, raw, status, message", [
    ({"sensor": [[1.0, 2.0]] * 10}, False, 400, "2 channels per time step, the model expects 3"),
    (b'{"sensor": [[1, 2, NaN], [1, 2, 3]]}', True, 400, "non-finite value at index [0, 2]"),
    ({"sensor": [[1.0, 2.0, 3.0]] * 65}, False, 400, "65 time steps is too long, the model takes at most 64"),
    ({"sensor": []}, False, 400, "sensor"),
    ({"sensor": [[1, 2, 3], [4, 5]]}, False, 400, "not a rectangular array"),
    ({"sensor": "abc"}, False, 400, "sensor"),
    ({"key": "no-sensor"}, False, 400, "sensor"),
    ({"sensor": [[1, 2, 3]] * 4, "timestamps": [1, 2]}, False, 400, "timestamps: 2 values for 4 time steps"),
    (b'{"sensor": [[1, 2, 3]', True, 400, ""),
])
def test_bad_inputs_get_a_4xx_with_a_message_and_the_server_stays_up(served, body, raw, status, message):
    got, answer, _ = post(f"{served.url}/predict", body, raw=raw)
    assert got == status, answer
    assert message in json.dumps(answer)
    ok, good, _ = post(f"{served.url}/predict", {"sensor": served.samples(1, seed=2)[0][0]})
    assert ok == 200 and good["model_version"] == 1


def test_requests_without_a_valid_token_get_401(served):
    import bentoml
    from bentoml.exceptions import BentoMLException

    sensor = served.samples(1, seed=3)[0][0]
    before = metric(served.url, "tp_predict_requests_total", outcome="unauthorized")
    for token in (None, "wrong-token", ""):
        status, answer, headers = post(f"{served.url}/predict", {"sensor": sensor}, token=token)
        assert status == 401 and answer == {"error": "missing or invalid bearer token"}
        assert headers.get("www-authenticate", headers.get("WWW-Authenticate")) == "Bearer"
    with bentoml.SyncHTTPClient(served.url) as client, pytest.raises(BentoMLException) as err:
        client.predict(sensor=sensor)
    assert err.value.error_code == 401
    assert post(f"{served.url}/feedback", {"key": "k", "label": "low"}, token=None)[0] == 401
    assert post(f"{served.url}/predict", {"sensor": sensor}, token="second-token")[0] == 200
    assert metric(served.url, "tp_predict_requests_total", outcome="unauthorized") == before + 4


def test_scopes_per_route_and_the_redis_prediction_log_names_the_clients(served):
    import redis

    sensor = served.samples(1, seed=32)[0][0]
    assert post(f"{served.url}/predict", {"sensor": sensor, "key": "scoped-redis"}, token=PREDICTOR_TOKEN)[0] == 200
    status, answer, _ = post(f"{served.url}/feedback", {"key": "scoped-redis", "label": "low"}, token=PREDICTOR_TOKEN)
    assert status == 403 and "lacks the 'feedback' scope that POST /feedback needs" in answer["error"]
    assert post(f"{served.url}/predict", {"sensor": sensor}, token=LABELLER_TOKEN)[0] == 403
    assert post(f"{served.url}/feedback", {"key": "scoped-redis", "label": "low"}, token=LABELLER_TOKEN)[0] == 200
    entry = redis.Redis.from_url(served.redis_url).hgetall(f"tp:fb:{served.name}:scoped-redis")
    assert (entry[b"caller"], entry[b"confirmed_by"], entry[b"confirmed"]) == (b"predictor", b"labeller", b"low")


def test_a_repeated_request_is_answered_from_redis(served):
    import redis

    sensor = served.samples(1, seed=4)[0][0]
    client = redis.Redis.from_url(served.redis_url)
    pattern = f"tp:pred:{served.name}:1:*"
    keys_before = set(client.scan_iter(pattern))
    hits_before = metric(served.url, "tp_cache_lookups_total", result="hit", version="1")
    first = post(f"{served.url}/predict", {"sensor": sensor})
    assert metric(served.url, "tp_cache_lookups_total", result="hit", version="1") == hits_before
    new_keys = set(client.scan_iter(pattern)) - keys_before
    assert len(new_keys) == 1
    cached = json.loads(client.get(new_keys.pop()))
    second = post(f"{served.url}/predict", {"sensor": sensor})
    assert metric(served.url, "tp_cache_lookups_total", result="hit", version="1") == hits_before + 1
    assert first[1] == second[1] == {**cached, "model_version": 1}


def test_alias_switch_takes_effect_without_a_restart(served):
    sensor = served.samples(1, seed=5)[0][0]
    served.registry.promote(served.name, 2)
    try:
        wait_for_version(served, 2)
        status, answer, _ = post(f"{served.url}/predict", {"sensor": sensor})
        expected = direct(served.checkpoints["bad"], sensor)
        assert status == 200 and answer["model_version"] == 2 and answer["label"] == expected["label"]
    finally:
        served.registry.rollback(served.name)
    wait_for_version(served, 1)


def test_ab_split_follows_the_weight_and_sticks_per_key(served):
    served.registry.start_experiment(served.name, 2, weight=0.3)
    try:
        wait_for_split(served, 2)
        before = {v: metric(served.url, "tp_predict_requests_total", version=str(v), outcome="ok") for v in (1, 2)}
        sensors, _ = served.samples(1000, seed=8)
        answers = many(f"{served.url}/predict", [{"sensor": s, "key": f"user-{i}"} for i, s in enumerate(sensors)])
        assert {status for status, _ in answers} == {200}
        versions = [a["model_version"] for _, a in answers]
        share = versions.count(2) / len(versions)
        # Binomial sd at n=1000, p=0.3 is 0.0145: +-0.05 is 3.4 sd.
        assert abs(share - 0.3) < 0.05, share
        after = {v: metric(served.url, "tp_predict_requests_total", version=str(v), outcome="ok") for v in (1, 2)}
        assert after[2] - before[2] == versions.count(2) and after[1] - before[1] == versions.count(1)
        # Sticky: the same key keeps its version whatever the input.
        for i in range(5):
            again = many(f"{served.url}/predict",
                         [{"sensor": s, "key": f"user-{i}"} for s in served.samples(3, seed=100 + i)[0]])
            assert {a["model_version"] for _, a in again} == {versions[i]}
    finally:
        served.registry.end_experiment(served.name)
    wait_for_version(served, 1)


def test_metrics_report_batches_confidence_and_drift(served):
    sensors, _ = served.samples(64, seed=9)
    many(f"{served.url}/predict", [{"sensor": s} for s in sensors])
    assert metric(served.url, "tp_batch_size_count", version="1") > 0
    # Concurrent requests were batched: fewer forward passes than requests.
    assert metric(served.url, "tp_batch_size_sum", version="1") > metric(served.url, "tp_batch_size_count", version="1")
    assert metric(served.url, "tp_prediction_confidence_count", version="1") >= 64
    assert metric(served.url, "tp_predict_latency_seconds_count", version="1") >= 64
    psi_in_distribution = [metric(served.url, "tp_input_drift_psi", version="1", channel=str(c)) for c in range(3)]
    assert all(0 <= v < 0.5 for v in psi_in_distribution), psi_in_distribution
    # Each of the two workers keeps its own window (2000 values per channel, about 83
    # requests of 24 steps) and publishes PSI every 50 of its requests; the gauge shows the
    # most recent worker's figure. 600 shifted requests give each worker about 300, so its
    # last publication comes after at least 250 of them: five counted batches of 1,200
    # values, each halving the window, leave under 4% of the in-distribution counts.
    shifted = [(np.asarray(s) + 5.0).tolist() for s in served.samples(600, seed=10)[0]]
    many(f"{served.url}/predict", [{"sensor": s} for s in shifted])
    psi_shifted = [metric(served.url, "tp_input_drift_psi", version="1", channel=str(c)) for c in range(3)]
    assert all(v > 1.0 for v in psi_shifted), psi_shifted


def _traffic_with_feedback(served, n: int, seed: int) -> None:
    sensors, labels = served.samples(n, seed=seed)
    keys = [f"fb-{seed}-{i}" for i in range(n)]
    answers = many(f"{served.url}/predict", [{"sensor": s, "key": k} for s, k in zip(sensors, keys)])
    assert {status for status, _ in answers} == {200}
    confirmed = many(f"{served.url}/feedback", [{"key": k, "label": y} for k, y in zip(keys, labels)])
    assert {status for status, _ in confirmed} == {200}


def _settle(served, sent: int, timeout: float = 30.0) -> None:
    """Until every worker's live stats for the running experiment reached the registry: the
    arms hold the ``sent`` keyed requests and their ``sent`` confirmed labels (each worker
    flushes every 0.3 s here)."""
    experiment = served.registry.active_experiment(served.name)
    arms = (experiment.control_version, experiment.candidate_version)
    deadline = time.monotonic() + timeout
    while True:
        stats = [served.registry.live_stats(served.name, v, since=experiment.started_at) for v in arms]
        requests, labelled = sum(s.requests for s in stats), sum(s.labelled for s in stats)
        if requests >= sent and labelled >= sent:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"live stats did not reach {sent} requests and labels within {timeout} s "
                                 f"({requests} requests, {labelled} labels)")
        time.sleep(0.1)


def _run_deploy_task(served, tmp_path, params: dict) -> dict:
    """The `deploy` task of dags/pipelines/daily-deployment.yaml, compiled by the platform's
    compiler and executed on the local executor (its real command, in a subprocess)."""
    from train_platform.compiler.compiler import build_dag
    from train_platform.settings import get_settings
    from train_platform.spec.validate import load_pipeline

    from tests.registry.models import ROOT_PIPELINE

    spec = load_pipeline(ROOT_PIPELINE)
    dag = build_dag(spec, source=str(ROOT_PIPELINE), active=True, settings=get_settings())
    task = dag.get_task("deploy")
    defaults = {name: p.value for name, p in dag.params.items()}
    context = {"run_id": f"test-{time.monotonic_ns()}", "params": {**defaults, **params}}
    task.render_template_fields(context)
    task.execute(context)
    record = next((served.home / "mounts" / "pvc" / "user-deployments").rglob("deployment.json"))
    return json.loads(record.read_text())


def test_the_deployment_task_rolls_back_a_worse_candidate_and_promotes_a_better_one(served, tmp_path):
    params = {"model_name": served.name, "candidate_share": 0.5, "min_requests": 40, "min_labelled": 20,
              "max_latency_ratio": 3.0, "latency_slack_ms": 50.0}
    # Day 1: v2 (trained on wrong labels) passed its gate and is newer than production: A/B.
    assert _run_deploy_task(served, tmp_path, params)["action"] == "ab_started"
    assert served.registry.active_experiment(served.name).candidate_version == 2
    wait_for_split(served, 2)
    _traffic_with_feedback(served, 120, seed=11)
    _settle(served, 120)
    # Day 2: the candidate is worse on confirmed labels: rolled back by itself.
    day2 = _run_deploy_task(served, tmp_path, params)
    assert day2["action"] == "rolled_back", day2
    assert any("accuracy on confirmed labels" in reason for reason in day2["reasons"])
    assert served.registry.get(served.name, "production").version == 1
    assert served.registry.get(served.name, 2).rejected

    # A better candidate: v3, the good model retrained (same weights), gate passed.
    served.registry.register(served.name, served.checkpoints["good"], gate_status="passed")
    assert _run_deploy_task(served, tmp_path, params)["action"] == "ab_started"
    wait_for_split(served, 3)
    _traffic_with_feedback(served, 120, seed=12)
    _settle(served, 120)
    day4 = _run_deploy_task(served, tmp_path, params)
    assert day4["action"] == "promoted", day4
    assert served.registry.get(served.name, "production").version == 3
    wait_for_version(served, 3)

    steps = [(e.kind, e.version, e.detail.get("outcome")) for e in served.registry.history(served.name)
             if e.kind in ("ab_start", "ab_end")]
    assert steps[-4:] == [("ab_start", 2, None), ("ab_end", 2, "rolled_back"),
                     ("ab_start", 3, None), ("ab_end", 3, "promoted")]
    moves = [(e.kind, e.previous_version, e.version) for e in served.registry.history(served.name, alias="production")]
    assert moves[-1] == ("promote", 1, 3)


def test_feedback_with_redis_counts_a_replayed_label_once(served):
    import redis

    sensors, labels = served.samples(20, seed=30)
    keys = [f"redis-fb-{i}" for i in range(len(sensors))]
    counted = metric(served.url, "tp_feedback_total", outcome="counted")
    duplicates = metric(served.url, "tp_feedback_total", outcome="duplicate")
    confirmed = metric(served.url, "tp_confirmed_predictions_total")
    answers = many(f"{served.url}/predict", [{"sensor": s, "key": k} for s, k in zip(sensors, keys)])
    assert {status for status, _ in answers} == {200}
    replies = many(f"{served.url}/feedback", [{"key": k, "label": y} for k, y in zip(keys, labels)] * 3)
    assert {status for status, _ in replies} == {200}
    assert sorted(r["duplicate"] for _, r in replies) == [False] * 20 + [True] * 40
    assert metric(served.url, "tp_feedback_total", outcome="counted") == counted + 20
    assert metric(served.url, "tp_feedback_total", outcome="duplicate") == duplicates + 40
    assert metric(served.url, "tp_confirmed_predictions_total") == confirmed + 20
    # The log entry in Redis holds the label that counted, and the version that answered
    # (production: earlier tests of this module may have moved it past v1).
    entry = redis.Redis.from_url(served.redis_url).hgetall(f"tp:fb:{served.name}:{keys[0]}")
    production = served.registry.get(served.name, "production").version
    assert entry[b"confirmed"].decode() == labels[0] and int(entry[b"version"]) == production
    other = next(c for c in ("low", "high", "rising", "falling") if c != labels[0])
    status, answer, _ = post(f"{served.url}/feedback", {"key": keys[0], "label": other})
    assert status == 409 and f"already confirmed as {labels[0]!r}" in answer["error"]
    assert metric(served.url, "tp_confirmed_predictions_total") == confirmed + 20


def test_default_bounds_body_size_and_image_side(served):
    # Defaults: 4 MiB of body, 128 pixels per image side.
    status, answer = raw_http(served.url, request_head(served.url, f"Content-Length: {4 * 1024 * 1024 + 1}\r\n"))
    assert status == 413 and "over the limit of 4194304 bytes (TP_SERVE_MAX_BODY_BYTES)" in answer["error"]
    sensor = served.samples(1, seed=31)[0][0]
    status, answer, _ = post(f"{served.url}/predict", {"sensor": sensor, "image": np.zeros((1, 129, 8)).tolist()})
    assert status == 400
    assert answer["error"] == ("image: 129 pixels of frame height, the service takes at most 128 "
                               "(TP_SERVE_MAX_IMAGE_SIDE)")


def test_the_runtime_validates_each_request_once_and_batches_the_validated_sample(tp_home, checkpoints, monkeypatch):
    """In process, without HTTP: every request is validated exactly once, against the version
    it was routed to, and the batcher hands those ``ValidatedSample`` objects to the model."""
    import ml.predict
    from ml.checkpoint import load_checkpoint
    from ml.exceptions import InvalidInputError
    from ml.predict import ValidatedSample
    from ml.serving.config import ServingConfig
    from ml.serving.runtime import ServingRuntime
    from train_platform.registry import ModelRegistry
    from train_platform.settings import reload_settings

    monkeypatch.delenv("BENTOML_HOME", raising=False)
    settings = reload_settings()
    registry = ModelRegistry(settings)
    registry.register("inproc", checkpoints["good"], gate_status="passed")
    registry.promote("inproc", 1)
    sensors = np.load(checkpoints["test_data"])["X"][:12].tolist()
    expected = ml.predict.predict(load_checkpoint(checkpoints["good"]), [{"sensor": s} for s in sensors])

    validated, batched = [], []
    real_validate, real_predict = ml.predict.validate_sample, ml.predict.predict_validated

    def counting_validate(checkpoint, sample):
        validated.append(sample)
        return real_validate(checkpoint, sample)

    def recording_predict(checkpoint, samples):
        batched.append(list(samples))
        return real_predict(checkpoint, samples)

    monkeypatch.setattr(ml.predict, "validate_sample", counting_validate)
    monkeypatch.setattr(ml.predict, "predict_validated", recording_predict)
    runtime = ServingRuntime(ServingConfig(model="inproc"), settings)
    assert runtime.cache.backend == "memory"
    # Loading a version warmed it up (three single-sample forward passes) before any traffic.
    assert len(validated) == 1 and [len(b) for b in batched] == [1, 1, 1]
    validated.clear(), batched.clear()

    async def traffic():
        try:
            answers = await asyncio.gather(*(runtime.predict({"sensor": s}, None) for s in sensors))
            repeated = await runtime.predict({"sensor": sensors[0]}, None)  # answered by the cache
            with pytest.raises(InvalidInputError, match="2 channels per time step, the model expects 3"):
                await runtime.predict({"sensor": [[1.0, 2.0]] * 10}, None)
            return answers, repeated
        finally:
            await runtime.close()

    answers, repeated = asyncio.run(traffic())
    assert len(validated) == len(sensors) + 2  # each request once: none again on the model thread
    samples = [s for batch in batched for s in batch]
    assert len(samples) == len(sensors) and all(isinstance(s, ValidatedSample) for s in samples)
    assert len(batched) < len(sensors)  # concurrent requests shared forward passes
    for answer, want in zip(answers, expected):
        assert answer["model_version"] == 1 and answer["label"] == want["label"]
        assert answer["probabilities"] == pytest.approx(want["probabilities"], abs=1e-6)
    assert repeated == answers[0]
