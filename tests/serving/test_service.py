"""The inference endpoint, end to end against a real server (see conftest.py)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.serving.conftest import TOKEN

pytestmark = [pytest.mark.slow, pytest.mark.services]


def post(url: str, body, token: str | None = TOKEN, raw: bool = False) -> tuple[int, dict, dict]:
    data = body if raw else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}"), dict(err.headers)


def metric(url: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus series over every label set containing ``labels``."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def direct(checkpoint_dir, sensor: list) -> dict:
    from ml.checkpoint import load_checkpoint
    from ml.predict import predict

    return predict(load_checkpoint(checkpoint_dir), [{"sensor": sensor}])[0]


def wait_for_version(served, version: int, timeout: float = 10.0) -> None:
    """Until the server answers from ``version``; then, as in ``wait_for_split``, a few poll
    periods more so that every worker process has switched, not only the one that answered."""
    sensor = served.samples(1, seed=999)[0][0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body, _ = post(f"{served.url}/predict", {"sensor": sensor})
        if status == 200 and body["model_version"] == version:
            time.sleep(1.0)
            return
        time.sleep(0.1)
    raise AssertionError(f"the server did not switch to version {version} within {timeout} s")


def wait_for_split(served, timeout: float = 10.0) -> None:
    """Until every worker routes by the split: one worker answering from the candidate shows
    the experiment reached the registry; the others poll it every 0.2 s here, so a few more
    poll periods (generous under load) let them all catch up."""
    sensor = served.samples(1, seed=998)[0][0]
    deadline = time.monotonic() + timeout
    probe = 0
    while time.monotonic() < deadline:
        probe += 1
        if post(f"{served.url}/predict", {"sensor": sensor, "key": f"probe-{probe}"})[1]["model_version"] != 1:
            time.sleep(1.0)
            return
    raise AssertionError(f"no request reached the candidate within {timeout} s")


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
        wait_for_split(served)
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
    shifted = [(np.asarray(s) + 5.0).tolist() for s in served.samples(200, seed=10)[0]]
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


def _settle(served, at_least: int, timeout: float = 30.0) -> None:
    """Until every worker's live stats for the running experiment reached the registry: the
    arms' request totals are at least ``at_least`` and stop moving over a few flush periods
    (each worker flushes every 0.3 s here; under load one may lag)."""
    experiment = served.registry.active_experiment(served.name)
    arms = (experiment.control_version, experiment.candidate_version)
    deadline, last = time.monotonic() + timeout, -1
    while time.monotonic() < deadline:
        total = sum(served.registry.live_stats(served.name, v, since=experiment.started_at).requests for v in arms)
        if total >= at_least and total == last:
            return
        last = total
        time.sleep(1.0)
    raise AssertionError(f"live stats did not settle within {timeout} s (last total {last})")


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
    record = next((served.home / "fs").rglob("deployment.json"))
    return json.loads(record.read_text())


def test_the_deployment_task_rolls_back_a_worse_candidate_and_promotes_a_better_one(served, tmp_path):
    params = {"model_name": served.name, "candidate_share": 0.5, "min_requests": 40, "min_labelled": 20,
              "max_latency_ratio": 3.0, "latency_slack_ms": 50.0}
    # Day 1: v2 (trained on wrong labels) passed its gate and is newer than production: A/B.
    assert _run_deploy_task(served, tmp_path, params)["action"] == "ab_started"
    assert served.registry.active_experiment(served.name).candidate_version == 2
    wait_for_split(served)
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
    wait_for_split(served)
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
