"""Per-series columns the data expectations run on, computed with NumPy.

Each sample's series (``(T, C)`` float32) is reduced to a few numbers: its length and
channel count, how many of its values are not finite, how many of its channels are flat,
how many of its values lie far outside the dataset's own robust range, and a hash of its
content. The expectations in ``expectations.py`` then run on these columns, one row per
sample, so a failed expectation names the samples at fault.

``summary_features`` gives the per-series statistics the cross-validated classifier of
``label_issues.py`` learns from when no model is given.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class RobustRange:
    """Per channel index: the median and the interquartile range of every finite value the
    dataset holds in that channel. ``k`` IQRs either side of the median bound the values a
    series is expected to hold; a channel whose IQR is 0 has no spread to measure against,
    and is left out of the outlier count."""

    median: np.ndarray  # (C_max,)
    iqr: np.ndarray  # (C_max,)
    k: float

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.median - self.k * self.iqr, self.median + self.k * self.iqr

    def as_dict(self) -> dict[str, object]:
        low, high = self.bounds()
        return {"k": self.k, "median": self.median.tolist(), "iqr": self.iqr.tolist(),
                "low": low.tolist(), "high": high.tolist()}


@dataclass(frozen=True)
class SeriesColumns:
    """One entry per sample, in the samples' order."""

    length: np.ndarray  # int64: time steps
    n_channels: np.ndarray  # int64
    non_finite: np.ndarray  # int64: NaN or infinite values
    flat_channels: np.ndarray  # int64: channels whose values do not vary
    outliers: np.ndarray  # int64: values outside the robust range
    series_hash: list[str]  # sha256 of shape and values
    robust_range: RobustRange


def robust_range(series: Sequence[np.ndarray], k: float) -> RobustRange:
    """The median and IQR of each channel index over all finite values of all series that
    have that channel."""
    width = max((s.shape[1] for s in series), default=0)
    median = np.full(width, np.nan)
    iqr = np.zeros(width)
    for channel in range(width):
        parts = [s[:, channel] for s in series if s.shape[1] > channel]
        values = np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)
        values = values[np.isfinite(values)]
        if values.size:
            q1, q2, q3 = np.percentile(values, [25, 50, 75])
            median[channel], iqr[channel] = q2, q3 - q1
    return RobustRange(median=median, iqr=iqr, k=float(k))


def series_hash(array: np.ndarray) -> str:
    """sha256 of the shape and the float32 values, with every NaN and -0.0 written one way,
    so that two series with the same readings hash alike."""
    values = np.ascontiguousarray(array, dtype=np.float32) + np.float32(0.0)  # -0.0 -> 0.0
    values[np.isnan(values)] = np.float32("nan")
    digest = hashlib.sha256(np.asarray(values.shape, dtype=np.int64).tobytes())
    digest.update(values.tobytes())
    return digest.hexdigest()


def series_columns(series: Sequence[np.ndarray], *, outlier_k: float, flat_tolerance: float) -> SeriesColumns:
    """The derived columns of ``series``.

    A channel is flat when the series has at least two finite values in it and their
    peak-to-peak range is at most ``flat_tolerance`` times the dataset's IQR of that channel
    (exactly constant when that IQR is 0). Outliers are finite values outside
    ``median ± outlier_k · IQR`` of their channel (see ``RobustRange``)."""
    n = len(series)
    rng = robust_range(series, outlier_k)
    low, high = rng.bounds()
    length = np.zeros(n, dtype=np.int64)
    channels = np.zeros(n, dtype=np.int64)
    non_finite = np.zeros(n, dtype=np.int64)
    flat = np.zeros(n, dtype=np.int64)
    outliers = np.zeros(n, dtype=np.int64)
    hashes: list[str] = []
    for i, array in enumerate(series):
        t, c = array.shape
        length[i], channels[i] = t, c
        finite = np.isfinite(array)
        non_finite[i] = int(array.size - finite.sum())
        counts = finite.sum(axis=0)
        values = array.astype(np.float64)
        with np.errstate(invalid="ignore"):  # inf - inf in channels without finite values
            spread = np.where(finite, values, -np.inf).max(axis=0) - np.where(finite, values, np.inf).min(axis=0)
        flat[i] = int(((counts >= 2) & (spread <= flat_tolerance * rng.iqr[:c])).sum())
        measured = rng.iqr[:c] > 0
        outside = finite & ((array < low[:c]) | (array > high[:c])) & measured
        outliers[i] = int(outside.sum())
        hashes.append(series_hash(array))
    return SeriesColumns(length=length, n_channels=channels, non_finite=non_finite, flat_channels=flat,
                         outliers=outliers, series_hash=hashes, robust_range=rng)


def summary_features(series: Sequence[np.ndarray], n_channels: int) -> np.ndarray:
    """Per sample, per channel: mean, standard deviation, minimum, maximum, the 10th, 25th,
    50th, 75th and 90th percentiles, and the mean absolute and standard deviation of the
    first differences; plus the log length. ``(N, 11 · n_channels + 1)``; non-finite values
    are ignored and a statistic with nothing to compute from is NaN. Every series must have
    ``n_channels`` channels."""
    rows = []
    for array in series:
        if array.shape[1] != n_channels:
            raise ValueError(f"summary_features: a series has {array.shape[1]} channels, expected {n_channels}")
        x = np.where(np.isfinite(array), array, np.nan).astype(np.float64)
        d = np.diff(x, axis=0) if x.shape[0] > 1 else np.full((1, n_channels), np.nan)
        with warnings.catch_warnings():  # all-NaN channels: the NaN is what the caller imputes
            warnings.simplefilter("ignore", RuntimeWarning)
            parts = [
                np.nanmean(x, 0), np.nanstd(x, 0), np.nanmin(x, 0), np.nanmax(x, 0),
                *np.nanpercentile(x, [10, 25, 50, 75, 90], axis=0),
                np.nanmean(np.abs(d), 0), np.nanstd(d, 0),
            ]
        rows.append(np.concatenate([*parts, [np.log(x.shape[0])]]))
    return np.vstack(rows) if rows else np.zeros((0, 11 * n_channels + 1))

