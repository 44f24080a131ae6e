"""The evaluation gate: the pure decision on each rule, what ``python -m ml.evaluate``
measures for it (per-class metrics, the production version on the same data), and the
deployment command registering a failed candidate with its reasons and deploying nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from train_platform.registry import GateError
from train_platform.registry.deployment import GATE_FAILED_EXIT_CODE, run_deploy_command
from train_platform.registry.gate import GatePolicy, decide_gate, gate_policy_from_json

ROOT = Path(__file__).resolve().parents[2]
POLICY = GatePolicy()


def classes(**rows: tuple[int, int]) -> dict:
    """per_class rows from class=(n, correct)."""
    return {label: {"n": n, "correct": c, "accuracy": c / n} for label, (n, c) in rows.items()}


def evaluation(per_class: dict, *, labels: list[str], baseline: dict | None | str = "absent") -> dict:
    n = sum(r["n"] for r in per_class.values())
    data = {"task": "classification", "accuracy": sum(r["correct"] for r in per_class.values()) / n,
            "per_class": per_class, "labels": labels, "n": n,
            "data": {"ref": "tp://test@main", "samples": n, "sha256": "ab" * 32}}
    if baseline != "absent":
        data["baseline"] = baseline
    return data


def production(per_class: dict, *, labels: list[str], version: int = 1) -> dict:
    n = sum(r["n"] for r in per_class.values())
    return {"task": "classification", "accuracy": sum(r["correct"] for r in per_class.values()) / n,
            "per_class": per_class, "labels": labels, "ref": "model:m:production", "version": version}


OLD = ["walking", "running"]
PROD = production(classes(walking=(10, 10), running=(10, 9), standing=(10, 0), badminton=(10, 0)), labels=OLD)


def test_a_candidate_as_good_as_production_that_learned_new_classes_passes():
    cand = evaluation(classes(walking=(10, 10), running=(10, 9), standing=(10, 9), badminton=(10, 10)),
                      labels=[*OLD, "standing", "badminton"], baseline=PROD)
    decision = decide_gate(cand, 1, POLICY)
    assert decision.passed, decision.reasons
    assert decision.reasons == (
        "accuracy 95.00% >= floor 70.00%", "accuracy 95.00% vs production v1's 47.50%",
        "accuracy on the classes production v1 knew: 95.00% vs 95.00%")
    assert decision.figures["old_class_accuracy"] == {"candidate": 0.95, "production": 0.95}
    assert decision.figures["data"]["sha256"] == "ab" * 32


def test_a_candidate_worse_than_production_on_the_main_metric_fails():
    prod = production(classes(walking=(20, 19), running=(20, 19)), labels=OLD)
    cand = evaluation(classes(walking=(20, 19), running=(20, 17)), labels=OLD, baseline=prod)  # 90% vs 95%
    decision = decide_gate(cand, 1, POLICY)
    assert not decision.passed
    assert decision.reasons == ("accuracy 90.00% < production v1's 95.00% - 2.00% tolerance",)
    # Within a wider tolerance (and old-class drop), the same candidate passes.
    assert decide_gate(cand, 1, GatePolicy(max_metric_drop=0.06, max_old_class_drop=0.06)).passed


def test_a_candidate_below_the_floor_fails_even_without_production():
    cand = evaluation(classes(walking=(10, 10), running=(10, 10), standing=(10, 0), badminton=(10, 0)),
                      labels=OLD, baseline=None)
    decision = decide_gate(cand, None, POLICY)
    assert not decision.passed
    assert decision.reasons == ("accuracy 50.00% is below the floor 70.00%",)
    assert decide_gate(cand, None, GatePolicy(floor=0.5)).passed


def test_forgetting_the_classes_production_knew_fails_although_overall_accuracy_rose():
    # Production: right on its two classes only (50% overall). The candidate learned the new
    # classes perfectly but forgot much of the old ones: 75% overall, up 25 points.
    prod = production(classes(walking=(10, 10), running=(10, 10), standing=(10, 0), badminton=(10, 0)), labels=OLD)
    cand = evaluation(classes(walking=(10, 6), running=(10, 4), standing=(10, 10), badminton=(10, 10)),
                      labels=[*OLD, "standing", "badminton"], baseline=prod)
    decision = decide_gate(cand, 1, POLICY)
    assert not decision.passed
    assert decision.reasons == (
        "accuracy on the classes production v1 knew (walking, running) dropped from 100.00% to 50.00%, more than "
        "the 5.00% allowed (most: running 100.00% -> 40.00%)",)
    assert decision.figures["per_class"]["running"] == {"candidate": 0.4, "production": 1.0, "n": 10}


def test_each_failed_rule_is_a_reason_of_its_own():
    prod = production(classes(walking=(10, 10), running=(10, 10)), labels=OLD)
    cand = evaluation(classes(walking=(10, 1), running=(10, 1)), labels=OLD, baseline=prod)
    reasons = decide_gate(cand, 1, POLICY).reasons
    assert [r.split(" ")[0:2] for r in reasons] == [["accuracy", "10.00%"], ["accuracy", "10.00%"],
                                                    ["accuracy", "on"]]
    assert "below the floor" in reasons[0] and "tolerance" in reasons[1] and "dropped" in reasons[2]


@pytest.mark.parametrize("baseline, production_version, reason", [
    ("absent", 1, "production is v1, but the evaluation did not measure it on the same data (give the evaluation"),
    (None, 1, "production is v1, but the evaluation did not measure it on the same data"),
    ({**PROD, "version": 1}, 2, "the evaluation measured v1 as production, but production is v2 now"),
    ({**PROD, "version": None, "ref": "/ckpt"}, 1, "the evaluation's baseline /ckpt is a checkpoint folder"),
    ({**PROD, "task": "regression"}, 1, "production v1 is a regression model, the candidate a classification"),
    ({**PROD, "per_class": None}, 1, "forgetting cannot be measured"),
])
def test_a_candidate_not_compared_with_the_production_version_fails(baseline, production_version, reason):
    cand = evaluation(classes(walking=(10, 10), running=(10, 10)), labels=OLD, baseline=baseline)
    decision = decide_gate(cand, production_version, POLICY)
    assert not decision.passed
    assert any(reason in r for r in decision.reasons), decision.reasons


def test_held_out_data_without_the_old_classes_cannot_show_forgetting():
    prod = production(classes(standing=(10, 10)), labels=OLD)
    cand = evaluation(classes(standing=(10, 10)), labels=[*OLD, "standing"], baseline=prod)
    decision = decide_gate(cand, 1, POLICY)
    assert decision.reasons == ("the held-out data holds no sample of the classes production v1 knew (walking, "
                                "running); forgetting cannot be measured",)


def test_errors_are_compared_relatively_and_forecasts_must_beat_the_naive_forecast():
    def forecast(mae, naive=10.0, baseline=None):
        return {"task": "forecasting", "mae": mae, "naive_mae": naive, "baseline": baseline}

    prod = {"task": "forecasting", "mae": 5.0, "version": 3}
    assert decide_gate(forecast(5.2, baseline=prod), 3, POLICY).passed  # +4% < 5%
    worse = decide_gate(forecast(5.5, baseline=prod), 3, POLICY)
    assert worse.reasons == ("mae 5.5 > production v3's 5 + 5% tolerance",)
    naive = decide_gate(forecast(12.0), None, POLICY)
    assert naive.reasons == ("mae 12 is above the floor 10",)
    regression = {"task": "regression", "mae": 120.0}
    assert decide_gate(regression, None, POLICY).passed  # no default floor in the data's units
    assert not decide_gate(regression, None, GatePolicy(floor=100.0)).passed


def test_policy_fields_are_checked_and_read_from_json():
    with pytest.raises(GateError, match="max_old_class_drop must be between 0 and 1, not 2"):
        GatePolicy(max_old_class_drop=2)
    with pytest.raises(GateError, match="metric must be one of .*, not 'auc'"):
        GatePolicy(metric="auc")
    with pytest.raises(GateError, match="unknown gate policy fields: tolerance"):
        gate_policy_from_json('{"tolerance": 0.1}')
    with pytest.raises(GateError, match="not valid JSON"):
        gate_policy_from_json("{")
    assert gate_policy_from_json('{"floor": 0.8, "metric": "macro_f1"}') == GatePolicy(floor=0.8, metric="macro_f1")
    with pytest.raises(GateError, match="names no task"):
        decide_gate({"accuracy": 0.9}, None, POLICY)


# ---------------------------------------------------------------- measured by ml.evaluate

def _evaluate(checkpoint: Path, data: Path, out: Path, baseline: str | None = None, env: dict | None = None) -> dict:
    import os

    command = [sys.executable, "-m", "ml.evaluate", "--checkpoint", str(checkpoint), "--data", str(data),
               "--out", str(out)] + (["--baseline", baseline] if baseline else [])
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TP_TORCH_THREADS": "1", **(env or {})})
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(out.read_text())


def test_ml_evaluate_measures_per_class_and_the_baseline_on_the_same_data(registry, checkpoints, tmp_path):
    registry.register("gated", checkpoints["good"], gate_status="passed")
    registry.promote("gated", 1)
    env = {"TP_HOME": str(registry.settings.home), "TP_DATABASE_URL": registry.url}
    bad = _evaluate(checkpoints["bad"], checkpoints["test_data"], tmp_path / "bad.json", "model:gated:production", env)
    assert set(bad["per_class"]) <= set(bad["labels"]) and sum(r["n"] for r in bad["per_class"].values()) == bad["n"]
    assert bad["baseline"]["version"] == 1 and bad["baseline"]["ref"] == "model:gated:production"
    assert bad["baseline"]["accuracy"] > 0.9 > 0.3 > bad["accuracy"]
    assert bad["data"]["samples"] == 40 and len(bad["data"]["sha256"]) == 64
    decision = decide_gate(bad, 1, POLICY)
    assert not decision.passed
    floor, main, old = decision.reasons
    assert floor == f"accuracy {bad['accuracy']:.2%} is below the floor 70.00%"
    assert main.startswith(f"accuracy {bad['accuracy']:.2%} < production v1's {bad['baseline']['accuracy']:.2%}")
    assert old.startswith("accuracy on the classes production v1 knew (falling, high, low, rising) dropped from 100.00% to 0.00%")

    good = _evaluate(checkpoints["good"], checkpoints["test_data"], tmp_path / "good.json", "model:gated:production",
                     env)
    assert good["data"] == bad["data"]  # the same samples, told apart by content
    assert decide_gate(good, 1, POLICY).passed

    first = _evaluate(checkpoints["good"], checkpoints["test_data"], tmp_path / "first.json", "model:nothing-yet:production",
                      env)
    assert first["baseline"] is None and "unknown model 'nothing-yet'" in first["baseline_missing"]


# ---------------------------------------------------------------- the deployment command

def test_a_failed_gate_registers_the_candidate_with_its_reasons_and_deploys_nothing(registry, checkpoints, tmp_path):
    def write(name: str, data: dict) -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(data))
        return path

    good = production(classes(low=(10, 10), high=(10, 10), rising=(10, 10), falling=(10, 9)),
                      labels=["low", "high", "rising", "falling"])
    first = run_deploy_command(registry, "gated", checkpoint=checkpoints["good"],
                               evaluation=write("first.json", {**good, "baseline": None}))
    assert (first.action, first.version) == ("first_production", 1)
    # v2 passes but, with no deployment step run for it yet, would be the A/B candidate.
    registry.register("gated", checkpoints["good"], gate_status="passed", gate_detail={"passed": True, "reasons": []})
    worse = evaluation(classes(low=(10, 1), high=(10, 0), rising=(10, 2), falling=(10, 0)),
                       labels=good["labels"], baseline={**good, "version": 1})
    before = len(registry.history("gated"))
    result = run_deploy_command(registry, "gated", checkpoint=checkpoints["bad"], evaluation=write("bad.json", worse),
                                out=tmp_path / "record")
    assert (result.action, result.version) == ("gate_failed", 3)
    v3 = registry.get("gated", 3)
    assert v3.gate_status == "failed" and v3.gate_report == str(tmp_path / "bad.json")
    assert v3.gate_reasons == list(result.reasons) and len(result.reasons) == 3
    assert v3.metrics["accuracy"] == pytest.approx(0.075)
    assert [e.kind for e in registry.history("gated")[before:]] == ["register", "gate"]  # no ab_start, no promote
    gate = registry.history("gated")[-1]
    assert gate.detail["status"] == "failed" and gate.detail["reasons"] == v3.gate_reasons
    assert gate.actor == registry.actor != "anonymous"
    assert json.loads((tmp_path / "record" / "deployment.json").read_text())["action"] == "gate_failed"
    assert registry.active_experiment("gated") is None and registry.aliases("gated") == {"production": 1}
    # A retry of the task finds the version and its verdict: nothing new, nothing deployed.
    again = run_deploy_command(registry, "gated", checkpoint=checkpoints["bad"], evaluation=write("bad.json", worse))
    assert again.action == "gate_failed" and len(registry.list_versions("gated")) == 3


def test_tp_model_deploy_exits_99_and_tp_model_list_shows_why(tp_home, checkpoints, tmp_path, capsys):
    from train_platform.cli import main

    evaluation_file = tmp_path / "metrics.json"
    evaluation_file.write_text(json.dumps(evaluation(classes(low=(10, 3), high=(10, 3)), labels=["low", "high"],
                                                     baseline=None)))
    code = main(["model", "deploy", "cli-gated", "--checkpoint", str(checkpoints["bad"]), "--evaluation",
                 str(evaluation_file)])
    captured = capsys.readouterr()
    assert code == GATE_FAILED_EXIT_CODE
    assert "tp: cli-gated v1 failed its evaluation gate, nothing deployed: accuracy 30.00% is below the floor" in captured.err
    assert main(["model", "list", "cli-gated"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[5] == "failed"
    assert lines[2].strip() == "gate failed: accuracy 30.00% is below the floor 70.00%"
    assert main(["model", "history", "cli-gated"]) == 0
    history = capsys.readouterr().out
    assert '"reasons": ["accuracy 30.00% is below the floor 70.00%"], "status": "failed"' in history
