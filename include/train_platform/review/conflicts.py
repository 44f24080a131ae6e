"""Where reviewers disagree: samples of one review branch that two reviewers decided
differently (two different labels, or a label and a rejection). Skips decide nothing; an
accept and a correction to the same label agree."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

from train_platform.review.journal import Decision


def describe(decision: Decision) -> dict[str, Any]:
    """What one reviewer holds for a sample, as the page and errors show it."""
    return {"action": decision.action, "label": decision.label, "branch": decision.branch,
            "decided_at": decision.decided_at.isoformat()}


def disagreements(decisions: Iterable[Decision]) -> dict[str, dict[str, dict[str, Any]]]:
    """``sample_id -> {reviewer: what they hold}`` for every sample on which reviewers'
    decisions (skips left out) lead to different end states."""
    by_sample: dict[str, dict[str, Decision]] = defaultdict(dict)
    for decision in decisions:
        if decision.outcome is not None:
            by_sample[decision.sample_id][decision.reviewer] = decision
    out = {}
    for sample_id, by_reviewer in sorted(by_sample.items()):
        if len({d.outcome for d in by_reviewer.values()}) > 1:
            out[sample_id] = {reviewer: describe(d) for reviewer, d in sorted(by_reviewer.items())}
    return out


__all__ = ["describe", "disagreements"]
