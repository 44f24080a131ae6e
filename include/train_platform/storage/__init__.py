"""Storage mounts for tasks: one spec (structured or ``name(type):/path`` shorthand) for
pvc, hostpath, configmap, secret, memory, nfs and s3 volumes, rendered as Kubernetes volumes
or local folders. Light to import: the Kubernetes client loads only when rendering."""

from train_platform.storage.exceptions import MountError
from train_platform.storage.mounts import (
    MAX_MEMORY_BYTES,
    MOUNT_TYPES,
    AnyMount,
    ConfigMapMount,
    HostPathMount,
    MemoryMount,
    Mount,
    NfsMount,
    PvcMount,
    S3Mount,
    SecretMount,
    memory_bytes,
    merge_mounts,
    parse_mounts,
    prepare_local,
    to_k8s,
)

__all__ = [
    "MAX_MEMORY_BYTES", "MOUNT_TYPES", "AnyMount", "ConfigMapMount", "HostPathMount", "MemoryMount",
    "Mount", "MountError", "NfsMount", "PvcMount", "S3Mount", "SecretMount", "memory_bytes",
    "merge_mounts", "parse_mounts", "prepare_local", "to_k8s",
]
