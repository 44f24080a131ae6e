"""Where a task's inputs and outputs live on each executor.

A task names container paths (``/mnt/user/data/processed``) or refs
(``tp://sensors@main``, ``s3://bucket/key``, ``aeon:BasicMotions``, ``model:NAME:ALIAS|vN``). In a pod, paths are
used as written and backed by the pipeline's storage mounts. On the local executor the same
path maps to a stable folder under ``TP_HOME`` (through the mount that covers it, when one
does), so the output of one task is the input of the next exactly as in a pod.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Sequence

from train_platform.settings import Settings


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def is_ref(location: str) -> bool:
    """Refs (``tp://…``, ``s3://…``, ``aeon:NAME``, ``model:NAME:ALIAS|vN``) pass through
    untouched; only container paths are mapped."""
    return bool(_SCHEME.match(location))


def local_path(location: str, settings: Settings, mounts: Sequence = ()) -> Path:
    """The local folder that stands for container path ``location``."""
    posix = PurePosixPath(location)
    if not posix.is_absolute() or ".." in posix.parts:
        raise ValueError(f"task paths must be absolute container paths without '..', got {location!r}")
    # The deepest mount that covers the path decides where it lives.
    for mount in sorted(mounts, key=lambda m: len(str(m.mount_path)), reverse=True):
        root = PurePosixPath(mount.mount_path)
        if posix == root or root in posix.parents:
            return mount.local_path(settings).joinpath(*posix.relative_to(root).parts)
    return settings.home.joinpath("fs", *posix.parts[1:])


def resolve(location: str, executor: str, settings: Settings, mounts: Sequence = ()) -> str:
    if is_ref(location) or executor != "local":
        return location
    return str(local_path(location, settings, mounts))
