"""Errors of ``train_platform.quality``. ``tp dataset check`` prints them as one line and
exits with their ``exit_code``: 2 for input that cannot be checked (nothing is written)."""

from __future__ import annotations

from train_platform.exceptions import TrainPlatformError


class QualityError(TrainPlatformError):
    """Base of every error of the annotation check: the check could not run to its end."""


class QualityInputError(QualityError, ValueError):
    """The dataset, ref, model or report folder given to a check is unusable: unknown,
    empty, or of the wrong kind. Raised before anything is written."""

    exit_code = 2


class ModelPredictionsError(QualityError):
    """The model's batch inference failed, or its predictions file does not fit the
    samples it was asked to score."""
