"""Season length of forecasting data, read from the training series' autocorrelation.

A forecasting model starts from the seasonal-naive forecast of this period (its linear skip
is initialised to repeat the last season of the context) and learns what to add to it, so an
untrained or barely trained model is never worse than the classical floor baseline.
"""

from __future__ import annotations

import numpy as np

# A lag is a season when the mean autocorrelation of the differenced series there reaches
# both this and about two standard errors of white noise (2 / sqrt(steps)); without one the
# period is 1 (the naive forecast: the last value).
MIN_AUTOCORRELATION = 0.2
# Multiples of a season correlate about as well as the season itself: the shortest lag within
# this fraction of the best one is taken.
HARMONIC_TOLERANCE = 0.9


def _autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray:
    """(max_lag + 1,) autocorrelation of one 1-d series at lags 0..max_lag (biased estimate)."""
    x = x - x.mean()
    denom = float(x @ x)
    if denom <= 0:
        return np.zeros(max_lag + 1)
    return np.asarray([float(x[: len(x) - k] @ x[k:]) / denom for k in range(max_lag + 1)])


def detect_period(series: list[np.ndarray], max_period: int) -> int:
    """The season length of ``series``: the shortest local peak of the mean autocorrelation
    of the first differences (differencing removes a trend, which would otherwise make lag 1
    win) at lags 2..``max_period`` that is significant and within ``HARMONIC_TOLERANCE`` of
    the highest, averaged over every series and channel long enough to show two periods,
    then halved while a significant peak lies at half of it; 1 when no lag qualifies."""
    acfs, steps = [], []
    for x in series:
        x = np.asarray(x, dtype=np.float64)
        x = x.reshape(len(x), -1)
        for c in range(x.shape[1]):
            d = np.diff(x[:, c])
            top = min(max_period, len(d) // 2)
            if top < 2:
                continue
            acf = np.zeros(max_period + 1)
            acf[: top + 1] = _autocorrelation(d, top)
            acfs.append(acf)
            steps.append(len(d))
    if not acfs or max_period < 2:
        return 1
    mean = np.mean(acfs, axis=0)
    floor = max(MIN_AUTOCORRELATION, 2.0 / np.sqrt(np.median(steps)))
    peaks = [k for k in range(2, max_period + 1)
             if mean[k] >= floor and mean[k] >= mean[k - 1] and (k == max_period or mean[k] >= mean[k + 1])]
    if not peaks:
        return 1
    best = max(mean[k] for k in peaks)
    period = next(k for k in peaks if mean[k] >= HARMONIC_TOLERANCE * best)
    # A season p also shows at 2p; when the series' cycle is not a whole number of steps
    # (the lynx's ~9.6 years) the peak at about 2p can beat both lags next to p by more than
    # the tolerance. A significant peak at half the chosen lag (give or take a step) means
    # the chosen one is that multiple.
    while True:
        half = [k for k in peaks if abs(2 * k - period) <= 1]
        if not half:
            return period
        period = max(half, key=lambda k: mean[k])
