"""Errors of the ``ml`` package. Each one is a ``TrainPlatformError`` so that every command
(``python -m ml.train``, ``python -m ml.evaluate``, the ``tp`` CLI) prints it as one line and
exits with its ``exit_code``, without a traceback."""

from __future__ import annotations

from train_platform.exceptions import TrainPlatformError


class MLError(TrainPlatformError):
    """Base of every error the ``ml`` package raises on purpose."""

    exit_code = 2


class DataError(MLError):
    """A dataset cannot be used: unknown ref, unreadable file, NaN values, an empty set,
    wrong channel count or labels of the wrong kind. The message says what and where."""


class DatasetNotFoundError(DataError):
    """A data ref names something that does not exist (file, aeon dataset, platform dataset)."""


class InvalidInputError(MLError):
    """One inference sample is malformed (shape, channel count, non-finite value, too long)."""


class CheckpointError(MLError):
    """A directory is not a readable checkpoint, or a checkpoint does not fit the request
    (another task, another channel count)."""


class ConfigError(MLError):
    """A training configuration (file or command-line flags) is invalid."""
