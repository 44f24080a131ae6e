"""Errors of ``train_platform.storage``."""

from __future__ import annotations

from train_platform.exceptions import TrainPlatformError


class MountError(TrainPlatformError, ValueError):
    """A mount spec is invalid. The message names the offending item (its shorthand or its
    position in the list) and what is wrong with it.

    It is a ``ValueError`` too, so that pydantic validators and the pipeline compiler can
    treat it as ordinary bad input."""

    exit_code = 2


class ObjectStoreError(TrainPlatformError):
    """The S3/MinIO endpoint cannot be used: not configured, unreachable, refusing the
    credentials, or a bucket it cannot create or check. The message names the endpoint
    and the bucket, never a secret. Exit code 3: the environment, not the input, is wrong."""

    exit_code = 3
