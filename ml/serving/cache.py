"""The prediction cache and the prediction log behind ``/feedback``.

**Cache.** Entries are keyed by model, version and a hash of the validated input, so a new
version never serves an old version's answer. Redis (``TP_REDIS_URL``) is shared by every
replica and bounded by its own ``maxmemory``; without it an in-process LRU does the same job
for one worker, bounded both in entries (``TP_SERVE_LOCAL_CACHE_ENTRIES``) and in bytes
(``TP_SERVE_LOCAL_CACHE_BYTES``). An answer bigger than ``TP_SERVE_CACHE_MAX_ENTRY_BYTES`` is
never cached. A Redis outage degrades to cache misses, never to failed requests.

**Prediction log.** Each keyed prediction is remembered (version and answer) for
``TP_SERVE_FEEDBACK_TTL_S`` so a confirmed label sent later to ``/feedback`` can score it.
A prediction is confirmed at most once: the first label counts, the same label sent again is
a duplicate that counts nothing, another label for it is a conflict that counts nothing. A
new prediction for the same key replaces the entry and may be confirmed again. Each entry
also names the API clients behind it (their ``TP_API_TOKENS`` names, never the tokens): the
``caller`` that asked for the prediction and the client whose label counted
(``confirmed_by``). The log must
be seen by every worker, since ``/feedback`` may reach another worker than the prediction
did: it lives in Redis when configured (shared by every replica), else in a SQLite file
under ``TP_HOME/serving/`` that the workers of a replica share.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import json
import logging
import sqlite3
import sys
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ml.predict import ValidatedSample

log = logging.getLogger(__name__)

# What an OrderedDict entry holding (expiry float, value str) costs besides the key and value
# strings themselves: the tuple (56 bytes), the float (24) and the dict's linked slot (~100).
ENTRY_OVERHEAD_BYTES = 180


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


def _redis_client(redis_url: str):
    import redis.asyncio as aioredis

    # Short timeouts: a slow cache must not make requests slower than no cache.
    return aioredis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)


class PredictionCache:
    def __init__(self, model: str, *, redis_url: str | None, ttl_s: int, local_entries: int,
                 local_bytes: int, max_entry_bytes: int):
        self.model = model
        self.ttl_s = ttl_s
        self.local_entries = local_entries
        self.local_bytes = local_bytes
        self.max_entry_bytes = max_entry_bytes
        self._local: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._local_size = 0  # bytes of the entries in _local, as entry_bytes counts them
        self._redis = _redis_client(redis_url) if redis_url else None
        self.backend = "redis" if self._redis is not None else "memory"

    @property
    def entries(self) -> int:
        """Entries held in process (0 with Redis)."""
        return len(self._local)

    @property
    def size_bytes(self) -> int:
        """Bytes held in process (0 with Redis)."""
        return self._local_size

    @staticmethod
    def entry_bytes(key: str, value: str) -> int:
        return sys.getsizeof(key) + sys.getsizeof(value) + ENTRY_OVERHEAD_BYTES

    def _key(self, version: int, digest: str) -> str:
        return f"tp:pred:{self.model}:{version}:{digest}"

    def _drop(self, key: str) -> None:
        entry = self._local.pop(key, None)
        if entry is not None:
            self._local_size -= self.entry_bytes(key, entry[1])

    async def get(self, version: int, digest: str) -> dict[str, Any] | None:
        key = self._key(version, digest)
        if self._redis is not None:
            try:
                raw = await self._redis.get(key)
            except Exception as exc:  # redis errors of every kind mean "no cache now"
                log.warning("prediction cache unavailable (%s); serving without it", exc)
                return None
            return None if raw is None else json.loads(raw)
        entry = self._local.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires < time.monotonic():
            self._drop(key)
            return None
        self._local.move_to_end(key)
        return json.loads(value)

    async def put(self, version: int, digest: str, value: str) -> None:
        """Caches an answer as its JSON text (what ``get`` decodes)."""
        key = self._key(version, digest)
        if len(value) > self.max_entry_bytes:
            return
        if self._redis is not None:
            try:
                await self._redis.set(key, value, ex=self.ttl_s)
            except Exception as exc:
                log.warning("prediction cache unavailable (%s); result not cached", exc)
            return
        size = self.entry_bytes(key, value)
        if self.local_entries <= 0 or size > self.local_bytes:
            return
        self._drop(key)
        self._local[key] = (time.monotonic() + self.ttl_s, value)
        self._local_size += size
        while len(self._local) > self.local_entries or self._local_size > self.local_bytes:
            old_key, (_, old_value) = self._local.popitem(last=False)
            self._local_size -= self.entry_bytes(old_key, old_value)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()


# ---------------------------------------------------------------------- prediction log

@dataclass(frozen=True)
class Confirmation:
    """What ``confirm`` found: the logged prediction and what became of this label.
    ``outcome``: ``counted`` (the first label for this prediction), ``duplicate`` (the same
    label again) or ``conflict`` (another label than the one that counted)."""

    version: int
    prediction: Any
    outcome: str
    label: str  # the label that counted: this one, or the first one for a duplicate/conflict


class FeedbackStoreError(RuntimeError):
    """The prediction log cannot be read or written now (Redis or SQLite failing)."""


class PredictionLog(abc.ABC):
    """Where keyed predictions wait for their confirmed label; see the module docstring."""

    backend: str

    @abc.abstractmethod
    async def record(self, key: str, version: int, prediction: Any, caller: str | None = None) -> None:
        """Remembers what ``version`` answered for ``key`` (asked by the API client
        ``caller``), replacing an earlier entry. A failing store is logged, not raised: the
        answer is already computed."""

    @abc.abstractmethod
    async def confirm(self, key: str, label: str, caller: str | None = None) -> Confirmation | None:
        """Marks the prediction logged for ``key`` as confirmed with ``label`` by the API
        client ``caller`` unless it already is; ``None`` when no unexpired prediction has that
        key. Raises ``FeedbackStoreError`` when the store cannot be read."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Releases the connection."""


def _outcome(stored: str, label: str, counted: bool) -> str:
    if counted:
        return "counted"
    return "duplicate" if stored == label else "conflict"


# KEYS[1]: the log entry (a hash of version, prediction and, once confirmed, confirmed).
# Atomic in Redis, so two workers confirming the same key at once count it once.
_CONFIRM_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local counted = redis.call('HSETNX', KEYS[1], 'confirmed', ARGV[1])
if counted == 1 and ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'confirmed_by', ARGV[2]) end
return {counted, redis.call('HGET', KEYS[1], 'version'), redis.call('HGET', KEYS[1], 'prediction'),
        redis.call('HGET', KEYS[1], 'confirmed')}
"""


class RedisPredictionLog(PredictionLog):
    backend = "redis"

    def __init__(self, model: str, redis_url: str, ttl_s: int):
        self.model = model
        self.ttl_s = ttl_s
        self._redis = _redis_client(redis_url)
        self._confirm = self._redis.register_script(_CONFIRM_LUA)

    def _key(self, key: str) -> str:
        return f"tp:fb:{self.model}:{key}"

    async def record(self, key: str, version: int, prediction: Any, caller: str | None = None) -> None:
        name = self._key(key)
        entry = {"version": version, "prediction": json.dumps(prediction)}
        if caller:
            entry["caller"] = caller
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                # A new prediction replaces the old one and its confirmation, in one step.
                pipe.delete(name)
                pipe.hset(name, mapping=entry)
                pipe.expire(name, self.ttl_s)
                await pipe.execute()
        except Exception as exc:
            log.warning("prediction log unavailable (%s); key %r cannot get feedback", exc, key)

    async def confirm(self, key: str, label: str, caller: str | None = None) -> Confirmation | None:
        try:
            found = await self._confirm(keys=[self._key(key)], args=[label, caller or ""])
        except Exception as exc:
            raise FeedbackStoreError(f"the prediction log (Redis) is unavailable: {exc}") from exc
        if found is None:
            return None
        counted, version, prediction, stored = found
        stored = stored.decode()
        return Confirmation(version=int(version), prediction=json.loads(prediction),
                            outcome=_outcome(stored, label, bool(counted)), label=stored)

    async def close(self) -> None:
        await self._redis.aclose()


class SQLitePredictionLog(PredictionLog):
    """One SQLite file (WAL mode) for the workers of a replica; each worker reaches it from
    one thread of its own, so the event loop never waits on a lock. Expired rows are
    deleted every ``PRUNE_EVERY`` records."""

    backend = "sqlite"
    PRUNE_EVERY = 1000

    def __init__(self, model: str, path: Path, ttl_s: int):
        self.model = model
        self.path = path
        self.ttl_s = ttl_s
        self._records = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tp-feedback")
        self._conn: sqlite3.Connection | None = None
        self._executor.submit(self._connect).result()

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode (isolation_level=None): transactions are opened explicitly.
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # WAL with synchronous=NORMAL: a power loss may drop the last few log entries, never
        # corrupt the file; those predictions just cannot get feedback.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("""CREATE TABLE IF NOT EXISTS tp_prediction_log (
            model TEXT NOT NULL, key TEXT NOT NULL, version INTEGER NOT NULL,
            prediction TEXT NOT NULL, expires_at REAL NOT NULL, confirmed TEXT,
            caller TEXT, confirmed_by TEXT,
            PRIMARY KEY (model, key))""")
        # A log file written before the callers were recorded gets their columns (empty).
        columns = {row[1] for row in conn.execute("PRAGMA table_info(tp_prediction_log)")}
        for column in ("caller", "confirmed_by"):
            if column not in columns:
                try:
                    conn.execute(f"ALTER TABLE tp_prediction_log ADD COLUMN {column} TEXT")
                except sqlite3.OperationalError as exc:  # another worker added it first
                    if "duplicate column" not in str(exc):
                        raise
        conn.execute("CREATE INDEX IF NOT EXISTS tp_prediction_log_expiry ON tp_prediction_log (expires_at)")
        self._conn = conn

    async def _call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _record(self, key: str, version: int, prediction: str, caller: str | None) -> None:
        now = time.time()
        self._conn.execute(
            """INSERT INTO tp_prediction_log (model, key, version, prediction, expires_at, confirmed, caller,
                                              confirmed_by)
               VALUES (?, ?, ?, ?, ?, NULL, ?, NULL)
               ON CONFLICT (model, key) DO UPDATE SET version = excluded.version,
                   prediction = excluded.prediction, expires_at = excluded.expires_at, confirmed = NULL,
                   caller = excluded.caller, confirmed_by = NULL""",
            (self.model, key, version, prediction, now + self.ttl_s, caller))
        self._records += 1
        if self._records % self.PRUNE_EVERY == 0:
            self._conn.execute("DELETE FROM tp_prediction_log WHERE expires_at < ?", (now,))

    async def record(self, key: str, version: int, prediction: Any, caller: str | None = None) -> None:
        try:
            await self._call(self._record, key, version, json.dumps(prediction), caller)
        except sqlite3.Error as exc:
            log.warning("prediction log unavailable (%s); key %r cannot get feedback", exc, key)

    def _confirm(self, key: str, label: str, caller: str | None) -> Confirmation | None:
        conn = self._conn
        # BEGIN IMMEDIATE takes the write lock first: two workers confirming one key run one
        # after the other, and the second sees the first's label.
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(
                "SELECT version, prediction, confirmed FROM tp_prediction_log "
                "WHERE model = ? AND key = ? AND expires_at >= ?", (self.model, key, time.time())).fetchone()
            if row is None:
                conn.execute("COMMIT")
                return None
            version, prediction, stored = row
            if stored is None:
                conn.execute("UPDATE tp_prediction_log SET confirmed = ?, confirmed_by = ? WHERE model = ? AND key = ?",
                             (label, caller, self.model, key))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return Confirmation(version=int(version), prediction=json.loads(prediction),
                            outcome=_outcome(stored, label, stored is None),
                            label=label if stored is None else stored)

    async def confirm(self, key: str, label: str, caller: str | None = None) -> Confirmation | None:
        try:
            return await self._call(self._confirm, key, label, caller)
        except sqlite3.Error as exc:
            raise FeedbackStoreError(f"the prediction log ({self.path}) is unavailable: {exc}") from exc

    async def close(self) -> None:
        def close_conn() -> None:
            if self._conn is not None:
                self._conn.close()

        await self._call(close_conn)
        self._executor.shutdown(wait=True)


def prediction_log(model: str, *, redis_url: str | None, home: Path, ttl_s: int) -> PredictionLog:
    """Redis when configured, else the replica's SQLite file ``home/serving/prediction-log.sqlite``."""
    if redis_url:
        return RedisPredictionLog(model, redis_url, ttl_s)
    return SQLitePredictionLog(model, home / "serving" / "prediction-log.sqlite", ttl_s)
