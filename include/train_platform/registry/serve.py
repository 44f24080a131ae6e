"""Starting the inference service (``ml/service.py``) for a registered model.

The service reads which model to serve from ``TP_SERVE_MODEL``; everything else (database,
Redis, tokens) comes from the usual ``TP_*`` settings, which the server's worker processes
inherit from this process's environment.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


SERVICE = "ml.service:InferenceService"
PROJECT_ROOT = Path(__file__).resolve().parents[3]


def _prepare_env(name: str) -> None:
    from train_platform.registry.names import check_name

    os.environ["TP_SERVE_MODEL"] = check_name(name)


@contextlib.contextmanager
def _callers_logging_kept() -> Iterator[None]:
    """``bentoml.serve`` configures the calling process's logging as a server's
    (``dictConfig`` with ``disable_existing_loggers``: every logger that exists is disabled
    and the root logger gets bentoml's handler at WARNING). The caller of ``start_server``
    goes on running, so its loggers are put back as they were."""
    root = logging.getLogger()
    root_state = (root.level, list(root.handlers))
    loggers = {name: (lg.disabled, lg.level, lg.propagate, list(lg.handlers))
               for name, lg in logging.root.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    try:
        yield
    finally:
        root.setLevel(root_state[0])
        root.handlers[:] = root_state[1]
        for name, (disabled, level, propagate, handlers) in loggers.items():
            logger = logging.getLogger(name)
            logger.disabled, logger.propagate = disabled, propagate
            logger.setLevel(level)
            logger.handlers[:] = handlers


def start_server(name: str, *, host: str = "127.0.0.1", port: int = 3000, **kwargs: Any):
    """Starts the server in the background and returns bentoml's server handle (use it as a
    context manager, or call ``stop()``); the calling process's logging stays as it was."""
    import bentoml

    _prepare_env(name)
    with _callers_logging_kept():
        return bentoml.serve(SERVICE, host=host, port=port, working_dir=str(PROJECT_ROOT), **kwargs)


def serve_blocking(name: str, *, host: str = "127.0.0.1", port: int = 3000) -> int:
    import bentoml

    _prepare_env(name)
    bentoml.serve(SERVICE, host=host, port=port, working_dir=str(PROJECT_ROOT), blocking=True)
    return 0
