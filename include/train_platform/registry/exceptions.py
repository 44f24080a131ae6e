"""Errors of ``train_platform.registry``. Each names the model, version or alias at fault."""

from __future__ import annotations

from train_platform.exceptions import TrainPlatformError


class RegistryError(TrainPlatformError):
    """Base of every error the model registry raises on purpose."""

    exit_code = 3


class InvalidModelNameError(RegistryError, ValueError):
    """A model name or alias is not usable as a BentoML tag part (lowercase letters, digits,
    ``-``, ``_``, ``.``; starts with a letter or digit; at most 63 characters)."""


class InvalidModelRefError(RegistryError, ValueError):
    """A model reference is not of the form ``model:NAME:ALIAS`` or ``model:NAME:vN``."""


class ModelNotFoundError(RegistryError, LookupError):
    """No model of that name is registered."""


class VersionNotFoundError(RegistryError, LookupError):
    """The model exists but has no such version."""


class AliasNotSetError(RegistryError, LookupError):
    """The alias (``production``, ``candidate``, ...) points at no version of the model."""


class NothingToRollBackError(RegistryError):
    """The alias has no earlier holder to go back to."""


class CheckpointInvalidError(RegistryError, ValueError):
    """The directory given to ``register`` is not a finished, intact checkpoint written by
    ``ml.train`` (or a registration argument such as the gate status or a metric is bad)."""


class ExperimentError(RegistryError, ValueError):
    """An A/B experiment cannot be set or cleared: bad weight, same version twice, no
    production version to compare with, or no experiment running."""


class ExportError(RegistryError):
    """Exporting a model version to S3 failed (no endpoint configured, bad URI, upload error)."""


class PackagingError(RegistryError):
    """Building a Bento for a model version failed."""


class DeploymentError(RegistryError):
    """A deployment step cannot run (bad policy, inconsistent registry state)."""
