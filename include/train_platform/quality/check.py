"""``check_dataset``: the annotation check of one dataset snapshot, end to end.

It reads the samples at ``NAME@REF`` (resolved once to a snapshot), computes the per-series
columns with NumPy, runs the data expectations in Great Expectations, looks for likely
mislabelled samples with cleanlab, measures the agreement between annotators, scores the
result and, when asked, writes the report folder. It only reads the dataset: no snapshot,
ref or audit row is written.

Every input is checked before any work: an unknown dataset or ref, a ref holding no
samples, an unknown model or a report folder that cannot take a report raise
``QualityInputError`` (exit code 2) and nothing is written.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from train_platform.quality import agreement as agreement_mod
from train_platform.quality.exceptions import QualityInputError
from train_platform.quality.expectations import Bounds, run_expectations
from train_platform.quality.features import series_columns
from train_platform.quality.label_issues import (
    LabelIssueResult,
    cross_validated_probabilities,
    find_issues,
    model_probabilities,
)
from train_platform.quality.report import QualityReport, check_report_dir, publish, score, staging_dir
from train_platform.settings import Settings, get_settings

log = logging.getLogger(__name__)

# A check passes at this score by default: at most about one sample in twenty failing a data
# check or carrying a likely wrong label. On clean BasicMotions (80 samples) the score is 1.0
# or one false label issue below it; with 10% of the labels flipped it is about 0.9.
DEFAULT_MIN_SCORE = 0.95


@dataclass(frozen=True)
class CheckConfig:
    """What a check accepts. Bounds left ``None`` are derived from the snapshot itself.

    * ``labels``: the dataset's label set; by default every label that at least
      ``min_label_count`` samples carry, so a label given to a single sample (a typo, a
      stray class) fails ``labels_in_label_set``.
    * ``min_length``/``max_length``: by default the median length divided and multiplied by
      ``length_ratio`` (and never below 2 steps).
    * ``channels``: by default the most common channel count.
    * ``outlier_k``: a value is an outlier beyond median ± ``outlier_k`` · IQR of its channel
      over the whole snapshot. 50 because sensor data is heavy tailed: in BasicMotions,
      genuine badminton and running swings reach 32 IQRs from the gyroscope median, while a
      glitch (a saturated or corrupted reading) lies orders of magnitude out.
    * ``flat_tolerance``: a channel is flat when its peak-to-peak range is at most this
      fraction of the channel's IQR over the snapshot.
    """

    model: str | None = None
    min_score: float = DEFAULT_MIN_SCORE
    labels: tuple[str, ...] | None = None
    min_label_count: int = 2
    min_length: int | None = None
    max_length: int | None = None
    length_ratio: float = 4.0
    channels: int | None = None
    outlier_k: float = 50.0
    flat_tolerance: float = 1e-6
    model_timeout_s: float | None = 3600.0

    def __post_init__(self) -> None:
        problems = []
        if not (0.0 <= self.min_score <= 1.0):
            problems.append(f"min_score must be within [0, 1], got {self.min_score}")
        if self.min_label_count < 1:
            problems.append(f"min_label_count must be at least 1, got {self.min_label_count}")
        for name in ("min_length", "max_length", "channels"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name} must be at least 1, got {value}")
        if self.min_length is not None and self.max_length is not None and self.min_length > self.max_length:
            problems.append(f"min_length {self.min_length} is above max_length {self.max_length}")
        if not (self.length_ratio >= 1.0):
            problems.append(f"length_ratio must be at least 1, got {self.length_ratio}")
        if not (self.outlier_k > 0 and math.isfinite(self.outlier_k)):
            problems.append(f"outlier_k must be a positive number, got {self.outlier_k}")
        if not (self.flat_tolerance >= 0):
            problems.append(f"flat_tolerance must not be negative, got {self.flat_tolerance}")
        if self.labels is not None and not self.labels:
            problems.append("labels, when given, must name at least one label")
        if problems:
            raise QualityInputError("annotation check: " + "; ".join(problems))


def _open(text: str, user: str, settings: Settings) -> tuple[Any, int, str]:
    """The dataset, the snapshot id ``text`` (``NAME@REF``) resolves to, and the ref."""
    from train_platform.datasets.dataset import open_dataset
    from train_platform.datasets.exceptions import DatasetError, DatasetNotFoundError, PermissionDeniedError, RefNotFoundError
    from train_platform.datasets.refs import MAIN, parse_ref

    try:
        name, ref = parse_ref(text)
        dataset = open_dataset(name, user=user, settings=settings)
        snapshot = dataset.resolve(ref or MAIN)
    except PermissionDeniedError:
        raise
    except (DatasetNotFoundError, RefNotFoundError) as exc:
        raise QualityInputError(f"{text}: {exc}") from exc
    except DatasetError as exc:  # a malformed NAME@REF
        raise QualityInputError(str(exc)) from exc
    return dataset, snapshot.snapshot_id, ref or MAIN


def _pin_model(text: str, settings: Settings) -> str:
    """``text`` as the reference of the one version it names now, ``model:NAME:vN``, so the
    version cannot move while the check runs."""
    from train_platform.registry.exceptions import RegistryError
    from train_platform.registry.model_registry import ModelRegistry
    from train_platform.registry.refs import ModelRef

    try:
        ref = ModelRef.parse(text)
        found = ModelRegistry(settings).get(ref.name, ref.version if ref.version is not None else ref.alias)
    except RegistryError as exc:
        raise QualityInputError(f"--model {text}: {exc}") from exc
    return str(ModelRef(ref.name, version=found.version))


def _bounds(config: CheckConfig, labels: Sequence[str | None], lengths: np.ndarray, channels: np.ndarray) -> Bounds:
    from train_platform.datasets.schema import LABEL_SOURCES, STATUSES

    if config.labels is not None:
        label_set = tuple(sorted(set(config.labels)))
    else:
        counts = Counter(label for label in labels if label is not None)
        label_set = tuple(sorted(label for label, count in counts.items() if count >= config.min_label_count))
    median = float(np.median(lengths))
    min_length = config.min_length if config.min_length is not None else max(2, math.floor(median / config.length_ratio))
    max_length = config.max_length if config.max_length is not None else max(min_length, math.ceil(median * config.length_ratio))
    if config.channels is not None:
        expected = config.channels
    else:
        counts = Counter(channels.tolist())
        expected = max(counts, key=lambda c: (counts[c], -c))
    return Bounds(label_set=label_set, statuses=STATUSES, label_sources=LABEL_SOURCES,
                  min_length=int(min_length), max_length=int(max_length), channels=(int(expected),))


def _frame(samples: Any, columns: Any) -> Any:
    import pandas as pd

    hashes = columns.series_hash
    distinct: dict[str, set[str]] = {}
    for digest, label in zip(hashes, samples.labels):
        distinct.setdefault(digest, set())
        if label is not None:
            distinct[digest].add(label)
    return pd.DataFrame({
        "sample_id": samples.ids,
        "label": pd.Series(samples.labels, dtype="object"),
        "status": pd.Series(samples.status, dtype="object"),
        "label_source": pd.Series(samples.label_source, dtype="object"),
        "length": columns.length,
        "n_channels": columns.n_channels,
        "non_finite": columns.non_finite,
        "flat_channels": columns.flat_channels,
        "outliers": columns.outliers,
        "series_hash": hashes,
        "labels_per_series": [len(distinct[d]) for d in hashes],
    })


def check_dataset(text: str, config: CheckConfig = CheckConfig(), *, user: str | None = None,
                  report_dir: Path | None = None, settings: Settings | None = None) -> QualityReport:
    """Check the samples at ``text`` (``NAME@REF``; REF defaults to main) and return the
    result; with ``report_dir``, also write the report folder (see ``report.py``)."""
    from train_platform.datasets.reader import read_samples

    settings = settings or get_settings()
    user = user or settings.user
    dataset, snapshot_id, ref = _open(text, user, settings)
    model = _pin_model(config.model, settings) if config.model else None
    folder = check_report_dir(report_dir) if report_dir is not None else None

    pinned = f"tp://{dataset.name}@{snapshot_id}"
    samples = read_samples(pinned, user=user, settings=settings)
    if len(samples) == 0:
        raise QualityInputError(f"{text}: resolves to snapshot {snapshot_id}, which holds no samples")
    log.info("checking %s@%s: snapshot %d, %d samples", dataset.name, ref, snapshot_id, len(samples))

    columns = series_columns(samples.series, outlier_k=config.outlier_k, flat_tolerance=config.flat_tolerance)
    bounds = _bounds(config, samples.labels, columns.length, columns.n_channels)
    staging = staging_dir(folder) if folder is not None else None
    try:
        checks = run_expectations(_frame(samples, columns), bounds, title=f"{dataset.name}@{ref}",
                                  docs_dir=staging)
        labels = _label_issues(samples, bounds, model, pinned, user, config)
        agreement = agreement_mod.agreement(agreement_mod.collect(dataset, set(samples.ids)))
        result = QualityReport(
            dataset=dataset.name, ref=ref, snapshot_id=snapshot_id, samples=len(samples),
            score=score(len(samples), checks, labels), min_score=config.min_score, checks=checks, labels=labels,
            agreement=agreement, report=folder,
            bounds={"label_set": list(bounds.label_set), "min_length": bounds.min_length,
                    "max_length": bounds.max_length, "channels": list(bounds.channels),
                    "robust_range": columns.robust_range.as_dict(), "flat_tolerance": config.flat_tolerance},
        )
        if staging is not None and folder is not None:
            publish(result, staging, folder)
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.info("%s@%s: score %.3f (%s)", dataset.name, ref, result.score, "passed" if result.passed else "failed")
    return result


def _label_issues(samples: Any, bounds: Bounds, model: str | None, data_ref: str, user: str,
                  config: CheckConfig) -> LabelIssueResult:
    label_set = set(bounds.label_set)
    candidates = [i for i, label in enumerate(samples.labels) if label is not None and label in label_set]
    if model is not None:
        probs, skipped = model_probabilities(model, data_ref, samples.ids, candidates, user=user,
                                             timeout_s=config.model_timeout_s)
    else:
        probs, skipped, reason = cross_validated_probabilities(samples.series, samples.labels, candidates,
                                                               bounds.channels[0])
        if probs is None:
            return LabelIssueResult(issues=[], considered=0, source="cross-validation", skipped=skipped, reason=reason)
    return find_issues(probs, samples.ids, samples.labels, skipped)
