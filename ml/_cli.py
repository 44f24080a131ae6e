"""What the ``python -m ml.*`` commands share: logging set-up and turning platform errors
into one line.

Everything they write to stderr (log lines, the error line, the traceback of an unexpected
error) goes through ``train_platform.settings.redact``, as ``tp``'s does: no password of a
database URL, S3 key or token reaches a task's log. The formatter lives in
``train_platform.settings``, the core's bottom layer, which ``ml`` may import (the import
contracts keep ``ml`` away from only Airflow, operators, the compiler and the CLI)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable

from train_platform.exceptions import TrainPlatformError
from train_platform.settings import configure_logging, redact


def set_threads_from_env() -> None:
    """``TP_TORCH_THREADS`` caps torch's intra-op threads. On a shared machine (several
    processes on few cores) one thread per process is several times faster than the default,
    which oversubscribes the cores."""
    value = os.environ.get("TP_TORCH_THREADS")
    if value:
        import torch

        torch.set_num_threads(max(1, int(value)))


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    configure_logging(logging.INFO)
    set_threads_from_env()
    try:
        return main(argv)
    except TrainPlatformError as e:
        print(f"error: {redact(e)}", file=sys.stderr)
        return e.exit_code
    except Exception:  # noqa: BLE001 - an unexpected error: its traceback, with secrets redacted
        import traceback

        sys.stderr.write(redact(traceback.format_exc()))
        return 1
