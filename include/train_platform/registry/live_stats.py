"""Live serving figures per model version: what the inference service records and the
deployment step compares.

The service flushes one window of figures per version every few seconds; each window is
one row of ``tp_serving_stats`` (per replica), so several replicas add up and any time
range can be summed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, insert, select

from train_platform.registry import schema


@dataclass(frozen=True)
class LiveStats:
    """Sum of the serving-stats windows of one version over a time range."""

    version: int
    requests: int = 0
    errors: int = 0
    latency_ms_sum: float = 0.0
    latency_buckets: tuple[int, ...] = (0,) * (len(schema.LATENCY_BUCKETS_MS) + 1)
    labelled: int = 0
    correct: int = 0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    @property
    def mean_latency_ms(self) -> float | None:
        """Over the timed answers (the histogram's), which leave out cache hits."""
        timed = sum(self.latency_buckets)
        return self.latency_ms_sum / timed if timed > 0 else None

    def latency_quantile_ms(self, q: float) -> float | None:
        """The q-quantile of the answers the model computed (the serving side leaves cache
        hits out), interpolated linearly inside the histogram bucket that holds it, as
        Prometheus' ``histogram_quantile`` does: taking the bucket's upper bound instead would
        put a 26 ms p95 at 40 ms, next to a 25 ms one. Past the last finite bound it is that
        bound."""
        total = sum(self.latency_buckets)
        if total == 0:
            return None
        rank = q * total
        seen, lower = 0, 0.0
        for bound, count in zip(schema.LATENCY_BUCKETS_MS, self.latency_buckets):
            if count and seen + count >= rank:
                return round(lower + (float(bound) - lower) * (rank - seen) / count, 3)
            seen += count
            lower = float(bound)
        return float(schema.LATENCY_BUCKETS_MS[-1])


class LiveStatsMixin:
    """The live-stats methods of ``ModelRegistry`` (mixed in there; they use its ``url``
    and ``_model_id``)."""

    def record_serving_stats(self, name: str, replica: str, windows: list[LiveStats], *,
                             window_end: datetime | None = None) -> None:
        """Appends one window of figures per version (called by the inference service)."""
        windows = [w for w in windows if w.requests or w.labelled]
        if not windows:
            return
        end = window_end or schema.utcnow()
        with schema.transaction(self.url) as conn:
            model_id = self._model_id(conn, name)
            conn.execute(insert(schema.serving_stats), [
                dict(model_id=model_id, version=w.version, replica=replica, window_end=end,
                     requests=w.requests, errors=w.errors, latency_ms_sum=w.latency_ms_sum,
                     latency_buckets=list(w.latency_buckets), labelled=w.labelled, correct=w.correct)
                for w in windows
            ])

    def live_stats(self, name: str, version: int, *, since: datetime | None = None) -> LiveStats:
        """The figures of ``version`` summed over every window (ending at or after ``since``)."""
        with schema.read(self.url) as conn:
            model_id = self._model_id(conn, name)
            query = select(schema.serving_stats).where(and_(
                schema.serving_stats.c.model_id == model_id, schema.serving_stats.c.version == version,
            ))
            if since is not None:
                query = query.where(schema.serving_stats.c.window_end >= since)
            rows = conn.execute(query).mappings().all()
        buckets = [0] * (len(schema.LATENCY_BUCKETS_MS) + 1)
        totals = dict(requests=0, errors=0, latency_ms_sum=0.0, labelled=0, correct=0)
        for row in rows:
            for key in totals:
                totals[key] += row[key]
            for i, count in enumerate(row["latency_buckets"]):
                buckets[i] += count
        return LiveStats(version=version, latency_buckets=tuple(buckets), **totals)
