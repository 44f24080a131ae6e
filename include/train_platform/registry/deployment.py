"""Scheduled deployment: candidate -> A/B -> production, or back.

``decide`` is pure: given the live figures of both arms of an A/B test and a policy it says
promote, roll back or wait, with the reasons. ``deployment_step`` applies one step of the
cycle to the registry and is what the daily ``deployment`` task runs (``run_deploy_command``
first registers the task's checkpoint with the verdict of its evaluation gate, ``gate``, and
stops there when the gate failed):

1. no experiment running: take the newest version that passed its evaluation gate, is newer
   than production and never lost an A/B test; start an A/B phase at ``candidate_share``
   (or make it production directly when there is no production yet);
2. an experiment running: compare the arms since it started; promote the candidate when it
   is no worse than production on error rate, latency and accuracy on confirmed labels;
   roll back (production keeps all traffic, the candidate is marked rejected) when it is
   worse on any; keep waiting while either arm has too little traffic, up to
   ``max_ab_duration``.

Every step lands in the model's history in the registry, recorded as the acting user (the
pipeline's owner in a task).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from train_platform.registry.exceptions import DeploymentError, ModelNotFoundError
from train_platform.registry.gate import GateDecision, decide_gate, gate_policy_from_json
from train_platform.registry.live_stats import LiveStats
from train_platform.registry.model_registry import ModelRegistry, ModelVersion
from train_platform.registry.names import PRODUCTION
from train_platform.registry.schema import utcnow

log = logging.getLogger(__name__)

Action = Literal["promote", "rollback", "wait"]
# `tp model deploy` exits with this when the task's candidate failed its evaluation gate:
# nothing was deployed, and the deployment task (then the rest of the pipeline) is skipped.
# 99 is the exit code Airflow's own operators skip on.
GATE_FAILED_EXIT_CODE = 99


@dataclass(frozen=True)
class DeploymentPolicy:
    # A tenth of the traffic bounds the harm of a bad candidate yet gives it enough requests
    # in a day to judge.
    candidate_share: float = 0.1
    # Below a few hundred requests per arm an error-rate gap of one point is noise.
    min_requests: int = 300
    # Confirmed labels arrive slowly; 30 per arm is where an accuracy gap of a few points
    # starts to mean something.
    min_labelled: int = 30
    # When True, no promotion without enough confirmed labels on both arms.
    require_accuracy: bool = False
    # Absolute error-rate increase tolerated (1 point).
    max_error_rate_increase: float = 0.01
    # Candidate p95 latency may be at most this factor of production's ...
    max_latency_ratio: float = 1.25
    # ... plus this slack, which absorbs the histogram's bucket granularity at low latencies.
    latency_slack_ms: float = 5.0
    # Absolute accuracy drop tolerated on confirmed labels (2 points).
    max_accuracy_drop: float = 0.02
    # An A/B phase that never gets enough traffic is abandoned (rolled back) after this.
    max_ab_duration: timedelta = timedelta(days=7)
    # A rate gap counts as "worse" only beyond the tolerance plus this many standard errors
    # (1.64: one-sided 95%), so sampling noise alone rarely rolls back an equal candidate.
    confidence_z: float = 1.64

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 < self.candidate_share < 1.0:
            problems.append(f"candidate_share must be strictly between 0 and 1, not {self.candidate_share}")
        if self.min_requests < 1:
            problems.append(f"min_requests must be at least 1, not {self.min_requests}")
        if self.min_labelled < 1:
            problems.append(f"min_labelled must be at least 1, not {self.min_labelled}")
        if not 0.0 <= self.max_error_rate_increase < 1.0:
            problems.append(f"max_error_rate_increase must be in [0, 1), not {self.max_error_rate_increase}")
        if self.max_latency_ratio < 1.0:
            problems.append(f"max_latency_ratio must be at least 1, not {self.max_latency_ratio}")
        if self.latency_slack_ms < 0:
            problems.append(f"latency_slack_ms must be >= 0, not {self.latency_slack_ms}")
        if not 0.0 <= self.max_accuracy_drop < 1.0:
            problems.append(f"max_accuracy_drop must be in [0, 1), not {self.max_accuracy_drop}")
        if self.confidence_z < 0:
            problems.append(f"confidence_z must be >= 0, not {self.confidence_z}")
        if self.max_ab_duration <= timedelta(0):
            problems.append("max_ab_duration must be positive")
        if problems:
            raise DeploymentError("invalid deployment policy: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["max_ab_duration"] = self.max_ab_duration.total_seconds()
        return data


@dataclass(frozen=True)
class Decision:
    action: Action
    reasons: tuple[str, ...]
    figures: dict[str, Any] = field(default_factory=dict)


def _figures(stats: LiveStats) -> dict[str, Any]:
    return {
        "version": stats.version, "requests": stats.requests, "errors": stats.errors,
        "error_rate": round(stats.error_rate, 6), "p95_ms": stats.latency_quantile_ms(0.95),
        "mean_latency_ms": None if stats.mean_latency_ms is None else round(stats.mean_latency_ms, 3),
        "labelled": stats.labelled,
        "accuracy": None if stats.accuracy is None else round(stats.accuracy, 6),
    }


def _noise(p_a: float, n_a: int, p_b: float, n_b: int, z: float) -> float:
    """z standard errors of the difference of two observed rates."""
    import math

    return z * math.sqrt(p_a * (1 - p_a) / max(n_a, 1) + p_b * (1 - p_b) / max(n_b, 1))


def decide(candidate: LiveStats, production: LiveStats, policy: DeploymentPolicy) -> Decision:
    """Promote, roll back or wait, from the live figures of both arms."""
    figures = {"candidate": _figures(candidate), "production": _figures(production)}
    short = [
        f"{arm} has {stats.requests} of {policy.min_requests} requests"
        for arm, stats in (("candidate", candidate), ("production", production))
        if stats.requests < policy.min_requests
    ]
    if short:
        return Decision("wait", tuple(short), figures)

    worse: list[str] = []
    fine: list[str] = []
    noise = _noise(candidate.error_rate, candidate.requests, production.error_rate, production.requests,
                   policy.confidence_z)
    if candidate.error_rate > production.error_rate + policy.max_error_rate_increase + noise:
        worse.append(f"error rate {candidate.error_rate:.2%} > production {production.error_rate:.2%} "
                     f"+ {policy.max_error_rate_increase:.2%} tolerance + {noise:.2%} noise margin")
    else:
        fine.append(f"error rate {candidate.error_rate:.2%} vs production {production.error_rate:.2%}")

    cand_p95, prod_p95 = candidate.latency_quantile_ms(0.95), production.latency_quantile_ms(0.95)
    if cand_p95 is not None and prod_p95 is not None:
        allowed = prod_p95 * policy.max_latency_ratio + policy.latency_slack_ms
        if cand_p95 > allowed:
            worse.append(f"p95 latency {cand_p95:g} ms > {allowed:g} ms allowed (production {prod_p95:g} ms)")
        else:
            fine.append(f"p95 latency {cand_p95:g} ms vs production {prod_p95:g} ms")

    enough_labels = min(candidate.labelled, production.labelled) >= policy.min_labelled
    if enough_labels:
        cand_acc, prod_acc = candidate.accuracy, production.accuracy
        noise = _noise(cand_acc, candidate.labelled, prod_acc, production.labelled, policy.confidence_z)
        if cand_acc < prod_acc - policy.max_accuracy_drop - noise:
            worse.append(f"accuracy on confirmed labels {cand_acc:.2%} < production {prod_acc:.2%} "
                         f"- {policy.max_accuracy_drop:.2%} tolerance - {noise:.2%} noise margin")
        else:
            fine.append(f"accuracy on confirmed labels {cand_acc:.2%} vs production {prod_acc:.2%}")
    if worse:
        return Decision("rollback", tuple(worse), figures)
    if not enough_labels:
        note = (f"confirmed labels: candidate {candidate.labelled}, production {production.labelled}, "
                f"need {policy.min_labelled} each")
        if policy.require_accuracy:
            return Decision("wait", (note,), figures)
        fine.append(note + " (accuracy not compared)")
    return Decision("promote", tuple(fine), figures)


@dataclass(frozen=True)
class StepResult:
    """What one deployment step did; its ``action`` is also the task's XCom value."""

    action: Literal["promoted", "rolled_back", "waiting", "ab_started", "first_production", "nothing",
                    "gate_failed"]
    model: str
    version: int | None
    reasons: tuple[str, ...] = ()
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "model": self.model, "version": self.version,
                "reasons": list(self.reasons), "figures": self.figures}


def deployment_step(registry: ModelRegistry, name: str, policy: DeploymentPolicy, *,
                    actor: str | None = None, now: datetime | None = None) -> StepResult:
    """Advances the deployment cycle of ``name`` by one step (see the module docstring)."""
    now = now or utcnow()
    experiment = registry.active_experiment(name)
    if experiment is not None:
        candidate = registry.live_stats(name, experiment.candidate_version, since=experiment.started_at)
        production = registry.live_stats(name, experiment.control_version, since=experiment.started_at)
        decision = decide(candidate, production, policy)
        detail = {"reasons": list(decision.reasons), "figures": decision.figures, "policy": policy.to_dict()}
        if decision.action == "wait" and now - experiment.started_at >= policy.max_ab_duration:
            decision = Decision("rollback", (f"A/B ran {now - experiment.started_at} without enough data",
                                             *decision.reasons), decision.figures)
            detail["reasons"] = list(decision.reasons)
        if decision.action == "wait":
            registry.record_event(name, "ab_check", version=experiment.candidate_version, actor=actor, detail=detail)
            log.info("%s: A/B v%d vs v%d keeps running: %s", name, experiment.candidate_version,
                     experiment.control_version, "; ".join(decision.reasons))
            return StepResult("waiting", name, experiment.candidate_version, decision.reasons, decision.figures)
        promote = decision.action == "promote"
        registry.conclude_experiment(name, promote=promote, actor=actor, detail=detail)
        log.info("%s: candidate v%d %s: %s", name, experiment.candidate_version,
                 "promoted" if promote else "rolled back", "; ".join(decision.reasons))
        return StepResult("promoted" if promote else "rolled_back", name, experiment.candidate_version,
                          decision.reasons, decision.figures)

    versions = registry.list_versions(name)
    production = next((v.version for v in versions if PRODUCTION in v.aliases), None)
    eligible = [v for v in versions if v.gate_status == "passed" and not v.rejected
                and (production is None or v.version > production)]
    if not eligible:
        reason = "no version newer than production passed its evaluation gate"
        log.info("%s: %s", name, reason)
        return StepResult("nothing", name, None, (reason,))
    newest = max(eligible, key=lambda v: v.version)
    if production is None:
        registry.promote(name, newest.version, actor=actor, reason="first deployment: no production version yet")
        return StepResult("first_production", name, newest.version, ("no production version yet",))
    registry.start_experiment(name, newest.version, weight=policy.candidate_share, actor=actor,
                              reason="newest version that passed its evaluation gate")
    log.info("%s: A/B started, v%d at %.0f%% vs production v%d", name, newest.version,
             policy.candidate_share * 100, production)
    return StepResult("ab_started", name, newest.version,
                      (f"v{newest.version} at {policy.candidate_share:.0%} against production v{production}",))


def policy_from_json(text: str) -> DeploymentPolicy:
    """A policy from a JSON object of its fields; ``max_ab_duration`` in seconds."""
    import json

    try:
        data = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise DeploymentError(f"deployment policy is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DeploymentError("deployment policy must be a JSON object of field -> value")
    known = set(DeploymentPolicy.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise DeploymentError(f"unknown deployment policy fields: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    if "max_ab_duration" in data:
        data["max_ab_duration"] = timedelta(seconds=float(data["max_ab_duration"]))
    try:
        return DeploymentPolicy(**data)
    except TypeError as exc:
        raise DeploymentError(f"invalid deployment policy: {exc}") from exc


def read_evaluation(evaluation: Path) -> tuple[Path, dict[str, Any]]:
    """The evaluation JSON written by ``python -m ml.evaluate`` (a file, or a folder holding
    ``metrics.json``) and its path."""
    import json

    path = evaluation / "metrics.json" if evaluation.is_dir() else evaluation
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DeploymentError(f"cannot read the evaluation {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise DeploymentError(f"evaluation {path} is not a JSON object")
    return path, data


def headline_metrics(data: dict[str, Any]) -> dict[str, Any]:
    """The numbers at the top of an evaluation: what a version records as its metrics."""
    return {k: v for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _production(registry: ModelRegistry, name: str) -> int | None:
    try:
        return registry.aliases(name).get(PRODUCTION)
    except ModelNotFoundError:
        return None


def _gate(registry: ModelRegistry, name: str, evaluation: Path, gate_policy_json: str) -> tuple[Path, dict, GateDecision]:
    path, data = read_evaluation(evaluation)
    production = _production(registry, name)
    decision = decide_gate(data, production, gate_policy_from_json(gate_policy_json))
    log.info("%s: evaluation gate %s: %s", name, "passed" if decision.passed else "FAILED", "; ".join(decision.reasons))
    return path, data, decision


def run_deploy_command(registry: ModelRegistry, name: str, *, checkpoint: Path | None = None,
                       evaluation: Path | None = None, policy_json: str = "{}", gate_policy_json: str = "{}",
                       out: Path | None = None, actor: str | None = None) -> StepResult:
    """What ``tp model deploy`` (the ``deployment`` task's command) does: register the
    task's checkpoint once, with the verdict of its evaluation gate (pending without an
    evaluation), then advance the deployment cycle by one step, unless the checkpoint's gate
    failed: then nothing is deployed and the result is ``gate_failed`` with its reasons."""
    import json

    policy = policy_from_json(policy_json)
    gate_policy_from_json(gate_policy_json)  # a bad policy fails before anything is written
    candidate: ModelVersion | None = None
    if checkpoint is not None:
        candidate = registry.find_by_checkpoint(name, checkpoint)
        if candidate is None:
            if evaluation is None:
                candidate = registry.register(name, checkpoint, actor=actor)
            else:
                path, data, decision = _gate(registry, name, evaluation, gate_policy_json)
                candidate = registry.register(
                    name, checkpoint, metrics=headline_metrics(data), gate_status="passed" if decision.passed else "failed",
                    gate_report=str(path), gate_detail=decision.to_dict(), actor=actor)
        else:
            log.info("%s: checkpoint %s is already version %d (gate %s)", name, checkpoint, candidate.version,
                     candidate.gate_status)
            if candidate.gate_status == "pending" and evaluation is not None:
                path, _, decision = _gate(registry, name, evaluation, gate_policy_json)
                candidate = registry.record_gate(name, candidate.version, passed=decision.passed, report=str(path),
                                                 detail=decision.to_dict(), actor=actor)
    if candidate is not None and candidate.gate_status == "failed":
        reasons = tuple(candidate.gate_reasons) or ("its evaluation gate failed",)
        log.info("%s: v%d failed its evaluation gate; nothing is deployed", name, candidate.version)
        result = StepResult("gate_failed", name, candidate.version, reasons, (candidate.gate_detail or {}).get("figures", {}))
    else:
        result = deployment_step(registry, name, policy, actor=actor)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "deployment.json").write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True, default=str) + "\n")
    return result
