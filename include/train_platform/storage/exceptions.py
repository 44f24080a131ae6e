"""Errors of ``train_platform.storage``."""

from __future__ import annotations

from train_platform.exceptions import TrainPlatformError


class MountError(TrainPlatformError, ValueError):
    """A mount spec is invalid. The message names the offending item (its shorthand or its
    position in the list) and what is wrong with it.

    It is a ``ValueError`` too, so that pydantic validators and the pipeline compiler can
    treat it as ordinary bad input."""

    exit_code = 2
