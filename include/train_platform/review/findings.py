"""What an annotation check (``tp dataset check --report DIR``) found about each sample.

The check writes its result as ``check.json`` in its report folder: the data checks it ran,
each with the sample ids it failed, and the likely mislabelled samples with the label the
check suggests. A review step names that folder (or the file); the page then shows, on each
sample, the checks it failed and the suggested label. The file is read as JSON only: the
review room does not import the quality room.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RESULT_FILE = "check.json"


@dataclass(frozen=True)
class Finding:
    """One thing the check says about one sample."""

    kind: str  # "check" (a failed data check) or "label" (a likely wrong label)
    name: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class CheckFindings:
    """A check report, by sample. ``error`` says why a named report could not be read."""

    source: str | None
    snapshot_id: int | None = None
    score: float | None = None
    passed: bool | None = None
    by_sample: dict[str, list[Finding]] = field(default_factory=dict)
    error: str | None = None

    def of(self, sample_id: str) -> list[Finding]:
        return self.by_sample.get(sample_id, [])

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "snapshot_id": self.snapshot_id, "score": self.score, "passed": self.passed,
                "samples_with_findings": len(self.by_sample), "error": self.error}


NO_REPORT = CheckFindings(source=None)


def read_findings(location: str | None) -> CheckFindings:
    """The findings of the report at ``location`` (a report folder or its ``check.json``).
    ``NO_REPORT`` when no report is named; a report that is missing or unreadable gives
    findings with ``error`` set, so the page says why instead of failing."""
    if not location:
        return NO_REPORT
    path = Path(location)
    if path.is_dir():
        path = path / RESULT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return _parse(str(path), data)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        log.warning("check report %s cannot be read: %s", path, exc)
        return CheckFindings(source=str(path), error=f"the check report {path} cannot be read: {exc}")


def _parse(source: str, data: dict[str, Any]) -> CheckFindings:
    by_sample: dict[str, list[Finding]] = {}
    for check in data.get("checks") or []:
        if check.get("success", True):
            continue
        name = str(check.get("name") or check.get("expectation") or "check")
        message = str(check.get("description") or name)
        for sample_id in check.get("sample_ids") or []:
            by_sample.setdefault(str(sample_id), []).append(Finding("check", name, message))
    for issue in data.get("label_issues") or []:
        sample_id = str(issue["sample_id"])
        confidence = issue.get("confidence")
        shown = f" ({float(confidence):.0%})" if isinstance(confidence, (int, float)) else ""
        message = f"label {issue.get('given')!r} looks wrong; the check suggests {issue.get('suggested')!r}{shown}"
        by_sample.setdefault(sample_id, []).append(Finding("label", "likely mislabelled", message))
    snapshot = data.get("snapshot_id")
    score = data.get("score")
    return CheckFindings(
        source=source,
        snapshot_id=int(snapshot) if isinstance(snapshot, int) else None,
        score=float(score) if isinstance(score, (int, float)) else None,
        passed=data.get("passed") if isinstance(data.get("passed"), bool) else None,
        by_sample=by_sample,
    )


__all__ = ["NO_REPORT", "CheckFindings", "Finding", "read_findings"]
