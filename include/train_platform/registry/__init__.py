"""The model registry: versions stored in the BentoML model store, aliases with history,
A/B experiments, live serving stats, and the scheduled-deployment decision logic.

Imports nothing heavy: bentoml and torch are imported inside the functions that need them.
"""

from train_platform.registry.exceptions import (
    AliasNotSetError,
    CheckpointInvalidError,
    DeploymentError,
    ExperimentError,
    ExportError,
    InvalidModelNameError,
    ModelNotFoundError,
    NothingToRollBackError,
    PackagingError,
    RegistryError,
    VersionNotFoundError,
)
from train_platform.registry.registry import (
    CANDIDATE,
    PRODUCTION,
    Experiment,
    LiveStats,
    ModelEvent,
    ModelRegistry,
    ModelVersion,
    ServingState,
)

__all__ = [
    "AliasNotSetError", "CANDIDATE", "CheckpointInvalidError", "DeploymentError", "Experiment",
    "ExperimentError", "ExportError", "InvalidModelNameError", "LiveStats", "ModelEvent",
    "ModelNotFoundError", "ModelRegistry", "ModelVersion", "NothingToRollBackError",
    "PRODUCTION", "PackagingError", "RegistryError", "ServingState", "VersionNotFoundError",
]
