"""Agreement between annotators, where samples carry labels from several of them.

**Where several annotations of one sample live.** A row of a snapshot holds one annotation
(``label``, ``label_source``, ``annotator``: the user who last changed it), and the audit
log records who labelled how many samples on which branch, not the labels. Annotators label
on their own branches (``tp dataset label NAME ...`` writes to ``user/<name>``, or to a
named branch), and a branch keeps its labels after it is merged. So the several
annotations of one sample are the labels the dataset's branches hold for it: ``collect``
reads the annotation columns at every branch head (``main`` included) and keeps, for each
sample of the checked snapshot and each annotator, that annotator's human label
(``label_source`` ``human``) from the branch whose head is newest. Imported and model
labels are no annotator's judgement and are left out.

**Which kappa.** With exactly two annotators, Cohen's kappa over the samples both labelled
(scikit-learn). With three or more, Fleiss' kappa (statsmodels), which needs the same
number of ratings per sample: it is computed over the samples rated by the most common
number of annotators (at least two; the larger number on a tie), and Cohen's kappa of every
pair of annotators sharing at least two samples is listed besides. Kappa is undefined
(``None``) when chance agreement is 1, i.e. every rating is the same one label.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from train_platform.datasets.dataset import Dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Agreement:
    method: str | None  # "cohen", "fleiss", or None when no sample has two annotators' labels
    kappa: float | None
    annotators: tuple[str, ...]
    samples: int  # samples the kappa is computed over
    raters: int | None  # annotators per sample in those samples
    annotated_by_several: int  # samples holding labels of two or more annotators
    disagreements: tuple[str, ...]  # samples whose annotators gave different labels
    pairs: list[dict[str, Any]] = field(default_factory=list)  # Fleiss only: Cohen's kappa per pair
    reason: str | None = None  # why kappa is None

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "kappa": None if self.kappa is None else round(self.kappa, 4),
                "annotators": list(self.annotators), "samples": self.samples, "raters": self.raters,
                "annotated_by_several": self.annotated_by_several, "disagreements": list(self.disagreements),
                "pairs": self.pairs, "reason": self.reason}


def collect(dataset: Dataset, sample_ids: set[str]) -> dict[str, dict[str, str]]:
    """``sample_id -> {annotator: label}`` from the human labels at every branch head of
    ``dataset`` (see the module's docstring), for the samples in ``sample_ids``."""
    heads = []
    for branch in dataset.branches():
        snapshot = dataset.resolve(branch)
        heads.append((snapshot.timestamp_ms, branch, snapshot.snapshot_id))
    labels: dict[str, dict[str, str]] = {}
    # Oldest head first: a newer branch's label of the same annotator overwrites an older one.
    for _, branch, snapshot_id in sorted(heads):
        table = dataset.read(snapshot_id, columns=("sample_id", "label", "label_source", "annotator"))
        for row in table.to_pylist():
            if (row["label_source"] == "human" and row["annotator"] and row["label"] is not None
                    and row["sample_id"] in sample_ids):
                labels.setdefault(row["sample_id"], {})[row["annotator"]] = row["label"]
    log.debug("annotations of %s from %d branch heads: %d samples", dataset.name, len(heads), len(labels))
    return labels


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def cohen(first: list[str], second: list[str]) -> float | None:
    """Cohen's kappa of two aligned label lists; ``None`` where it is undefined."""
    from sklearn.metrics import cohen_kappa_score

    if len(set(first) | set(second)) < 2:  # chance agreement 1: kappa is 0/0
        return None
    return _finite(cohen_kappa_score(first, second))


def fleiss(ratings: list[list[str]]) -> float | None:
    """Fleiss' kappa of samples rated by the same number of annotators (each item: the
    labels one sample got); ``None`` where it is undefined."""
    import numpy as np
    from statsmodels.stats.inter_rater import fleiss_kappa

    categories = sorted({label for labels in ratings for label in labels})
    if len(categories) < 2:  # chance agreement 1: kappa is 0/0
        return None
    index = {label: i for i, label in enumerate(categories)}
    table = np.zeros((len(ratings), len(categories)))
    for row, labels in enumerate(ratings):
        for label in labels:
            table[row, index[label]] += 1
    return _finite(fleiss_kappa(table, method="fleiss"))


def agreement(labels: Mapping[str, Mapping[str, str]]) -> Agreement:
    """The agreement of ``sample_id -> {annotator: label}`` (see the module's docstring)."""
    several = {sid: dict(by) for sid, by in labels.items() if len(by) >= 2}
    annotators = tuple(sorted({a for by in several.values() for a in by}))
    disagreements = tuple(sorted(sid for sid, by in several.items() if len(set(by.values())) > 1))
    if not several:
        return Agreement(method=None, kappa=None, annotators=annotators, samples=0, raters=None, annotated_by_several=0,
                         disagreements=(), reason="no sample carries labels of two or more annotators")
    if len(annotators) == 2:
        a, b = annotators
        shared = sorted(several)
        kappa = cohen([several[s][a] for s in shared], [several[s][b] for s in shared])
        return Agreement(method="cohen", kappa=kappa, annotators=annotators, samples=len(shared), raters=2,
                         annotated_by_several=len(several), disagreements=disagreements,
                         reason=None if kappa is not None else "undefined: every rating is the same label")
    counts = Counter(len(by) for by in several.values())
    raters = max(counts, key=lambda m: (counts[m], m))
    rated = sorted(sid for sid, by in several.items() if len(by) == raters)
    kappa = fleiss([list(several[s].values()) for s in rated])
    pairs = []
    for a, b in combinations(annotators, 2):
        shared = sorted(s for s, by in several.items() if a in by and b in by)
        if len(shared) >= 2:
            pairs.append({"annotators": [a, b], "samples": len(shared),
                          "kappa": _round(cohen([several[s][a] for s in shared], [several[s][b] for s in shared]))})
    reason = None if kappa is not None else "undefined: every rating is the same label"
    return Agreement(method="fleiss", kappa=kappa, annotators=annotators, samples=len(rated), raters=raters,
                     annotated_by_several=len(several), disagreements=disagreements, pairs=pairs, reason=reason)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
