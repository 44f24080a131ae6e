"""What both commands share: logging set-up and turning platform errors into one line."""

from __future__ import annotations

import logging
import sys
from typing import Callable

from train_platform.exceptions import TrainPlatformError


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        return main(argv)
    except TrainPlatformError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
