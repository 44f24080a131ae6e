"""Served data comes back: a worker's side of capturing keyed predictions into a dataset's
``intake`` branch (``TP_SERVE_CAPTURE_*``; the spool, the sample ids and the import are
``train_platform.datasets.served``).

On the request path ``capture`` costs a hash of the key and, for a captured request, one
JSON line appended to the worker's spool file: no commit, no lock wait, no network. A
background task flushes every ``capture_flush_s`` seconds, or as soon as
``capture_flush_samples`` captures are spooled: it renames the spool file for import (on
the event loop, a rename) and, with ``capture_import`` ``service``, imports every ready
file of the spool into the dataset in a thread of its own, one commit per flush. A slow or
failing import delays only the next flush; the files wait on disk.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np

from ml.serving import metrics
from ml.serving.config import ServingConfig
from train_platform.datasets.served import (
    SpoolWriter,
    capture_record,
    check_capture_target,
    import_spool,
    is_captured,
    spool_dir,
)
from train_platform.settings import Settings

log = logging.getLogger(__name__)


class ServedCapture:
    def __init__(self, config: ServingConfig, settings: Settings, user: str):
        self.model = config.model
        self.rate = config.capture_rate
        self.dataset = config.capture_dataset
        self.flush_s = config.capture_flush_s
        self.flush_samples = config.capture_flush_samples
        self.imports = config.capture_import == "service"
        self.settings = settings
        self.user = user
        if self.imports:
            # Checked at start, so a wrong name or a missing role stops the service with the
            # reason instead of failing every flush (and loads pyiceberg before any request).
            check_capture_target(self.dataset, user, settings)
        self.directory = spool_dir(settings.home, self.dataset)
        self.writer = SpoolWriter(self.directory)
        self._due = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._failures_logged = 0.0
        self._spooled = metrics.child(metrics.CAPTURED, model=self.model, outcome="spooled")
        log.info("capturing %.0f%% of keyed predictions of %s into %s@intake (spool %s, import by %s)",
                 self.rate * 100, self.model, self.dataset, self.directory,
                 "the service" if self.imports else "`tp dataset intake-served`")

    def capture(self, key: str | None, version: int, sensor: np.ndarray, answer: dict[str, Any]) -> None:
        """Spools the prediction when its key is sampled; never raises."""
        if not is_captured(key, self.rate):
            return
        try:
            self.writer.append(capture_record(self.model, version, key, sensor, answer))
        except (OSError, ValueError) as exc:
            metrics.child(metrics.CAPTURED, model=self.model, outcome="failed").inc()
            now = time.monotonic()
            if now - self._failures_logged > 60:  # a full disk must not flood the log
                self._failures_logged = now
                log.warning("%s: a captured prediction could not be spooled to %s: %s",
                            self.model, self.directory, exc)
            return
        self._spooled.inc()
        if self.writer.samples >= self.flush_samples:
            self._due.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._flush_forever())

    async def flush(self) -> None:
        """Hands the spool file over and, when the service imports, imports the ready files."""
        self.writer.rotate()
        if not self.imports:
            return
        started = time.perf_counter()
        try:
            result = await asyncio.to_thread(self._import)
        finally:
            metrics.child(metrics.CAPTURE_FLUSH, model=self.model).observe(time.perf_counter() - started)
        if result.imported:
            metrics.child(metrics.CAPTURED, model=self.model, outcome="imported").inc(result.imported)
        if result.duplicates:
            metrics.child(metrics.CAPTURED, model=self.model, outcome="duplicate").inc(result.duplicates)

    def _import(self):
        from train_platform.datasets.dataset import open_dataset

        # A Dataset is meant for one thread: each flush opens its own.
        return import_spool(open_dataset(self.dataset, user=self.user, settings=self.settings), self.directory)

    async def _flush_forever(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._due.wait(), timeout=self.flush_s)
            except asyncio.TimeoutError:
                pass
            self._due.clear()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: importing served samples into %s@intake failed; the spool files stay "
                              "for the next flush", self.model, self.dataset)

    async def close(self) -> None:
        """Stops the flusher and hands the open spool file over; what is not imported yet
        waits for the next start or for `tp dataset intake-served`."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self.writer.close()
