"""The evaluation gate: may a candidate version go on to deployment?

``decide_gate`` is pure: from what ``python -m ml.evaluate`` measured (the candidate and,
with ``--baseline``, the production version, on the same held-out data in the same run) and
a ``GatePolicy``, it says passed or failed, with the reasons and the figures compared. It
fails when

* the main metric of the task (accuracy for classification, MAE for regression and
  forecasting, F1 for anomalies) is worse than production's by more than the tolerance
  (``max_metric_drop`` points for a score, ``max_error_increase`` as a fraction for an
  error);
* the main metric is on the wrong side of an absolute floor (``floor``: the least a score
  may be, the most an error may be);
* for classification, accuracy on the classes production already knew drops by more than
  ``max_old_class_drop``: what continual learning must not forget, even while accuracy over
  all classes rises with the new ones;
* production exists but was not measured on the same data (no baseline, another version, or
  another task), since then nothing says the candidate is not worse.

The deployment step records the decision on the version (``tp model list``, ``tp model
show``) and in the history; a failed gate stops the pipeline before any A/B phase.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from train_platform.registry.exceptions import GateError

# The metric a task is judged on when the policy names none.
MAIN_METRICS = {"classification": "accuracy", "regression": "mae", "forecasting": "mae", "anomaly": "f1"}
SCORES = ("accuracy", "macro_f1", "f1", "precision", "recall")  # higher is better, in [0, 1]
ERRORS = ("mae", "rmse")  # lower is better, in the data's units
# The floor of a score when the policy sets none. Accuracy 0.7: below it a classifier is
# wrong on almost one sample in three, whatever the number of classes; the shipped
# BasicMotions and JapaneseVowels models reach 0.95 and more (bench/quality.py). F1 0.5 for
# anomalies: fewer than half the anomalies found, or more false alarms than hits. Errors
# have no default floor (their units are the data's), except a forecast's MAE, which must
# not exceed the naive forecast's (the last value repeated) that ml.evaluate reports.
DEFAULT_FLOORS = {"accuracy": 0.7, "macro_f1": 0.7, "f1": 0.5, "precision": 0.5, "recall": 0.5}


@dataclass(frozen=True)
class GatePolicy:
    # The metric compared; None: the task's main metric (MAIN_METRICS).
    metric: str | None = None
    # Absolute bound on the metric: the least a score may be, the most an error may be.
    # None: DEFAULT_FLOORS (and the naive MAE for forecasting).
    floor: float | None = None
    # A score may be this much below production's (2 points of accuracy): less than that is
    # within what retraining on the same data moves it by.
    max_metric_drop: float = 0.02
    # An error may be this fraction above production's (5%).
    max_error_increase: float = 0.05
    # Accuracy on the classes production knew may drop by this much (5 points): the
    # forgetting target of bench/continual.py; replay + EWC + distillation forget about 0.1.
    max_old_class_drop: float = 0.05

    def __post_init__(self) -> None:
        problems = []
        if self.metric is not None and self.metric not in SCORES + ERRORS:
            problems.append(f"metric must be one of {', '.join(SCORES + ERRORS)}, not {self.metric!r}")
        if self.floor is not None and not (isinstance(self.floor, (int, float)) and math.isfinite(self.floor)):
            problems.append(f"floor must be a finite number, not {self.floor!r}")
        for name in ("max_metric_drop", "max_old_class_drop"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                problems.append(f"{name} must be between 0 and 1, not {value!r}")
        if (isinstance(self.max_error_increase, bool) or not isinstance(self.max_error_increase, (int, float))
                or not 0.0 <= self.max_error_increase < math.inf):
            problems.append(f"max_error_increase must be >= 0, not {self.max_error_increase!r}")
        if problems:
            raise GateError("invalid gate policy: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    # The failed checks when it failed; the checks made when it passed.
    reasons: tuple[str, ...]
    figures: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": list(self.reasons), "figures": self.figures,
                "policy": self.policy}


def gate_policy_from_json(text: str) -> GatePolicy:
    """A policy from a JSON object of its fields."""
    try:
        data = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise GateError(f"gate policy is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise GateError("gate policy must be a JSON object of field -> value")
    known = set(GatePolicy.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise GateError(f"unknown gate policy fields: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return GatePolicy(**data)


def _number(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _old_class_accuracy(per_class: Mapping[str, Any], classes: list[str]) -> tuple[float | None, int]:
    """Accuracy over the samples whose true class is one of ``classes``, and their number."""
    n = correct = 0
    for label in classes:
        row = per_class.get(label) or {}
        n += int(row.get("n") or 0)
        correct += int(row.get("correct") or 0)
    return (correct / n if n else None), n


def _fmt(metric: str, value: float) -> str:
    return f"{value:.2%}" if metric in SCORES else f"{value:.4g}"


def decide_gate(evaluation: Mapping[str, Any], production: int | None, policy: GatePolicy) -> GateDecision:
    """Passed or failed, from an evaluation written by ``python -m ml.evaluate`` and the
    version in production now (None when there is none)."""
    if not isinstance(evaluation, Mapping) or not isinstance(evaluation.get("task"), str):
        raise GateError("the evaluation names no task: it was not written by python -m ml.evaluate")
    task = evaluation["task"]
    metric = policy.metric or MAIN_METRICS.get(task)
    if metric is None:
        raise GateError(f"task {task!r} has no main metric; name one in the gate policy's `metric`")
    score = metric in SCORES
    failed: list[str] = []
    fine: list[str] = []
    value = _number(evaluation, metric)
    figures: dict[str, Any] = {"metric": metric, "value": value, "data": evaluation.get("data"),
                               "production": production}
    if value is None:
        failed.append(f"the evaluation has no {metric} for task {task}")
        return GateDecision(False, tuple(failed), figures, policy.to_dict())

    floor = policy.floor
    if floor is None:
        floor = DEFAULT_FLOORS.get(metric)
        if floor is None and task == "forecasting" and metric == "mae":
            floor = _number(evaluation, "naive_mae")
    figures["floor"] = floor
    if floor is not None:
        if (value < floor) if score else (value > floor):
            failed.append(f"{metric} {_fmt(metric, value)} is {'below' if score else 'above'} the floor "
                          f"{_fmt(metric, floor)}")
        else:
            fine.append(f"{metric} {_fmt(metric, value)} {'>=' if score else '<='} floor {_fmt(metric, floor)}")

    if production is None:
        fine.append("no production version to compare with")
    else:
        baseline = evaluation.get("baseline")
        if not isinstance(baseline, Mapping):
            note = evaluation.get("baseline_missing")
            failed.append(f"production is v{production}, but the evaluation did not measure it on the same data"
                          + (f" ({note})" if note else " (give the evaluation a baseline: model:NAME:production)"))
        elif baseline.get("version") is None:
            failed.append(f"the evaluation's baseline {baseline.get('ref')} is a checkpoint folder, not a registered "
                          f"version; measure production v{production} (model:NAME:production)")
        elif baseline.get("version") != production:
            failed.append(f"the evaluation measured v{baseline.get('version')} as production, but production is "
                          f"v{production} now; evaluate again")
        elif baseline.get("task") != task:
            failed.append(f"production v{production} is a {baseline.get('task')} model, the candidate a {task} model")
        else:
            _compare(evaluation, baseline, production, metric, value, policy, failed, fine, figures)
    return GateDecision(not failed, tuple(failed or fine), figures, policy.to_dict())


def _compare(evaluation: Mapping[str, Any], baseline: Mapping[str, Any], production: int, metric: str,
             value: float, policy: GatePolicy, failed: list[str], fine: list[str], figures: dict[str, Any]) -> None:
    score = metric in SCORES
    base = _number(baseline, metric)
    figures["production_value"] = base
    if base is None:
        failed.append(f"the evaluation has no {metric} of production v{production}")
    elif score:
        allowed = base - policy.max_metric_drop
        if value < allowed:
            failed.append(f"{metric} {_fmt(metric, value)} < production v{production}'s {_fmt(metric, base)} "
                          f"- {policy.max_metric_drop:.2%} tolerance")
        else:
            fine.append(f"{metric} {_fmt(metric, value)} vs production v{production}'s {_fmt(metric, base)}")
    else:
        allowed = base * (1 + policy.max_error_increase)
        if value > allowed:
            failed.append(f"{metric} {_fmt(metric, value)} > production v{production}'s {_fmt(metric, base)} "
                          f"+ {policy.max_error_increase:.0%} tolerance")
        else:
            fine.append(f"{metric} {_fmt(metric, value)} vs production v{production}'s {_fmt(metric, base)}")
    if evaluation.get("task") != "classification":
        return

    known = [str(label) for label in baseline.get("labels") or []]
    cand_rows, base_rows = evaluation.get("per_class"), baseline.get("per_class")
    if not known or not isinstance(cand_rows, Mapping) or not isinstance(base_rows, Mapping):
        failed.append("the evaluation has no per-class accuracy of both versions; forgetting cannot be measured")
        return
    cand_old, n = _old_class_accuracy(cand_rows, known)
    base_old, _ = _old_class_accuracy(base_rows, known)
    figures["old_classes"] = known
    figures["old_class_samples"] = n
    figures["old_class_accuracy"] = {"candidate": cand_old, "production": base_old}
    per_class = {}
    for label in known:
        c, b = cand_rows.get(label) or {}, base_rows.get(label) or {}
        if c.get("n"):
            per_class[label] = {"candidate": c.get("accuracy"), "production": b.get("accuracy"), "n": c.get("n")}
    figures["per_class"] = per_class
    if cand_old is None or base_old is None:
        failed.append(f"the held-out data holds no sample of the classes production v{production} knew "
                      f"({', '.join(known)}); forgetting cannot be measured")
        return
    drop = base_old - cand_old
    if drop > policy.max_old_class_drop:
        worst = max(per_class.items(), key=lambda item: (item[1]["production"] or 0) - (item[1]["candidate"] or 0))
        failed.append(f"accuracy on the classes production v{production} knew ({', '.join(known)}) dropped from "
                      f"{base_old:.2%} to {cand_old:.2%}, more than the {policy.max_old_class_drop:.2%} allowed "
                      f"(most: {worst[0]} {worst[1]['production']:.2%} -> {worst[1]['candidate']:.2%})")
    else:
        fine.append(f"accuracy on the classes production v{production} knew: {cand_old:.2%} vs {base_old:.2%}")
