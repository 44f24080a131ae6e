"""The prediction cache and the prediction log behind ``/feedback``.

Entries are keyed by model, version and a hash of the validated input, so a new version
never serves an old version's answer. Redis (``TP_REDIS_URL``) is shared by every replica;
without it an in-process LRU does the same job for one replica. A Redis outage degrades to
cache misses, never to failed requests.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ml.predict import ValidatedSample

log = logging.getLogger(__name__)


def input_hash(sample: ValidatedSample) -> str:
    """Hash of a validated sample: field names, dtypes, shapes and bytes, so ``[1, 2]`` and
    ``[1.0, 2.0]`` (same float32 values) share an entry."""
    digest = hashlib.blake2b(digest_size=16)
    arrays = sample.arrays()
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{value.dtype.str}:{value.shape};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


class PredictionCache:
    def __init__(self, model: str, *, redis_url: str | None, ttl_s: int, local_entries: int,
                 feedback_ttl_s: int):
        self.model = model
        self.ttl_s = ttl_s
        self.feedback_ttl_s = feedback_ttl_s
        self.local_entries = local_entries
        self._local: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._redis = None
        if redis_url:
            import redis.asyncio as aioredis

            # Short timeouts: a slow cache must not make requests slower than no cache.
            self._redis = aioredis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.backend = "redis" if self._redis is not None else "memory"

    def _key(self, kind: str, *parts: Any) -> str:
        return ":".join(("tp", kind, self.model, *map(str, parts)))

    async def _get(self, key: str) -> str | None:
        if self._redis is not None:
            try:
                raw = await self._redis.get(key)
            except Exception as exc:  # redis errors of every kind mean "no cache now"
                log.warning("prediction cache unavailable (%s); serving without it", exc)
                return None
            return None if raw is None else raw.decode()
        entry = self._local.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires < time.monotonic():
            self._local.pop(key, None)
            return None
        self._local.move_to_end(key)
        return value

    async def _set(self, key: str, value: str, ttl_s: int) -> None:
        if self._redis is not None:
            try:
                await self._redis.set(key, value, ex=ttl_s)
            except Exception as exc:
                log.warning("prediction cache unavailable (%s); result not cached", exc)
            return
        if self.local_entries <= 0:
            return
        self._local[key] = (time.monotonic() + ttl_s, value)
        self._local.move_to_end(key)
        while len(self._local) > self.local_entries:
            self._local.popitem(last=False)

    async def get(self, version: int, digest: str) -> dict[str, Any] | None:
        raw = await self._get(self._key("pred", version, digest))
        return None if raw is None else json.loads(raw)

    async def put(self, version: int, digest: str, result: dict[str, Any]) -> None:
        await self._set(self._key("pred", version, digest), json.dumps(result), self.ttl_s)

    async def log_prediction(self, key: str, version: int, prediction: Any) -> None:
        """Remembers what ``version`` answered for ``key`` so a confirmed label can score it."""
        await self._set(self._key("fb", key), json.dumps({"version": version, "prediction": prediction}),
                        self.feedback_ttl_s)

    async def logged_prediction(self, key: str) -> dict[str, Any] | None:
        raw = await self._get(self._key("fb", key))
        return None if raw is None else json.loads(raw)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
