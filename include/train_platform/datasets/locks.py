"""Version locks for operations on a dataset that must not interleave (merge into main,
revert, expire).

With ``TP_REDIS_URL`` set the lock is a Redis key with a TTL, shared by every machine, that
a crashed holder cannot keep forever; a background thread extends the TTL while the holder
works. Without Redis it is an ``flock`` on a file under TP_HOME, released by the kernel when
the holder dies. Either way a second taker gets ``ConcurrentAccessError`` naming the holder,
or waits up to ``wait_s`` seconds when asked to.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from train_platform.datasets.exceptions import ConcurrentAccessError
from train_platform.settings import Settings, redact

log = logging.getLogger(__name__)

# Compare-and-delete / compare-and-extend: only the holder's token may release or renew.
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"


@dataclass(frozen=True)
class LockConfig:
    # A merge of a large dataset takes minutes; the TTL only matters when a holder dies
    # without releasing, and then other users should not wait much longer than that.
    ttl_s: float = 120.0
    # Poll often enough that a waiter starts within a fraction of a second of the release.
    poll_s: float = 0.05


def holder_description(user: str, operation: str) -> str:
    return f"{user} ({operation}, pid {os.getpid()} on {socket.gethostname()}, since {datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ})"


@contextmanager
def version_lock(
    key: str,
    holder: str,
    settings: Settings,
    *,
    wait_s: float | None = None,
    config: LockConfig = LockConfig(),
) -> Iterator[None]:
    """Hold the lock named ``key`` for the ``with`` block. ``wait_s=None`` fails at once
    when it is taken; a number waits up to that many seconds first."""
    if settings.redis_url:
        with _redis_lock(key, holder, settings.redis_url, wait_s, config):
            yield
    else:
        with _file_lock(key, holder, settings.home / "locks", wait_s, config):
            yield


def _deadline(wait_s: float | None) -> float:
    return time.monotonic() + (wait_s or 0.0)


@contextmanager
def _redis_lock(key: str, holder: str, url: str, wait_s: float | None, config: LockConfig) -> Iterator[None]:
    import redis

    client = redis.Redis.from_url(url)
    name = f"tp:lock:{key}"
    token = uuid.uuid4().hex
    value = json.dumps({"token": token, "holder": holder})
    ttl_ms = int(config.ttl_s * 1000)
    deadline = _deadline(wait_s)
    try:
        while not client.set(name, value, nx=True, px=ttl_ms):
            if time.monotonic() >= deadline:
                current = client.get(name)
                who = json.loads(current)["holder"] if current else "another process (just released)"
                raise ConcurrentAccessError(key, who)
            time.sleep(config.poll_s * (0.5 + random.random()))
    except redis.RedisError as exc:
        # redact: the URL's password never reaches a message
        raise ConcurrentAccessError(key, redact(f"nobody known: Redis at {url} failed ({exc})")) from exc

    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(client, name, value, ttl_ms, stop), daemon=True, name=f"lock-renew-{key}")
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        try:
            client.eval(_RELEASE, 1, name, value)
        except redis.RedisError:
            log.warning("could not release lock %s; it expires in %.0f s", name, config.ttl_s, exc_info=True)


def _renew(client, name: str, value: str, ttl_ms: int, stop: threading.Event) -> None:  # type: ignore[no-untyped-def]
    while not stop.wait(ttl_ms / 3000):
        try:
            if not client.eval(_RENEW, 1, name, value, ttl_ms):
                log.error("lost lock %s: its TTL ran out before it could be renewed", name)
                return
        except Exception:  # noqa: BLE001 - a renewal failure must not kill the holder's work
            log.warning("could not renew lock %s", name, exc_info=True)


@contextmanager
def _file_lock(key: str, holder: str, folder: Path, wait_s: float | None, config: LockConfig) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key.replace('/', '_').replace(':', '_')}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = _deadline(wait_s)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    with open(path, encoding="utf-8") as handle:
                        who = handle.read().strip() or "another process (starting)"
                    raise ConcurrentAccessError(key, who) from None
                time.sleep(config.poll_s * (0.5 + random.random()))
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
