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


class AccessDeniedError(RegistryError, PermissionError):
    """The acting user lacks the model role, the platform-admin role or the pipeline
    ownership a step needs. Exit code 5, as for a dataset."""

    exit_code = 5

    def __init__(self, message: str, *, operation: str | None = None, needed: str | None = None,
                 role: str | None = None):
        super().__init__(message)
        self.operation, self.needed, self.role = operation, needed, role


class RoleError(RegistryError, ValueError):
    """A role cannot be given or taken: unknown role, bad user name, the last owner of a model
    or the last platform-admin."""


class IdentityError(RegistryError):
    """A process asks to act as another user (``--as``, ``TP_USER``) without the
    platform-admin role. Exit code 2: the request itself is refused."""

    exit_code = 2


class GateError(RegistryError, ValueError):
    """An evaluation gate cannot be decided: bad policy, unreadable or incomplete evaluation."""
