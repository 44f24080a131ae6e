"""Everything the inference service does besides HTTP: follow the registry, keep the served
versions loaded, route, check bounds, validate, cache, batch, predict, record metrics and
live stats, score confirmed labels, and capture sampled keyed predictions for the dataset's
intake branch (``capture.py``).

``ml/service.py`` wraps one ``ServingRuntime`` per worker process in a BentoML service.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ml.exceptions import InvalidInputError
from ml.serving import metrics
from ml.serving.batching import AdaptiveBatcher, OverloadedError
from ml.serving.cache import PredictionCache, input_hash, prediction_log
from ml.serving.config import ServingConfig
from ml.serving.drift import DriftMonitor
from ml.serving.limits import check_feedback_request, check_predict_request
from ml.serving.routing import choose_version
from ml.serving.stats import StatsCollector
from train_platform.registry import ModelRef, ModelRegistry, RegistryError, ServingState, resolve
from train_platform.settings import Settings

if TYPE_CHECKING:
    from ml.predict import ValidatedSample
    from ml.serving.capture import ServedCapture

log = logging.getLogger(__name__)


class NoProductionVersionError(RegistryError):
    """The model has no ``production`` alias, so there is nothing to serve."""


class FeedbackConflictError(ValueError):
    """The prediction logged for a key was already confirmed with another label (HTTP 409)."""


def batch_group(version: int, sample: ValidatedSample) -> tuple:
    """What requests must share to be stacked into one forward pass: the version, which
    optional fields are set (``ml.collate`` builds a field's tensor for the whole batch, and
    uses timestamps only when every sample has them) and the image frame size (frames are
    stacked, not padded)."""
    image = sample.image.shape[1:] if sample.image is not None else None
    return (version, sample.timestamps is not None, sample.text is not None, image, sample.audio is not None)


@dataclass
class LoadedVersion:
    version: int
    checkpoint: Any  # ml.checkpoint.Checkpoint
    drift: DriftMonitor
    requests_since_drift: int = 0


class ServingRuntime:
    def __init__(self, config: ServingConfig, settings: Settings):
        import torch

        torch.set_num_threads(config.torch_threads)
        self.config = config
        self.settings = settings
        self.model = config.model
        self.registry = ModelRegistry(settings)
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        self.loaded: dict[int, LoadedVersion] = {}
        self.state = self.registry.serving_state(self.model)
        if self.state.production is None:
            raise NoProductionVersionError(
                f"model {self.model!r} has no production version: run `tp model promote {self.model} VERSION`")
        for version in self._wanted(self.state):
            self.loaded[version] = self._load(version)
        self.cache = PredictionCache(self.model, redis_url=settings.redis_url, ttl_s=config.cache_ttl_s,
                                     local_entries=config.local_cache_entries,
                                     local_bytes=config.local_cache_bytes,
                                     max_entry_bytes=config.cache_max_entry_bytes)
        self.prediction_log = prediction_log(self.model, redis_url=settings.redis_url, home=settings.home,
                                             ttl_s=config.feedback_ttl_s)
        self.stats = StatsCollector()
        self.batcher = AdaptiveBatcher(self._run_batch, max_batch_size=config.max_batch_size,
                                       max_latency_ms=config.max_latency_ms, on_batch=self._on_batch)
        self.capture: ServedCapture | None = None
        if config.capture_rate > 0:
            # Imported only when capturing: it loads the dataset stack (pyiceberg, pyarrow).
            from ml.serving.capture import ServedCapture
            from train_platform.registry.identity import acting_user

            # The service acts as the OS user it runs as (TP_USER only for a platform-admin).
            self.capture = ServedCapture(config, settings, acting_user(settings))
        self._tasks: list[asyncio.Task] = []
        self._publish_state(self.state)
        log.info("serving %s: production v%d%s, cache %s, prediction log %s", self.model, self.state.production,
                 self._describe_experiment(self.state), self.cache.backend, self.prediction_log.backend)

    # ------------------------------------------------------------------ versions

    @staticmethod
    def _wanted(state: ServingState) -> list[int]:
        versions = [state.production]
        if state.experiment is not None:
            versions += [state.experiment.control_version, state.experiment.candidate_version]
        return sorted(set(versions))

    @staticmethod
    def _describe_experiment(state: ServingState) -> str:
        exp = state.experiment
        if exp is None:
            return ""
        return f", A/B v{exp.control_version} vs v{exp.candidate_version} at {exp.candidate_weight:.0%}"

    def _publish_state(self, state: ServingState) -> None:
        metrics.child(metrics.SERVED_VERSION, model=self.model, role="production").set(state.production)
        candidate = state.experiment.candidate_version if state.experiment is not None else 0
        metrics.child(metrics.SERVED_VERSION, model=self.model, role="candidate").set(candidate)

    def _load(self, version: int) -> LoadedVersion:
        from ml.checkpoint import load_checkpoint

        found = resolve(ModelRef(self.model, version=version), self.registry)
        checkpoint = load_checkpoint(found.checkpoint)
        log.info("loaded %s v%d from %s", self.model, version, found.version.bento_model_tag)
        self._warm_up(version, checkpoint)
        drift = DriftMonitor(checkpoint.meta.get("drift_reference"), window=self.config.drift_window)
        return LoadedVersion(version, checkpoint, drift)

    def _warm_up(self, version: int, checkpoint: Any) -> None:
        """A few predictions on a zero series before the version takes traffic: a model's first
        forward passes are several times slower (lazy allocations, thread pools), which would
        land on its first clients and, in an A/B phase, on the candidate's latency figures."""
        from ml.predict import ANOMALY_MAX_LEN, predict_validated, validate_sample

        import numpy as np

        cfg = checkpoint.config
        steps = {"forecasting": cfg.context_len, "anomaly": min(ANOMALY_MAX_LEN, 128)}.get(checkpoint.task,
                                                                                          min(cfg.max_len, 128))
        started = time.perf_counter()
        try:
            sample = validate_sample(checkpoint, {"sensor": np.zeros((steps, cfg.n_channels)).tolist()})
            for _ in range(3):
                predict_validated(checkpoint, [sample])
        except Exception as exc:  # a model that needs other inputs still serves; it is just cold
            log.warning("%s v%d: no warm-up (%s); its first requests will be slower", self.model, version, exc)
            return
        log.info("%s v%d warmed up in %.0f ms", self.model, version, (time.perf_counter() - started) * 1000)

    async def refresh(self) -> None:
        """Reads the registry; loads new versions off the event loop, then switches at once."""
        state = await asyncio.to_thread(self.registry.serving_state, self.model)
        if state == self.state:
            return
        if state.production is None:
            log.error("%s lost its production alias; still serving v%d", self.model, self.state.production)
            return
        for version in self._wanted(state):
            if version not in self.loaded:
                self.loaded[version] = await asyncio.to_thread(self._load, version)
        previous, self.state = self.state, state
        self._publish_state(state)
        # The previous state's versions stay loaded: requests already routed to them finish,
        # and a rollback switches back without loading anything.
        keep = set(self._wanted(state)) | set(self._wanted(previous))
        for version in [v for v in self.loaded if v not in keep]:
            del self.loaded[version]
        log.info("%s: now production v%d%s (was v%d%s)", self.model, state.production,
                 self._describe_experiment(state), previous.production, self._describe_experiment(previous))

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_interval_s)
            try:
                await self.refresh()
            except Exception:  # a registry hiccup must not stop serving the current state
                log.exception("%s: registry poll failed; keeping the current versions", self.model)

    def publish_cache_size(self) -> None:
        """Sets the in-process cache's gauges (every stats flush; 0 with Redis)."""
        metrics.child(metrics.CACHE_ENTRIES, model=self.model).set(self.cache.entries)
        metrics.child(metrics.CACHE_BYTES, model=self.model).set(self.cache.size_bytes)

    async def flush_stats(self) -> None:
        self.publish_cache_size()
        windows = self.stats.drain()
        if not windows:
            return
        try:
            await asyncio.to_thread(self.registry.record_serving_stats, self.model, self.replica, windows)
        except Exception:
            self.stats.restore(windows)
            raise

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.stats_flush_s)
            try:
                await self.flush_stats()
            except Exception:
                log.exception("%s: writing live stats failed; retrying at the next flush", self.model)

    def start_background(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._poll_forever()), loop.create_task(self._flush_forever())]
        if self.capture is not None:
            self.capture.start()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        try:
            await self.flush_stats()
        except Exception:
            log.exception("%s: final live-stats flush failed", self.model)
        if self.capture is not None:
            await self.capture.close()
        self.batcher.close()
        await self.cache.close()
        await self.prediction_log.close()

    # ------------------------------------------------------------------ requests

    def _run_batch(self, group: tuple, samples: list[ValidatedSample]) -> list[dict]:
        from ml.predict import predict_validated

        return predict_validated(self.loaded[group[0]].checkpoint, samples)

    def _on_batch(self, group: tuple, size: int) -> None:
        metrics.child(metrics.BATCH_SIZE, model=self.model, version=str(group[0])).observe(size)

    async def predict(self, body: dict[str, Any], key: str | None, caller: str | None = None) -> dict[str, Any]:
        """One sample's fields as sent -> the answer of the routed version, with
        ``model_version`` added. The fields' sizes are checked against the service's bounds,
        then the sample is validated once, against the routed version; the cache key, the
        batch, the drift monitor and the capture all take the ``ValidatedSample``. ``caller``
        is the API client's name, kept with a keyed prediction in the prediction log.

        Raises ``InvalidInputError`` (the caller's fault, HTTP 400) or ``OverloadedError``
        (HTTP 503); any other exception is a server error and counts against the version.
        """
        from ml.predict import validate_sample

        started = time.perf_counter()
        state = self.state  # one consistent view for this request, even if a poll swaps it
        version = choose_version(state, key)
        loaded = self.loaded[version]
        labels = dict(model=self.model, version=str(version))
        try:
            check_predict_request(body, key, self.config)
            sample = validate_sample(loaded.checkpoint, body)
        except InvalidInputError:
            metrics.child(metrics.REQUESTS, outcome="bad_input", **labels).inc()
            raise
        digest = input_hash(sample)
        result = await self.cache.get(version, digest)
        cached = result is not None
        metrics.child(metrics.CACHE, result="hit" if cached else "miss", **labels).inc()
        if result is None:
            try:
                result = await self.batcher.submit(batch_group(version, sample), sample)
            except InvalidInputError:  # found by the model code (run alone, see batching.py)
                metrics.child(metrics.REQUESTS, outcome="bad_input", **labels).inc()
                raise
            except OverloadedError:
                metrics.child(metrics.REQUESTS, outcome="overloaded", **labels).inc()
                self.stats.failed(version)
                raise
            except Exception:
                log.exception("%s v%d: prediction failed", self.model, version)
                metrics.child(metrics.REQUESTS, outcome="error", **labels).inc()
                self.stats.failed(version)
                raise
            try:
                encoded = json.dumps(result, allow_nan=False)
            except ValueError:
                # Finite inputs far outside the training range overflow the normalisation;
                # the answer would be NaN with an arbitrary label. Not cached.
                metrics.child(metrics.REQUESTS, outcome="bad_input", **labels).inc()
                raise InvalidInputError("the model's answer for this input is not finite: its values are "
                                        "too far outside the range the model was trained on") from None
            await self.cache.put(version, digest, encoded)
        self._observe(loaded, sample, result, labels)
        if key:
            await self.prediction_log.record(key, version, _prediction_value(result), caller)
            if self.capture is not None:
                self.capture.capture(key, version, sample.sensor, result)
        elapsed = time.perf_counter() - started
        metrics.child(metrics.REQUESTS, outcome="ok", **labels).inc()
        metrics.child(metrics.LATENCY, **labels).observe(elapsed)
        self.stats.served(version, elapsed * 1000.0, cached=cached)
        return {**result, "model_version": version}

    def count_unauthorized(self, outcome: str = "unauthorized") -> None:
        """Counts a refused request: ``unauthorized`` (401) or ``forbidden`` (403)."""
        metrics.child(metrics.REQUESTS, model=self.model, version="none", outcome=outcome).inc()

    def _observe(self, loaded: LoadedVersion, sample: ValidatedSample, result: dict, labels: dict) -> None:
        if "confidence" in result:
            metrics.child(metrics.CONFIDENCE, **labels).observe(result["confidence"])
        if loaded.drift.enabled:
            loaded.drift.observe(sample.sensor)
            loaded.requests_since_drift += 1
            if loaded.requests_since_drift >= self.config.drift_every:
                loaded.requests_since_drift = 0
                for channel, value in enumerate(loaded.drift.values()):
                    metrics.child(metrics.DRIFT, channel=str(channel), **labels).set(value)

    async def feedback(self, key: str, label: str, caller: str | None = None) -> dict[str, Any]:
        """Scores the prediction made for ``key`` against a confirmed label, once per
        prediction: a replay of the same label answers as the first time with
        ``"duplicate": true`` and counts nothing. ``caller``, the API client's name, is
        recorded as who confirmed it.

        Raises ``InvalidInputError`` (over a bound, HTTP 400), ``KeyError`` (no recent
        prediction with that key, 404), ``FeedbackConflictError`` (already confirmed with
        another label, 409) or ``cache.FeedbackStoreError`` (the log is unreachable, 503).
        """
        check_feedback_request(key, label, self.config)
        found = await self.prediction_log.confirm(key, label, caller)
        if found is None:
            metrics.child(metrics.FEEDBACK, model=self.model, outcome="unknown").inc()
            raise KeyError(key)
        metrics.child(metrics.FEEDBACK, model=self.model, outcome=found.outcome).inc()
        log.debug("%s: feedback for key %r from %s: %s", self.model, key[:64], caller or "anonymous", found.outcome)
        if found.outcome == "conflict":
            raise FeedbackConflictError(
                f"the prediction for key {key!r} was already confirmed as {found.label!r}; "
                f"{label!r} is not counted")
        correct = str(found.prediction) == found.label
        if found.outcome == "counted":
            self.stats.confirmed(found.version, correct)
            metrics.child(metrics.CONFIRMED, model=self.model, version=str(found.version), correct=str(correct).lower()).inc()
        return {"key": key, "model_version": found.version, "prediction": found.prediction, "correct": correct,
                "duplicate": found.outcome == "duplicate"}


def _prediction_value(result: dict[str, Any]) -> Any:
    """The part of an answer a confirmed label is compared with."""
    for field in ("label", "value", "is_anomaly"):
        if field in result:
            return result[field]
    return None
