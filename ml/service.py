"""The inference endpoint: one BentoML service for a registered model.

``tp model serve NAME`` starts it (``TP_SERVE_MODEL=NAME``). It serves the ``production``
alias, follows alias and A/B changes in the registry without a restart, and splits traffic
between two versions when an experiment is set. See ``ml/serving/runtime.py`` for what
happens per request; this file is only the HTTP surface.

``POST /predict``  one sample ``{"sensor": [[c1, c2, ...], ...], "key": ..., optional
                   timestamps/text/image/audio}`` -> ``{"label", "confidence",
                   "probabilities", "model_version"}`` (classification; the matching fields
                   for the other tasks). 400 bad input or a field over its bound, 401
                   no/bad token, 403 a token without the ``predict`` scope, 413 body too
                   large, 503 overloaded. With ``TP_SERVE_CAPTURE_RATE`` set, a sampled share
                   of keyed predictions is captured for the dataset's intake branch
                   (``ml/serving/capture.py``).
``POST /feedback`` ``{"key", "label"}``: a confirmed label for an earlier keyed prediction;
                   feeds the per-version accuracy the deployment step compares. Counted
                   once per prediction: a replay answers ``"duplicate": true``, another
                   label for it 409; 404 no recent prediction with that key; 403 a token
                   without the ``feedback`` scope.
``GET /metrics``   Prometheus metrics, and BentoML's ``/healthz``, ``/livez``, ``/readyz``:
                   open, without a token (the scraper and the kubelet's probes).

Auth: with ``TP_API_TOKENS`` set, every API route needs ``Authorization: Bearer TOKEN`` of a
client holding the route's scope (``NAME:predict+feedback=TOKEN``; a bare token has both).
The client's name, never its token, is what the prediction log records as the caller of a
prediction and as who confirmed it, and what the log lines name. Without tokens auth is off.

Every request body is capped at ``TP_SERVE_MAX_BODY_BYTES`` (4 MiB) by ``BodySizeLimit``,
an ASGI middleware in front of BentoML's parsing: 413 before the body is read.

Logs: BentoML configures the logging of each worker (and of ``tp model serve``'s process)
before it imports this module; importing it makes those handlers redact
(``train_platform.settings.redact_log_handlers``), as ``tp``'s and the ``ml`` commands' do,
so no database password, S3 key or token reaches the service's log.
"""

from __future__ import annotations

import gc
import json
import logging
from typing import Any

import bentoml
from starlette.responses import JSONResponse

from ml.exceptions import InvalidInputError
from ml.serving.batching import OverloadedError
from ml.serving.cache import FeedbackStoreError
from ml.serving.config import ServingConfig
from ml.serving.runtime import FeedbackConflictError, ServingRuntime
from train_platform.registry.identity import authenticate_bearer
from train_platform.settings import get_settings, redact_log_handlers

log = logging.getLogger(__name__)
redact_log_handlers()


def _workers() -> int:
    # Read at import: BentoML takes the worker count from the decorator.
    from ml.serving.config import ServingConfig

    return ServingConfig.workers_from_env()


class BodySizeLimit:
    """ASGI middleware: a request whose body is over ``max_bytes`` gets 413 before anything
    parses it. A ``Content-Length`` over the limit is answered at once, without reading the
    body; a body without one (chunked) is read up to the limit and then handed on, or
    answered 413 as soon as it passes the limit. Either way the connection is closed after a
    413, since the rest of the body is never read."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send, size: str) -> None:
        body = json.dumps({"error": f"request body of {size} bytes is over the limit of {self.max_bytes} "
                                    f"bytes (TP_SERVE_MAX_BODY_BYTES)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = next((value for name, value in scope["headers"] if name == b"content-length"), None)
        if length is not None:
            # The HTTP server refuses a body longer or shorter than its Content-Length, so
            # the header is all there is to check.
            if length.isdigit() and int(length) > self.max_bytes:
                return await self._refuse(send, length.decode())
            return await self.app(scope, receive, send)
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        messages, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await self._refuse(send, f"over {self.max_bytes}")
            messages.append(message)
            if not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)


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
        redact_log_handlers()  # any handler added since the import, too
        settings = get_settings()
        self.settings = settings
        self.auth = bool(settings.api_clients)
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

    def _authorize(self, ctx: bentoml.Context, scope: str, route: str) -> tuple[str | None, JSONResponse | None]:
        """``(caller, None)`` for a request whose bearer token holds ``scope`` (``caller``:
        the client's name; ``None`` with auth off), else ``(None, the 401 or 403 answer)``."""
        if not self.auth:
            return None, None
        # Every token compared in constant time: the timing reveals neither token nor prefix.
        client = authenticate_bearer(self.settings, ctx.request.headers.get("authorization"))
        if client is None:
            return None, _error(ctx, 401, "missing or invalid bearer token", **{"WWW-Authenticate": "Bearer"})
        if scope not in client.scopes:
            log.warning("client %s refused at %s: its token lacks the %s scope", client.name, route, scope)
            return None, _error(
                ctx, 403, f"the token of client {client.name!r} lacks the {scope!r} scope that {route} needs "
                          f"(it has: {', '.join(sorted(client.scopes))})",
                **{"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'})
        return client.name, None

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
        caller, denied = self._authorize(ctx, "predict", "POST /predict")
        if denied is not None:
            self.runtime.count_unauthorized("unauthorized" if ctx.response.status_code == 401 else "forbidden")
            return denied
        # The fields as sent; the runtime validates them once, against the routed version.
        body: dict[str, Any] = {"sensor": sensor}
        for name, value in (("timestamps", timestamps), ("text", text), ("image", image), ("audio", audio)):
            if value is not None:
                body[name] = value
        try:
            return await self.runtime.predict(body, key, caller)
        except InvalidInputError as exc:
            return _error(ctx, 400, str(exc))
        except OverloadedError as exc:
            return _error(ctx, 503, f"overloaded, retry later: {exc}", **{"Retry-After": "1"})

    @bentoml.api(route="/feedback")
    async def feedback(self, ctx: bentoml.Context, key: str, label: str) -> dict[str, Any]:
        """Record the confirmed label of an earlier prediction made with this ``key``; once
        per prediction (a replay answers ``"duplicate": true`` and counts nothing)."""
        caller, denied = self._authorize(ctx, "feedback", "POST /feedback")
        if denied is not None:
            return denied
        try:
            return await self.runtime.feedback(key, label, caller)
        except InvalidInputError as exc:
            return _error(ctx, 400, str(exc))
        except KeyError:
            return _error(ctx, 404, f"no recent prediction for key {key[:64]!r}")
        except FeedbackConflictError as exc:
            return _error(ctx, 409, str(exc))
        except FeedbackStoreError as exc:
            log.error("feedback for key %r from %s not recorded: %s", key[:64], caller or "anonymous", exc)
            return _error(ctx, 503, "the prediction log is unavailable, retry later", **{"Retry-After": "1"})


InferenceService.add_asgi_middleware(BodySizeLimit, max_bytes=ServingConfig.max_body_bytes_from_env())
