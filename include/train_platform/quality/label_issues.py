"""Likely mislabelled samples, found with cleanlab from out-of-sample predicted probabilities.

The probabilities come from one of two places:

* **a registered model** (``--model model:NAME:ALIAS|vN``): the check runs the model's batch
  inference as a subprocess, ``python -m ml.serving.batch_inference --model REF --data
  tp://NAME@SNAPSHOT --out FILE.npz``, and reads ``sample_ids``, ``classes`` and
  ``probabilities`` from the file. The core never imports ``ml`` or torch; the command does
  that work in its own process. The probabilities are out of sample for every sample the
  model was not trained on (new labels since its training snapshot).
* **no model**: cross-validated predictions (stratified k-fold, ``cross_val_predict``) of a
  logistic regression on per-series summary statistics (``features.summary_features``).
  Why this model: every prediction is made by a model that did not see that sample, which
  is what cleanlab needs; the statistics take series of any length; logistic regression on
  standardised features trains in a fraction of a second per fold and its probabilities are
  smooth, so cleanlab's per-class thresholds are meaningful. On BasicMotions with 8 of 80
  labels flipped (five seeds), a 300-tree random forest on the same features found fewer of
  them (mean recall 0.78 against 0.88, precision 1.0 against 0.95) and took longer; aeon's
  MiniRocket needs equal-length series.

``cleanlab.filter.find_label_issues`` then flags the samples whose given label is unlikely
under the probabilities (pruning by the estimated noise rate), and
``cleanlab.rank.get_label_quality_scores`` ranks them (self-confidence: the probability of
the given label).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from train_platform.quality.exceptions import ModelPredictionsError
from train_platform.quality.features import summary_features

log = logging.getLogger(__name__)

# Folds of the cross-validation; classes with fewer labelled samples than this are left out.
FOLDS = 5
# Seed of the fold split, so a check of one snapshot always gives the same answer.
SEED = 0


@dataclass(frozen=True)
class LabelIssue:
    sample_id: str
    given: str
    suggested: str
    confidence: float  # the predicted probability of `suggested`
    quality: float  # the predicted probability of `given` (cleanlab's self-confidence)

    def as_dict(self) -> dict[str, Any]:
        return {"sample_id": self.sample_id, "given": self.given, "suggested": self.suggested,
                "confidence": round(self.confidence, 4), "quality": round(self.quality, 4)}


@dataclass(frozen=True)
class Probabilities:
    """Out-of-sample class probabilities for some samples: ``rows`` are positions in the
    checked samples, ``probabilities[i]`` belongs to ``rows[i]``."""

    rows: np.ndarray  # int
    classes: tuple[str, ...]
    probabilities: np.ndarray  # (len(rows), len(classes))
    source: str  # "cross-validation" or the model reference


@dataclass(frozen=True)
class LabelIssueResult:
    issues: list[LabelIssue]
    considered: int  # labelled samples whose label was judged
    source: str | None
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> samples left out
    reason: str | None = None  # why nothing was judged, when nothing was

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "considered": self.considered, "found": len(self.issues),
                "skipped": dict(self.skipped), "reason": self.reason}


def cross_validated_probabilities(series: Sequence[np.ndarray], labels: Sequence[str | None],
                                  candidates: Sequence[int], n_channels: int) -> tuple[Probabilities | None, dict[str, int], str | None]:
    """Out-of-fold probabilities for the samples at ``candidates`` (labelled, in the label
    set), from a logistic regression on summary statistics. Samples with another channel
    count than ``n_channels``, and classes with fewer than ``FOLDS`` samples, are left out
    (counted in the returned ``skipped``). ``None`` (with the reason) when fewer than two
    classes remain."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    skipped: Counter[str] = Counter()
    rows = []
    for row in candidates:
        if series[row].shape[1] != n_channels:
            skipped["other channel count"] += 1
        else:
            rows.append(row)
    counts = Counter(labels[r] for r in rows)
    small = {label for label, count in counts.items() if count < FOLDS}
    if small:
        skipped[f"class with fewer than {FOLDS} samples"] += sum(counts[label] for label in small)
        rows = [r for r in rows if labels[r] not in small]
    classes = tuple(sorted({str(labels[r]) for r in rows}))
    if len(classes) < 2:
        return None, dict(skipped), f"fewer than two classes with at least {FOLDS} labelled samples each"
    index = {label: i for i, label in enumerate(classes)}
    y = np.array([index[str(labels[r])] for r in rows])
    x = summary_features([series[r] for r in rows], n_channels)
    model = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler(),
                          LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=SEED)
    probabilities = cross_val_predict(model, x, y, cv=folds, method="predict_proba", n_jobs=1)
    return Probabilities(rows=np.array(rows, dtype=np.int64), classes=classes, probabilities=probabilities,
                         source="cross-validation"), dict(skipped), None


def model_probabilities(model_ref: str, data_ref: str, ids: Sequence[str], candidates: Sequence[int], *,
                        user: str, timeout_s: float | None = None) -> tuple[Probabilities, dict[str, int]]:
    """Probabilities of the registered model ``model_ref`` for the samples at ``candidates``,
    from its batch inference on ``data_ref`` (run as a subprocess, written to a temporary
    ``.npz`` that is deleted afterwards). Samples whose given label is not one of the model's
    classes cannot be judged by it and are left out (counted in ``skipped``)."""
    with tempfile.TemporaryDirectory(prefix="tp-check-") as folder:
        out = Path(folder) / "predictions.npz"
        command = [sys.executable, "-m", "ml.serving.batch_inference", "--model", model_ref, "--data", data_ref,
                   "--out", str(out)]
        log.info("scoring %s with %s: %s", data_ref, model_ref, " ".join(command))
        env = {**os.environ, "TP_USER": user}
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise ModelPredictionsError(f"batch inference of {model_ref} on {data_ref} ran past {timeout_s} s") from exc
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise ModelPredictionsError(f"batch inference of {model_ref} on {data_ref} exited with code "
                                        f"{done.returncode}: {' | '.join(tail) or '(no output)'}")
        if not out.is_file():
            raise ModelPredictionsError(f"batch inference of {model_ref} on {data_ref} wrote no {out.name}")
        try:
            with np.load(out, allow_pickle=False) as data:
                predicted_ids = [str(i) for i in data["sample_ids"]]
                classes = tuple(str(c) for c in data["classes"])
                probabilities = np.asarray(data["probabilities"], dtype=np.float64)
        except (KeyError, ValueError, OSError) as exc:
            raise ModelPredictionsError(f"{model_ref}: predictions file of {data_ref} is not an .npz with "
                                        f"sample_ids, classes and probabilities: {exc}") from exc
    if probabilities.shape != (len(predicted_ids), len(classes)):
        raise ModelPredictionsError(f"{model_ref}: probabilities have shape {probabilities.shape}, expected "
                                    f"({len(predicted_ids)}, {len(classes)}) for its sample_ids and classes")
    position = {sample_id: i for i, sample_id in enumerate(predicted_ids)}
    missing = [ids[r] for r in candidates if ids[r] not in position]
    if missing:
        raise ModelPredictionsError(f"{model_ref}: no prediction for {len(missing)} sample(s) of {data_ref}, "
                                    f"e.g. {', '.join(missing[:5])}")
    return Probabilities(rows=np.asarray(list(candidates), dtype=np.int64), classes=classes,
                         probabilities=probabilities[[position[ids[r]] for r in candidates]],
                         source=model_ref), {}


def find_issues(probs: Probabilities, ids: Sequence[str], labels: Sequence[str | None],
                skipped: dict[str, int] | None = None) -> LabelIssueResult:
    """The likely mislabelled samples among ``probs.rows``, most likely first (lowest
    probability of the given label). Rows whose label is not one of ``probs.classes`` are
    left out and counted."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    skipped = dict(skipped or {})
    index = {label: i for i, label in enumerate(probs.classes)}
    keep = np.array([labels[r] in index for r in probs.rows], dtype=bool)
    if (~keep).any():
        skipped["label not among the model's classes"] = skipped.get("label not among the model's classes", 0) + int((~keep).sum())
    rows = probs.rows[keep]
    p = probs.probabilities[keep]
    given = np.array([index[str(labels[r])] for r in rows], dtype=np.int64)
    if len(rows) == 0 or len(set(given.tolist())) < 2:
        return LabelIssueResult(issues=[], considered=0, source=probs.source, skipped=skipped,
                                reason="fewer than two classes among the labelled samples")
    p = np.clip(p, 0.0, None)
    p = p / np.where(p.sum(axis=1, keepdims=True) > 0, p.sum(axis=1, keepdims=True), 1.0)
    flagged = find_label_issues(labels=given, pred_probs=p, filter_by="prune_by_noise_rate", n_jobs=1)
    quality = get_label_quality_scores(given, p, method="self_confidence")
    issues = []
    for i in np.flatnonzero(flagged):
        suggested = int(np.argmax(p[i]))
        issues.append(LabelIssue(sample_id=ids[int(rows[i])], given=probs.classes[given[i]],
                                 suggested=probs.classes[suggested], confidence=float(p[i, suggested]),
                                 quality=float(quality[i])))
    issues.sort(key=lambda issue: (issue.quality, issue.sample_id))
    log.info("label issues (%s): %d of %d labelled samples", probs.source, len(issues), len(rows))
    return LabelIssueResult(issues=issues, considered=len(rows), source=probs.source, skipped=skipped)
