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
    # Past ~8 samples of ~100 steps a forward pass costs the same per sample (the default
    # conv-stem model: ~45-70 ms for 64 on one CPU core), so bigger batches only add
    # queueing delay; 64 was chosen with bench/serving.py on the previous default model.
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
    # In-process cache when no Redis is configured: at most this many entries and this many
    # bytes (keys and answers as Python sizes them, plus a fixed per-entry overhead), the
    # least recently used going first. A classification answer takes ~1 KB, so 20k entries
    # fit in the 32 MiB; an anomaly answer of a long series can take hundreds of KB, which is
    # why the bound is in bytes and not only in entries.
    local_cache_entries: int = 20_000
    local_cache_bytes: int = 32 * 1024 * 1024
    # Answers bigger than this are not cached at all (Redis or in-process): one long anomaly
    # series would otherwise evict thousands of small answers.
    cache_max_entry_bytes: int = 256 * 1024
    # Remembered predictions per key, so /feedback can score confirmed labels (a week).
    feedback_ttl_s: int = 7 * 24 * 3600
    # One core for the model thread, the other for the HTTP event loop (2-core machines).
    torch_threads: int = 1
    # Drift PSI gauges are refreshed every this many requests per version.
    drift_every: int = 50
    # Counts are halved past this many values per channel, so PSI follows recent traffic:
    # 50k values is ~500 requests of 100 steps, minutes of traffic on a busy endpoint.
    drift_window: int = 50_000

    # Bounds on a request, checked before anything is converted (ml/serving/limits.py); the
    # model's own limits (its max_len, max_text_len, max_frames, max_audio_len, channel
    # count) apply after them, so the tighter of the two wins. A request over one gets 400
    # naming the field, the bound and its variable. The body itself is capped in bytes
    # before it is parsed (HTTP 413): TP_SERVE_MAX_BODY_BYTES, read by ml/service.py.
    # Time steps per sample: ten times the default model's max_len, so anomaly scoring
    # (which slides windows and has no model bound) stays at seconds of CPU per request.
    max_steps: int = 10_000
    # Sensor channels per step: the model's channel count must match anyway; this bounds
    # what is looked at before that check.
    max_channels: int = 256
    # Text tokens (UTF-8 bytes of a string, or token ids): 16x the default max_text_len.
    max_text_tokens: int = 4096
    # Image frames per sample (the default model's max_frames), colour channels per frame,
    # and pixels per side. The largest sample, 16 x 4 x 128 x 128 values, is 4 MB of
    # float32 and ~0.5 GB of activations in a batch of 64: raise the side together with a
    # smaller TP_SERVE_MAX_BATCH_SIZE.
    max_frames: int = 16
    max_image_channels: int = 4
    max_image_side: int = 128
    # Audio samples: 6 s at 16 kHz (the default model takes 2 s).
    max_audio_samples: int = 96_000
    # Characters of a request's `key` and of a feedback `label`: both are stored per
    # keyed prediction (Redis or the feedback log), so they must stay small.
    max_key_chars: int = 256

    # Served data comes back (train_platform/datasets/served.py): the share of keyed
    # predictions captured as pre-labelled samples on the dataset's `intake` branch, chosen
    # by a hash of the key (0 = off). Off by default: capturing keeps what clients send.
    capture_rate: float = 0.0
    # The dataset they go to (required when the rate is above 0).
    capture_dataset: str | None = None
    # A worker hands its spool file to the import this often, or at this many samples,
    # whichever comes first: one Iceberg commit per flush instead of one per request.
    capture_flush_s: float = 30.0
    capture_flush_samples: int = 500
    # Who imports the spool files: "service" (each worker, in a background thread, after
    # each flush) or "command" (only `tp dataset intake-served NAME`, e.g. a scheduled
    # task; the serving pods then need no write access to the catalog).
    capture_import: str = "service"

    @staticmethod
    def workers_from_env(env: dict[str, str] | None = None) -> int:
        """Worker processes per replica. Two by default: on the 2-core nodes this targets,
        one process's event loop (HTTP parsing, BentoML's middleware) saturates a core
        before its model thread does, so a second process nearly doubles what a replica
        serves; each still batches its own half of the traffic."""
        return _int(dict(os.environ if env is None else env), "TP_SERVE_WORKERS", 2, 1)

    @staticmethod
    def max_body_bytes_from_env(env: dict[str, str] | None = None) -> int:
        """Largest request body accepted, in bytes (``TP_SERVE_MAX_BODY_BYTES``); a bigger
        one gets 413 before it is read. 4 MiB by default: a 100-step, 6-channel sample is
        ~12 KB of JSON, and the largest image sample the default bounds allow (16 frames of
        128 x 128) is ~1.3 MB written as small integers."""
        return _int(dict(os.environ if env is None else env), "TP_SERVE_MAX_BODY_BYTES", 4 * 1024 * 1024, 1024)

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
            local_cache_bytes=_int(env, "TP_SERVE_LOCAL_CACHE_BYTES", cls.local_cache_bytes, 0),
            cache_max_entry_bytes=_int(env, "TP_SERVE_CACHE_MAX_ENTRY_BYTES", cls.cache_max_entry_bytes, 0),
            max_steps=_int(env, "TP_SERVE_MAX_STEPS", cls.max_steps, 1),
            max_channels=_int(env, "TP_SERVE_MAX_CHANNELS", cls.max_channels, 1),
            max_text_tokens=_int(env, "TP_SERVE_MAX_TEXT_TOKENS", cls.max_text_tokens, 1),
            max_frames=_int(env, "TP_SERVE_MAX_FRAMES", cls.max_frames, 1),
            max_image_channels=_int(env, "TP_SERVE_MAX_IMAGE_CHANNELS", cls.max_image_channels, 1),
            max_image_side=_int(env, "TP_SERVE_MAX_IMAGE_SIDE", cls.max_image_side, 4),
            max_audio_samples=_int(env, "TP_SERVE_MAX_AUDIO_SAMPLES", cls.max_audio_samples, 1),
            max_key_chars=_int(env, "TP_SERVE_MAX_KEY_CHARS", cls.max_key_chars, 1),
            **_capture(env),
        )


def _capture(env: dict[str, str]) -> dict:
    rate = _float(env, "TP_SERVE_CAPTURE_RATE", ServingConfig.capture_rate, 0.0)
    if rate > 1.0:
        raise ConfigError(f"TP_SERVE_CAPTURE_RATE must be between 0 and 1, not {rate}")
    dataset = env.get("TP_SERVE_CAPTURE_DATASET") or None
    if rate > 0 and not dataset:
        raise ConfigError(f"TP_SERVE_CAPTURE_RATE is {rate} but TP_SERVE_CAPTURE_DATASET names no dataset "
                          f"to capture into")
    if dataset:
        from train_platform.datasets.catalog import check_name
        from train_platform.datasets.exceptions import DatasetError

        try:
            check_name(dataset)
        except DatasetError as exc:
            raise ConfigError(f"TP_SERVE_CAPTURE_DATASET: {exc}") from exc
    mode = env.get("TP_SERVE_CAPTURE_IMPORT") or ServingConfig.capture_import
    if mode not in ("service", "command"):
        raise ConfigError(f"TP_SERVE_CAPTURE_IMPORT must be 'service' or 'command', not {mode!r}")
    return dict(
        capture_rate=rate,
        capture_dataset=dataset,
        capture_flush_s=_float(env, "TP_SERVE_CAPTURE_FLUSH_S", ServingConfig.capture_flush_s, 0.05),
        capture_flush_samples=_int(env, "TP_SERVE_CAPTURE_FLUSH_SAMPLES", ServingConfig.capture_flush_samples, 1),
        capture_import=mode,
    )
