"""The model registry: versions stored in the BentoML model store, aliases with history,
model references, A/B experiments, live serving stats, and the scheduled-deployment
decision logic.

Imports nothing heavy: bentoml is imported inside the functions that need it, and torch
never (checkpoints are checked from their metadata file and file hashes).
"""

from train_platform.registry.checkpoints import CheckpointInfo, read_checkpoint_info
from train_platform.registry.exceptions import (
    AliasNotSetError,
    CheckpointInvalidError,
    DeploymentError,
    ExperimentError,
    ExportError,
    InvalidModelNameError,
    InvalidModelRefError,
    ModelNotFoundError,
    NothingToRollBackError,
    PackagingError,
    RegistryError,
    VersionNotFoundError,
)
from train_platform.registry.experiments import Experiment, ServingState
from train_platform.registry.live_stats import LiveStats
from train_platform.registry.model_registry import ModelEvent, ModelRegistry, ModelVersion
from train_platform.registry.names import CANDIDATE, LATEST, PRODUCTION
from train_platform.registry.refs import ModelRef, ResolvedModel, resolve

__all__ = [
    "AliasNotSetError", "CANDIDATE", "CheckpointInfo", "CheckpointInvalidError", "DeploymentError",
    "Experiment", "ExperimentError", "ExportError", "InvalidModelNameError", "InvalidModelRefError",
    "LATEST", "LiveStats", "ModelEvent", "ModelNotFoundError", "ModelRef", "ModelRegistry",
    "ModelVersion", "NothingToRollBackError", "PRODUCTION", "PackagingError", "RegistryError",
    "ResolvedModel", "ServingState", "VersionNotFoundError", "read_checkpoint_info", "resolve",
]
