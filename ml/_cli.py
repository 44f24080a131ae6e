"""What both commands share: logging set-up and turning platform errors into one line."""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable

from train_platform.exceptions import TrainPlatformError


def set_threads_from_env() -> None:
    """``TP_TORCH_THREADS`` caps torch's intra-op threads. On a shared machine (several
    processes on few cores) one thread per process is several times faster than the default,
    which oversubscribes the cores."""
    value = os.environ.get("TP_TORCH_THREADS")
    if value:
        import torch

        torch.set_num_threads(max(1, int(value)))


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    set_threads_from_env()
    try:
        return main(argv)
    except TrainPlatformError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
