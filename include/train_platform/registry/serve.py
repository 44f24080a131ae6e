"""Starting the inference service (``ml/service.py``) for a registered model.

The service reads which model to serve from ``TP_SERVE_MODEL``; everything else (database,
Redis, tokens) comes from the usual ``TP_*`` settings, which the server's worker processes
inherit from this process's environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


SERVICE = "ml.service:InferenceService"
PROJECT_ROOT = Path(__file__).resolve().parents[3]


def _prepare_env(name: str) -> None:
    from train_platform.registry.names import check_name

    os.environ["TP_SERVE_MODEL"] = check_name(name)


def start_server(name: str, *, host: str = "127.0.0.1", port: int = 3000, **kwargs: Any):
    """Starts the server in the background and returns bentoml's server handle (use it as a
    context manager, or call ``stop()``)."""
    import bentoml

    _prepare_env(name)
    return bentoml.serve(SERVICE, host=host, port=port, working_dir=str(PROJECT_ROOT), **kwargs)


def serve_blocking(name: str, *, host: str = "127.0.0.1", port: int = 3000) -> int:
    import bentoml

    _prepare_env(name)
    bentoml.serve(SERVICE, host=host, port=port, working_dir=str(PROJECT_ROOT), blocking=True)
    return 0
