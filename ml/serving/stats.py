"""Live figures per model version, flushed to the registry for the deployment step.

The request path only adds numbers under a lock; a background task swaps the windows out
and writes them (one row per version per flush) from a worker thread.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

from train_platform.registry import LiveStats
from train_platform.registry.schema import LATENCY_BUCKETS_MS


@dataclass
class _Window:
    requests: int = 0
    errors: int = 0
    latency_ms_sum: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
    labelled: int = 0
    correct: int = 0


class StatsCollector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[int, _Window] = {}

    def _window(self, version: int) -> _Window:
        window = self._windows.get(version)
        if window is None:
            window = self._windows[version] = _Window()
        return window

    def served(self, version: int, latency_ms: float, *, cached: bool = False) -> None:
        """A request answered. Its latency counts only when the model computed the answer: a
        cache hit's says nothing of the version, and in an A/B phase the arm with more traffic
        has more hits, so with them production would look faster than an equal candidate."""
        with self._lock:
            w = self._window(version)
            w.requests += 1
            if not cached:
                w.latency_ms_sum += latency_ms
                w.buckets[bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)] += 1

    def failed(self, version: int) -> None:
        """A server-side failure (model error, overload): counts against the version.
        Client mistakes (bad input, no token) do not."""
        with self._lock:
            w = self._window(version)
            w.requests += 1
            w.errors += 1

    def confirmed(self, version: int, correct: bool) -> None:
        with self._lock:
            w = self._window(version)
            w.labelled += 1
            w.correct += int(correct)

    def drain(self) -> list[LiveStats]:
        with self._lock:
            windows, self._windows = self._windows, {}
        return [LiveStats(version=v, requests=w.requests, errors=w.errors, latency_ms_sum=w.latency_ms_sum,
                          latency_buckets=tuple(w.buckets), labelled=w.labelled, correct=w.correct)
                for v, w in windows.items()]

    def restore(self, stats: list[LiveStats]) -> None:
        """Puts a window back after a failed write, so no request goes uncounted."""
        with self._lock:
            for s in stats:
                w = self._window(s.version)
                w.requests += s.requests
                w.errors += s.errors
                w.latency_ms_sum += s.latency_ms_sum
                w.buckets = [a + b for a, b in zip(w.buckets, s.latency_buckets)]
                w.labelled += s.labelled
                w.correct += s.correct
