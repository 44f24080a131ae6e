"""Errors of ``train_platform.sampling``. Each is bad input to a selection (exit code 2):
the message names the strategy, the budget, the scores or the samples at fault."""

from __future__ import annotations

from train_platform.exceptions import TrainPlatformError


class SamplingError(TrainPlatformError):
    """Base of every sampling error. Nothing was selected, nothing was written."""

    exit_code = 2


class UnknownStrategyError(SamplingError):
    """The strategy name is not one of ``strategies.STRATEGIES``."""


class BudgetError(SamplingError):
    """The budget, threshold or per-class minimum cannot be met by the pool, or is not a
    valid number for the strategy."""


class ScoresError(SamplingError):
    """The model scores are malformed, do not cover the candidates, or lack what the
    strategy needs (MC-dropout passes for ``bald``, embeddings for ``diverse``)."""


class NoCandidatesError(SamplingError):
    """No sample of the dataset is a candidate (every one is confirmed, say)."""


class MissingInputError(SamplingError):
    """The dataset, ref or model a request names does not exist or resolves to nothing."""


class ScoringError(SamplingError):
    """The model scorer (``python -m ml.serving.batch_inference``) failed. Its exit code 2
    (bad data or model for the request) stays 2; anything else is 1."""

    def __init__(self, message: str, returncode: int):
        super().__init__(message)
        self.exit_code = 2 if returncode == 2 else 1
