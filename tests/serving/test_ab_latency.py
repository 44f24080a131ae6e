"""The A/B phase compares the versions' own latency: cache hits are counted as requests but
not timed. Otherwise the arm with more traffic (production, at 90 %) answers more repeated
inputs from the cache and looks faster than an equally fast candidate."""

from __future__ import annotations

from ml.serving.stats import StatsCollector
from train_platform.registry.deployment import DeploymentPolicy, decide


def test_cache_hits_count_as_requests_but_not_in_the_latency_figures():
    stats = StatsCollector()
    # Both versions take 30 ms to compute an answer; production's repeated inputs hit the cache.
    for i in range(900):
        stats.served(1, 0.8 if i % 10 else 30.0, cached=bool(i % 10))
    for i in range(100):
        stats.served(2, 0.8 if i % 3 == 0 else 30.0, cached=i % 3 == 0)
    windows = {s.version: s for s in stats.drain()}
    production, candidate = windows[1], windows[2]
    assert (production.requests, candidate.requests) == (900, 100)
    assert sum(production.latency_buckets) == 90 and sum(candidate.latency_buckets) == 66
    assert production.mean_latency_ms == candidate.mean_latency_ms == 30.0
    assert production.latency_quantile_ms(0.95) == candidate.latency_quantile_ms(0.95)
    decision = decide(candidate, production, DeploymentPolicy(min_requests=100))
    assert decision.action == "promote", decision.reasons


def test_a_slower_candidate_is_still_rolled_back():
    stats = StatsCollector()
    for _ in range(300):
        stats.served(1, 10.0)
        stats.served(2, 200.0)
    windows = {s.version: s for s in stats.drain()}
    decision = decide(windows[2], windows[1], DeploymentPolicy(min_requests=100))
    assert decision.action == "rollback" and "p95 latency" in decision.reasons[0]
