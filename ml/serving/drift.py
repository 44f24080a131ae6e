"""Input drift against the training data: PSI per channel.

The checkpoint's ``drift_reference`` holds, per channel, the interior cut points of ten
quantile buckets of the training values and the share of values in each. Served inputs are
counted into the same buckets; PSI = sum((a - e) * ln(a / e)) over buckets, with a small
floor on shares so an empty bucket does not make it infinite. Counts are halved whenever a
channel has seen more than ``window`` values, so the figure follows recent traffic.

The request path only queues its input (``observe``); the queued inputs are counted in one
pass per channel when PSI is read (``values``, every ``TP_SERVE_DRIFT_EVERY`` requests), so
the per-request cost is a list append rather than a few numpy calls per channel.
"""

from __future__ import annotations

import threading

import numpy as np

# Shares below this are floored: ln(0) would make one empty bucket dominate.
_EPS = 1e-4


def psi(actual: np.ndarray, expected: np.ndarray) -> float:
    a = np.maximum(actual / max(actual.sum(), 1e-12), _EPS)
    e = np.maximum(np.asarray(expected, dtype=np.float64), _EPS)
    return float(np.sum((a - e) * np.log(a / e)))


class DriftMonitor:
    def __init__(self, reference: dict | None, *, window: int):
        self.window = window
        self._lock = threading.Lock()
        self.channels = []
        for channel in (reference or {}).get("channels", []):
            edges = np.asarray(channel["edges"], dtype=np.float64)
            self.channels.append((edges, np.asarray(channel["proportions"], dtype=np.float64)))
        self._counts = [np.zeros(len(e) + 1, dtype=np.float64) for e, _ in self.channels]
        self._pending: list[np.ndarray] = []

    @property
    def enabled(self) -> bool:
        return bool(self.channels)

    def observe(self, sensor: np.ndarray) -> None:
        """Queues ``sensor`` (T, C) in raw units, as validated; counted at the next ``values``."""
        if not self.channels or sensor.ndim != 2 or sensor.shape[1] != len(self.channels):
            return
        with self._lock:
            self._pending.append(sensor)

    def _count_pending(self) -> None:
        # Under the lock. One searchsorted and one bincount per channel for all queued inputs.
        if not self._pending:
            return
        values = np.concatenate(self._pending, axis=0)
        self._pending = []
        for c, (edges, _) in enumerate(self.channels):
            counts = self._counts[c]
            counts += np.bincount(np.searchsorted(edges, values[:, c], side="left"), minlength=len(counts))
            while counts.sum() > self.window:
                counts *= 0.5

    def values(self) -> list[float]:
        with self._lock:
            self._count_pending()
            return [psi(counts, expected) if counts.sum() else 0.0
                    for counts, (_, expected) in zip(self._counts, self.channels)]
