"""The result of an annotation check: its score, its JSON form, and its report folder.

**Score.** ``share of samples that pass every data check × (1 − share of judged labels that
are likely wrong)``: a sample failing any expectation counts once however many it fails,
and the label-issue share is over the labelled samples cleanlab judged (the factor is 1
when none could be judged). The check passes when the score is at least ``min_score``.

**Report folder** (``--report DIR``): ``index.html`` and the pages under it are the Great
Expectations Data Docs of the validation; ``check.json`` is the JSON form of the result. The
folder is built beside ``DIR`` and renamed into place when complete, so it is never half
written; a folder already there is replaced only when it is empty or holds an earlier
report (a ``check.json``).
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from train_platform.quality.agreement import Agreement
from train_platform.quality.exceptions import QualityInputError
from train_platform.quality.expectations import CheckResult
from train_platform.quality.label_issues import LabelIssueResult

RESULT_FILE = "check.json"
INDEX_FILE = "index.html"


def score(samples: int, checks: list[CheckResult], labels: LabelIssueResult) -> float:
    """The score of the module's docstring, in [0, 1]."""
    if samples == 0:
        return 0.0
    failing = set()
    for check in checks:
        failing.update(check.rows)
    passing_share = (samples - len(failing)) / samples
    issue_share = len(labels.issues) / labels.considered if labels.considered else 0.0
    return passing_share * (1.0 - issue_share)


@dataclass(frozen=True)
class QualityReport:
    dataset: str
    ref: str
    snapshot_id: int
    samples: int
    score: float
    min_score: float
    checks: list[CheckResult]
    labels: LabelIssueResult
    agreement: Agreement
    bounds: dict[str, Any]
    report: Path | None = None

    @property
    def passed(self) -> bool:
        return self.score >= self.min_score

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset, "ref": self.ref, "snapshot_id": self.snapshot_id, "samples": self.samples,
            "score": round(self.score, 4), "passed": self.passed, "min_score": self.min_score,
            "checks": [check.as_dict() for check in self.checks],
            "label_issues": [issue.as_dict() for issue in self.labels.issues],
            "label_check": self.labels.as_dict(),
            "agreement": self.agreement.as_dict(),
            "bounds": self.bounds,
            "report": None if self.report is None else str(self.report / INDEX_FILE),
        }

    def summary(self) -> str:
        """A few lines for people: the score, each failed check, the label issues."""
        verdict = "passed" if self.passed else f"FAILED (below {self.min_score})"
        lines = [f"{self.dataset}@{self.ref} (snapshot {self.snapshot_id}), {self.samples} samples: "
                 f"score {self.score:.3f}, {verdict}"]
        for check in self.checks:
            shown = ", ".join(check.sample_ids[:5]) + (f" and {len(check.sample_ids) - 5} more" if len(check.sample_ids) > 5 else "")
            lines.append(f"  {'ok  ' if check.success else 'FAIL'} {check.name}" + ("" if check.success else f": {shown}"))
        labels = self.labels
        if labels.considered:
            lines.append(f"  label issues ({labels.source}): {len(labels.issues)} of {labels.considered} labelled samples")
            lines += [f"    {i.sample_id}: {i.given} -> {i.suggested} ({i.confidence:.2f})" for i in labels.issues[:10]]
        else:
            lines.append(f"  label issues: not judged ({labels.reason})")
        a = self.agreement
        if a.method:
            kappa = "undefined" if a.kappa is None else f"{a.kappa:.3f}"
            method = {"cohen": "Cohen's", "fleiss": "Fleiss'"}[a.method]
            lines.append(f"  agreement ({method} kappa, {len(a.annotators)} annotators, {a.samples} samples): "
                         f"{kappa}; {len(a.disagreements)} sample(s) disagreed on")
        if self.report is not None:
            lines.append(f"  report: {self.report / INDEX_FILE}")
        return "\n".join(lines)


def check_report_dir(folder: Path) -> Path:
    """``folder`` as the report's destination, or ``QualityInputError`` when a report may
    not go there: a file, or a folder holding files that are not an earlier report."""
    folder = Path(folder).absolute()
    if folder.exists() and not folder.is_dir():
        raise QualityInputError(f"--report {folder}: exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / RESULT_FILE).is_file():
        raise QualityInputError(f"--report {folder}: holds files that are not an earlier report; "
                                f"give an empty or new folder")
    if not folder.parent.is_dir():
        raise QualityInputError(f"--report {folder}: its parent folder {folder.parent} does not exist")
    return folder


def staging_dir(folder: Path) -> Path:
    """A fresh folder beside ``folder`` to build the report in."""
    staging = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    return staging


def publish(report: QualityReport, staging: Path, folder: Path) -> None:
    """Write ``check.json`` into ``staging`` and rename it to ``folder`` (replacing an
    earlier report there)."""
    (staging / RESULT_FILE).write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    old = None
    if folder.exists():
        old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
        folder.rename(old)
    staging.rename(folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
