"""The inference endpoint: one BentoML service for a registered model.

``tp model serve NAME`` starts it (``TP_SERVE_MODEL=NAME``). It serves the ``production``
alias, follows alias and A/B changes in the registry without a restart, and splits traffic
between two versions when an experiment is set. See ``ml/serving/runtime.py`` for what
happens per request; this file is only the HTTP surface.

``POST /predict``  one sample ``{"sensor": [[c1, c2, ...], ...], "key": ..., optional
                   timestamps/text/image/audio}`` -> ``{"label", "confidence",
                   "probabilities", "model_version"}`` (classification; the matching fields
                   for the other tasks). 400 bad input, 401 no/bad token, 503 overloaded.
``POST /feedback`` ``{"key", "label"}``: a confirmed label for an earlier keyed prediction;
                   feeds the per-version accuracy the deployment step compares.
``GET /metrics``   Prometheus metrics (BentoML's endpoint; left open for the scraper).
"""

from __future__ import annotations

import gc
import hmac
import logging
from typing import Any

import bentoml
from starlette.responses import JSONResponse

from ml.exceptions import InvalidInputError
from ml.serving.batching import OverloadedError
from ml.serving.config import ServingConfig
from ml.serving.runtime import ServingRuntime
from train_platform.settings import get_settings

log = logging.getLogger(__name__)


def _workers() -> int:
    # Read at import: BentoML takes the worker count from the decorator.
    from ml.serving.config import ServingConfig

    return ServingConfig.workers_from_env()


def _error(ctx: bentoml.Context, status: int, message: str, **headers: str) -> JSONResponse:
    # BentoML copies the context's status and headers onto whatever the API returns.
    ctx.response.status_code = status
    for name, value in headers.items():
        ctx.response.metadata[name] = value
    return JSONResponse({"error": message}, status_code=status)


@bentoml.service(
    name="tp-inference",
    # Worker processes per replica (TP_SERVE_WORKERS, default 2): each batches its own
    # requests; see ml/serving/config.py for the reason. Scale out with replicas (the Helm
    # chart's HPA), which share the cache and the registry.
    workers=_workers(),
    # Up to 2048 requests in flight per replica; beyond that BentoML answers 503 itself.
    # BentoML keeps each request's context (and its tracing spans) alive until its timeout
    # timer fires, so a long timeout grows the heap and the garbage collector's pauses (the
    # p99 tail). The batcher already refuses a request queued for over a second, so 5 s
    # cuts nothing that could still succeed.
    traffic={"timeout": 5, "max_concurrency": 2048},
    # Per-request access lines cost ~10% throughput; latency is in /metrics anyway.
    logging={"access": {"enabled": False}},
)
class InferenceService:
    def __init__(self) -> None:
        settings = get_settings()
        self.tokens = tuple(token.encode() for token in settings.api_tokens)
        self.runtime = ServingRuntime(ServingConfig.from_env(), settings)
        # Everything loaded so far lives as long as the worker: move it out of the
        # collector's generations so full collections (60-250 ms pauses measured under
        # load) scan only per-request garbage, and collect young objects in bigger, rarer
        # sweeps (the default 700 allocations runs one every few requests). Measured with
        # bench/serving.py at 64 clients: p99 349 ms -> 116 ms (freeze) -> 84 ms (thresholds).
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 50)

    @bentoml.on_startup
    async def start_background_tasks(self) -> None:
        self.runtime.start_background()

    @bentoml.on_shutdown
    async def stop_background_tasks(self) -> None:
        await self.runtime.close()

    def _unauthorized(self, ctx: bentoml.Context) -> JSONResponse | None:
        if not self.tokens:
            return None
        header = ctx.request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token:
            given = token.strip().encode()
            # Constant-time comparison: response timing must not reveal token prefixes.
            if any(hmac.compare_digest(given, known) for known in self.tokens):
                return None
        return _error(ctx, 401, "missing or invalid bearer token", **{"WWW-Authenticate": "Bearer"})

    @bentoml.api(route="/predict")
    async def predict(
        self,
        ctx: bentoml.Context,
        sensor: list[Any],
        key: str | None = None,
        timestamps: list[Any] | None = None,
        text: str | list[int] | None = None,
        image: list[Any] | None = None,
        audio: list[Any] | None = None,
    ) -> dict[str, Any]:
        """Predict one sample with the production model (or its A/B candidate)."""
        denied = self._unauthorized(ctx)
        if denied is not None:
            self.runtime.count_unauthorized()
            return denied
        # The fields as sent; the runtime validates them once, against the routed version.
        body: dict[str, Any] = {"sensor": sensor}
        for name, value in (("timestamps", timestamps), ("text", text), ("image", image), ("audio", audio)):
            if value is not None:
                body[name] = value
        try:
            return await self.runtime.predict(body, key)
        except InvalidInputError as exc:
            return _error(ctx, 400, str(exc))
        except OverloadedError as exc:
            return _error(ctx, 503, f"overloaded, retry later: {exc}", **{"Retry-After": "1"})

    @bentoml.api(route="/feedback")
    async def feedback(self, ctx: bentoml.Context, key: str, label: str) -> dict[str, Any]:
        """Record the confirmed label of an earlier prediction made with this ``key``."""
        denied = self._unauthorized(ctx)
        if denied is not None:
            return denied
        try:
            return await self.runtime.feedback(key, label)
        except KeyError:
            return _error(ctx, 404, f"no recent prediction for key {key!r}")
