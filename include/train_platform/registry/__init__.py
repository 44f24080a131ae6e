"""The model registry: versions stored in the BentoML model store, aliases with history,
model references, the evaluation gate, A/B experiments, live serving stats, the
scheduled-deployment decision logic, model roles and the platform-admin role.

Imports nothing heavy: bentoml is imported inside the functions that need it, and torch
never (checkpoints are checked from their metadata file and file hashes).
"""

from train_platform.registry.checkpoints import CheckpointInfo, read_checkpoint_info
from train_platform.registry.exceptions import (
    AccessDeniedError,
    AliasNotSetError,
    CheckpointInvalidError,
    DeploymentError,
    ExperimentError,
    ExportError,
    GateError,
    IdentityError,
    InvalidModelNameError,
    InvalidModelRefError,
    ModelNotFoundError,
    NothingToRollBackError,
    PackagingError,
    RegistryError,
    RoleError,
    VersionNotFoundError,
)
from train_platform.registry.experiments import Experiment, ServingState
from train_platform.registry.gate import GateDecision, GatePolicy, decide_gate
from train_platform.registry.live_stats import LiveStats
from train_platform.registry.model_registry import ModelEvent, ModelRegistry, ModelVersion
from train_platform.registry.names import CANDIDATE, LATEST, PRODUCTION
from train_platform.registry.refs import ModelRef, ResolvedModel, resolve

__all__ = [
    "AccessDeniedError", "AliasNotSetError", "CANDIDATE", "CheckpointInfo", "CheckpointInvalidError",
    "DeploymentError", "Experiment", "ExperimentError", "ExportError", "GateDecision", "GateError", "GatePolicy",
    "IdentityError", "InvalidModelNameError", "InvalidModelRefError",
    "LATEST", "LiveStats", "ModelEvent", "ModelNotFoundError", "ModelRef", "ModelRegistry",
    "ModelVersion", "NothingToRollBackError", "PRODUCTION", "PackagingError", "RegistryError",
    "ResolvedModel", "RoleError", "ServingState", "VersionNotFoundError", "decide_gate", "read_checkpoint_info",
    "resolve",
]
