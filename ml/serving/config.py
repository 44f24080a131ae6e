"""Configuration of the inference service, read once from ``TP_SERVE_*`` variables (the
shared ``TP_*`` settings, database, Redis, tokens, come from ``train_platform.settings``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ml.exceptions import ConfigError


def _int(env: dict[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, not {raw!r}") from exc
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {value}")
    return value


def _float(env: dict[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from exc
    if not value >= minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {value}")
    return value


@dataclass(frozen=True)
class ServingConfig:
    # Registered model to serve; `tp model serve NAME` sets it.
    model: str
    # 64 samples of ~100 steps fill one forward pass of the default transformer in ~20 ms on
    # one CPU core: bigger batches only add queueing delay (tuned with bench/serving.py).
    max_batch_size: int = 64
    # A request that waited this long for a batch slot is refused with 503 instead of piling
    # up: at 64 clients the p99 target is 100 ms, so anything near 1 s means overload.
    max_latency_ms: int = 1000
    # Alias and A/B changes reach the service within this delay; one indexed query each time.
    poll_interval_s: float = 2.0
    # Live stats for the deployment step are written this often (one row per version).
    stats_flush_s: float = 5.0
    # Cached predictions expire after an hour: inputs repeat within a session, not for days.
    cache_ttl_s: int = 3600
    # In-process cache size when no Redis is configured (~1 KB per entry).
    local_cache_entries: int = 20_000
    # Remembered predictions per key, so /feedback can score confirmed labels (a week).
    feedback_ttl_s: int = 7 * 24 * 3600
    # One core for the model thread, the other for the HTTP event loop (2-core machines).
    torch_threads: int = 1
    # Drift PSI gauges are refreshed every this many requests per version.
    drift_every: int = 50
    # Counts are halved past this many values per channel, so PSI follows recent traffic:
    # 50k values is ~500 requests of 100 steps, minutes of traffic on a busy endpoint.
    drift_window: int = 50_000

    @staticmethod
    def workers_from_env(env: dict[str, str] | None = None) -> int:
        """Worker processes per replica. Two by default: on the 2-core nodes this targets,
        one process's event loop (HTTP parsing, BentoML's middleware) saturates a core
        before its model thread does, so a second process nearly doubles what a replica
        serves; each still batches its own half of the traffic."""
        return _int(dict(os.environ if env is None else env), "TP_SERVE_WORKERS", 2, 1)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "ServingConfig":
        env = dict(os.environ if env is None else env)
        model = env.get("TP_SERVE_MODEL", "")
        if not model:
            raise ConfigError("TP_SERVE_MODEL is not set: start the service with `tp model serve NAME`")
        return cls(
            model=model,
            max_batch_size=_int(env, "TP_SERVE_MAX_BATCH_SIZE", cls.max_batch_size, 1),
            max_latency_ms=_int(env, "TP_SERVE_MAX_LATENCY_MS", cls.max_latency_ms, 1),
            poll_interval_s=_float(env, "TP_SERVE_POLL_S", cls.poll_interval_s, 0.05),
            stats_flush_s=_float(env, "TP_SERVE_STATS_FLUSH_S", cls.stats_flush_s, 0.05),
            cache_ttl_s=_int(env, "TP_SERVE_CACHE_TTL_S", cls.cache_ttl_s, 1),
            local_cache_entries=_int(env, "TP_SERVE_LOCAL_CACHE_ENTRIES", cls.local_cache_entries, 0),
            feedback_ttl_s=_int(env, "TP_SERVE_FEEDBACK_TTL_S", cls.feedback_ttl_s, 1),
            torch_threads=_int(env, "TP_SERVE_TORCH_THREADS", cls.torch_threads, 1),
            drift_every=_int(env, "TP_SERVE_DRIFT_EVERY", cls.drift_every, 1),
            drift_window=_int(env, "TP_SERVE_DRIFT_WINDOW", cls.drift_window, 100),
        )
