"""Scheduled deployment: the pure decision, the step applied to a real registry, the policy
and gate parsing, and the operators' commands."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from train_platform.registry import DeploymentError, InvalidModelRefError, LiveStats
from train_platform.registry.deployment import (
    DeploymentPolicy,
    decide,
    deployment_step,
    policy_from_json,
    read_evaluation,
)
from train_platform.registry.schema import LATENCY_BUCKETS_MS


def stats(version: int, requests: int = 1000, errors: int = 0, latency_ms: float = 10.0,
          labelled: int = 0, correct: int = 0) -> LiveStats:
    buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    index = next(i for i, bound in enumerate((*LATENCY_BUCKETS_MS, float("inf"))) if latency_ms <= bound)
    buckets[index] = requests - errors
    return LiveStats(version=version, requests=requests, errors=errors,
                     latency_ms_sum=latency_ms * (requests - errors), latency_buckets=tuple(buckets),
                     labelled=labelled, correct=correct)


POLICY = DeploymentPolicy(min_requests=300, min_labelled=50)


def test_waits_while_either_arm_has_too_little_traffic():
    decision = decide(stats(2, requests=120), stats(1, requests=5000), POLICY)
    assert decision.action == "wait"
    assert decision.reasons == ("candidate has 120 of 300 requests",)


def test_promotes_a_candidate_no_worse_than_production():
    decision = decide(stats(2, errors=3, labelled=200, correct=180), stats(1, errors=2, labelled=200, correct=178), POLICY)
    assert decision.action == "promote", decision.reasons
    assert decision.figures["candidate"]["accuracy"] == 0.9


@pytest.mark.parametrize("candidate, reason", [
    (stats(2, errors=80), "error rate 8.00% > production 0.20%"),
    (stats(2, latency_ms=90.0), "p95 latency 98 ms > 17.1875 ms allowed"),
    (stats(2, labelled=200, correct=120), "accuracy on confirmed labels 60.00% < production 90.00%"),
])
def test_rolls_back_a_worse_candidate(candidate, reason):
    production = stats(1, errors=2, labelled=200, correct=180)
    decision = decide(candidate, production, POLICY)
    assert decision.action == "rollback"
    assert any(r.startswith(reason) for r in decision.reasons), decision.reasons


def test_noise_alone_does_not_roll_back_an_equal_candidate():
    # 64% vs 68% on 60 labels each is well inside sampling noise.
    decision = decide(stats(2, labelled=60, correct=38), stats(1, labelled=60, correct=41), POLICY.__class__(
        min_requests=300, min_labelled=30))
    assert decision.action == "promote", decision.reasons


def test_without_enough_labels_accuracy_is_not_compared_unless_required():
    candidate, production = stats(2, labelled=10, correct=0), stats(1, labelled=10, correct=10)
    assert decide(candidate, production, POLICY).action == "promote"
    strict = DeploymentPolicy(min_requests=300, min_labelled=50, require_accuracy=True)
    assert decide(candidate, production, strict).action == "wait"


def test_policy_is_validated_and_parsed_from_json():
    with pytest.raises(DeploymentError, match="candidate_share must be strictly between 0 and 1, not 1.5"):
        DeploymentPolicy(candidate_share=1.5)
    with pytest.raises(DeploymentError, match="unknown deployment policy fields: share"):
        policy_from_json('{"share": 0.2}')
    with pytest.raises(DeploymentError, match="not valid JSON"):
        policy_from_json("{oops")
    policy = policy_from_json('{"candidate_share": 0.2, "max_ab_duration": 3600}')
    assert policy.candidate_share == 0.2 and policy.max_ab_duration == timedelta(hours=1)


def test_an_evaluation_file_is_read_from_a_file_or_its_folder(tmp_path):
    report = tmp_path / "metrics.json"
    report.write_text(json.dumps({"task": "classification", "accuracy": 0.91}))
    assert read_evaluation(tmp_path) == (report, {"task": "classification", "accuracy": 0.91})
    report.write_text("[1, 2]")
    with pytest.raises(DeploymentError, match="not a JSON object"):
        read_evaluation(report)
    with pytest.raises(DeploymentError, match="cannot read the evaluation"):
        read_evaluation(tmp_path / "missing.json")


def test_step_cycle_on_a_real_registry(registry, checkpoints):
    name = "sensor"
    registry.register(name, checkpoints["good"], gate_status="passed")
    registry.register(name, checkpoints["good"], gate_status="failed")
    policy = DeploymentPolicy(min_requests=100, min_labelled=20, candidate_share=0.2)

    first = deployment_step(registry, name, policy)
    assert (first.action, first.version) == ("first_production", 1)
    assert deployment_step(registry, name, policy).action == "nothing"  # v2 failed its gate

    registry.register(name, checkpoints["good"], gate_status="passed")
    started = deployment_step(registry, name, policy)
    assert (started.action, started.version) == ("ab_started", 3)
    assert registry.active_experiment(name).candidate_weight == 0.2

    registry.record_serving_stats(name, "r1", [stats(3, requests=50)])
    assert deployment_step(registry, name, policy).action == "waiting"
    registry.record_serving_stats(name, "r1", [stats(3, requests=100, errors=30), stats(1, requests=400)])
    rolled = deployment_step(registry, name, policy)
    assert rolled.action == "rolled_back" and "error rate" in rolled.reasons[0]
    assert registry.get(name, "production").version == 1 and registry.get(name, 3).rejected
    assert deployment_step(registry, name, policy).action == "nothing"  # a rejected version is not retried

    registry.register(name, checkpoints["good"], gate_status="passed")
    assert deployment_step(registry, name, policy).action == "ab_started"
    registry.record_serving_stats(name, "r1", [stats(4, requests=200), stats(1, requests=800)])
    promoted = deployment_step(registry, name, policy)
    assert (promoted.action, promoted.version) == ("promoted", 4)
    assert registry.aliases(name) == {"production": 4}
    kinds = [e.kind for e in registry.history(name) if e.kind.startswith("ab_")]
    assert kinds == ["ab_start", "ab_check", "ab_end", "ab_start", "ab_end"]
    check = next(e for e in registry.history(name) if e.kind == "ab_check")
    assert check.detail["reasons"] == ["candidate has 50 of 100 requests", "production has 0 of 100 requests"]


def test_a_stale_ab_phase_is_abandoned(registry, checkpoints):
    from train_platform.registry.schema import utcnow

    registry.register("sensor", checkpoints["good"], gate_status="passed")
    registry.register("sensor", checkpoints["good"], gate_status="passed")
    registry.promote("sensor", 1)
    policy = DeploymentPolicy(max_ab_duration=timedelta(days=2))
    assert deployment_step(registry, "sensor", policy).action == "ab_started"
    later = deployment_step(registry, "sensor", policy, now=utcnow() + timedelta(days=3))
    assert later.action == "rolled_back" and later.reasons[0].startswith("A/B ran 3 days")


def test_operators_build_their_commands(tmp_path):
    from operators.batch_inference import BatchInferenceOperator
    from operators.deployment import DeploymentOperator
    from operators.packaging import PackagingOperator

    deploy = DeploymentOperator(task_id="deploy", pipeline="daily-deployment")
    command = deploy.default_command({"model": "/ckpt", "evaluation": "/eval"}, {"record": "/out"},
                                     {"model_name": "sensor", "candidate_share": 0.2, "unrelated": 1})
    assert command == ["python", "-m", "train_platform.cli", "model", "deploy", "sensor", "--checkpoint", "/ckpt",
                       "--evaluation", "/eval", "--policy", '{"candidate_share": 0.2}', "--out", "/out"]
    assert deploy.default_command({}, {}, {})[5] == "daily-deployment"
    gated = deploy.default_command({}, {}, {"model_name": "sensor", "gate_floor": 0.8, "gate_max_old_class_drop": 0.1})
    assert gated[-2:] == ["--gate-policy", '{"floor": 0.8, "max_old_class_drop": 0.1}']
    kwargs = deploy.pod_operator_kwargs(["true"], {})
    assert kwargs["skip_on_exit_code"] == 99

    from operators.evaluation import EvaluationOperator

    evaluate = EvaluationOperator(task_id="evaluate", pipeline="p")
    assert evaluate.default_command({"model": "/ckpt", "test_data": "tp://t@main", "baseline": "model:m:production"},
                                    {"results": "/out"}, {}) == [
        "python", "-m", "ml.evaluate", "--checkpoint", "/ckpt", "--data", "tp://t@main", "--out", "/out/metrics.json",
        "--baseline", "model:m:production"]

    package = PackagingOperator(task_id="package", pipeline="p")
    assert package.default_command({}, {}, {"model_name": "sensor", "model_version": "candidate"}) == [
        "python", "-m", "train_platform.cli", "model", "package", "sensor", "candidate"]
    assert package.default_command({}, {}, {"model_name": "sensor", "model_version": 3})[-2:] == ["sensor", "v3"]
    assert package.default_command({}, {}, {})[-2:] == ["p", "latest"]
    assert package.default_command({"model": "model:sensor:v3"}, {}, {})[-2:] == ["sensor", "v3"]
    for bad in ("sensor", "sensor:3", "model:sensor:3", "model:sensor"):
        with pytest.raises(InvalidModelRefError, match=f"invalid model reference '{bad}': .*; expected model:NAME:ALIAS"):
            package.default_command({"model": bad}, {}, {})

    score = BatchInferenceOperator(task_id="score", pipeline="p")
    assert score.default_command({"data": "tp://sensors@main"}, {"predictions": "/out"}, {"model_name": "sensor"}) == [
        "python", "-m", "ml.serving.batch_inference", "--model", "model:sensor:production", "--data", "tp://sensors@main",
        "--out", "/out/predictions.jsonl"]
    with pytest.raises(ValueError, match="needs a `data` input and an output"):
        score.default_command({}, {}, {"model_name": "sensor"})
    assert score.default_command({"data": "x"}, {"o": "/o"}, {"model_name": "sensor", "model_version": "v2"})[4] == (
        "model:sensor:v2")
    with pytest.raises(InvalidModelRefError, match="invalid model name 'Not Valid'"):
        score.default_command({"data": "x"}, {"o": "/o"}, {"model_name": "Not Valid"})


def test_daily_deployment_pipeline_compiles_to_a_daily_dag():
    from train_platform.compiler.compiler import build_dag
    from train_platform.settings import get_settings
    from train_platform.spec.validate import load_pipeline

    from tests.registry.models import ROOT_PIPELINE

    dag = build_dag(load_pipeline(ROOT_PIPELINE), source=str(ROOT_PIPELINE), active=True, settings=get_settings())
    assert {t.task_id: type(t).__name__ for t in dag.tasks} == {
        "deploy": "DeploymentOperator", "package-production": "PackagingOperator"}
    assert dag.get_task("package-production").upstream_task_ids == {"deploy"}
    assert dag.timetable.expression == "0 0 * * *"  # @daily


def test_the_p95_is_interpolated_inside_its_histogram_bucket():
    from train_platform.registry import LiveStats

    buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    buckets[LATENCY_BUCKETS_MS.index(25)] = 90   # (15, 25] ms
    buckets[LATENCY_BUCKETS_MS.index(40)] = 10   # (25, 40] ms
    live = LiveStats(version=1, requests=100, latency_ms_sum=2100.0, latency_buckets=tuple(buckets))
    assert live.latency_quantile_ms(0.95) == 32.5  # half way into (25, 40]: 95 of 100 lies 5 of its 10 in
    assert live.latency_quantile_ms(0.5) == pytest.approx(15 + 10 * 50 / 90, abs=1e-3)
    assert live.mean_latency_ms == 21.0
    slow = list(buckets)
    slow[-1] = 1000  # past 2500 ms: the last finite bound
    assert LiveStats(version=1, requests=1100, latency_buckets=tuple(slow)).latency_quantile_ms(0.99) == 2500.0
