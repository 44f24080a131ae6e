"""Checkpoint folders as the registry sees them: read without torch, checked by hash.

``ml.checkpoint`` writes a checkpoint as a folder of weights and a metadata file,
``checkpoint.json``, written last. The registry never loads the weights; it reads the
metadata file and checks that

- the folder exists and holds ``checkpoint.json``, a JSON object with ``task``,
  ``model_config``, ``normalization`` and ``weights`` (the weights file's name);
- its ``format_version`` is not newer than this code reads;
- it is not the snapshot of a training run that has not finished (``"complete": false``,
  written after every epoch while the run goes on);
- the weights file exists, and every file listed under ``files`` (name -> sha256; the
  weights, and the optimizer state of a finished run) has that hash, so weights changed or
  cut short after training are refused. Checkpoints written before ``files`` existed are
  checked for the weights file only.

``copy_checked`` runs the same checks while copying the folder (each file read once, hashed
and written), so registration stores exactly the bytes it checked.

``checkpoint_digest`` identifies a checkpoint by content (a folder path is reused by daily
pipelines); it is stored with every version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from train_platform.registry.exceptions import CheckpointInvalidError

log = logging.getLogger(__name__)

# The same names and numbers as ml/checkpoint.py (tests/registry check they agree).
META_FILE = "checkpoint.json"
FORMAT_VERSION = 1  # the newest format this code reads
REQUIRED_KEYS = ("task", "model_config", "normalization", "weights")

_BLOCK = 1 << 20


@dataclass(frozen=True)
class CheckpointInfo:
    """What registration needs from a checkpoint folder that passed the checks."""

    path: Path
    task: str
    labels: tuple[str, ...]  # class names for classification, () otherwise
    digest: str  # checkpoint_digest of the folder
    meta: dict[str, Any]  # the parsed checkpoint.json


def _checkpoint_files(checkpoint: Path) -> list[Path]:
    """Every file of the folder, in the order the digest reads them."""
    if not checkpoint.is_dir():
        raise CheckpointInvalidError(f"checkpoint folder {checkpoint} does not exist")
    return sorted(p for p in checkpoint.rglob("*") if p.is_file())


def _hash_folder(checkpoint: Path, copy_to: Path | None = None) -> tuple[str, dict[str, str]]:
    """(sha256 over the names and bytes of every file, {relative name: sha256 of the file}),
    reading each file once. With ``copy_to``, the bytes read are also written there (same
    relative names, each file flushed to disk), so what was hashed is what was copied."""
    digest = hashlib.sha256()
    per_file: dict[str, str] = {}
    for path in _checkpoint_files(checkpoint):
        name = path.relative_to(checkpoint).as_posix()
        digest.update(str(path.relative_to(checkpoint)).encode() + b"\0")
        one = hashlib.sha256()
        target = None
        if copy_to is not None:
            destination = copy_to / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            target = open(destination, "wb")
        try:
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(_BLOCK), b""):
                    digest.update(block)
                    one.update(block)
                    if target is not None:
                        target.write(block)
            if target is not None:
                target.flush()
                os.fsync(target.fileno())
        finally:
            if target is not None:
                target.close()
        per_file[name] = one.hexdigest()
    return digest.hexdigest(), per_file


def checkpoint_digest(checkpoint: Path) -> str:
    """sha256 over the names and bytes of every file in the checkpoint folder."""
    return _hash_folder(checkpoint)[0]


def read_meta(checkpoint: Path) -> dict[str, Any]:
    """The parsed ``checkpoint.json`` of a folder, with the keys every checkpoint has."""
    meta_path = checkpoint / META_FILE
    if not checkpoint.is_dir():
        raise CheckpointInvalidError(f"checkpoint folder {checkpoint} does not exist")
    if not meta_path.is_file():
        raise CheckpointInvalidError(f"{checkpoint} is not a checkpoint: {META_FILE} is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointInvalidError(f"{meta_path}: unreadable checkpoint metadata: {exc}") from exc
    if not isinstance(meta, dict):
        raise CheckpointInvalidError(f"{meta_path}: not a checkpoint of this platform (not a JSON object)")
    missing = [key for key in REQUIRED_KEYS if key not in meta]
    if missing:
        raise CheckpointInvalidError(
            f"{meta_path}: not a checkpoint of this platform (no {', '.join(map(repr, missing))})")
    version = meta.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointInvalidError(
            f"{meta_path}: format version {version!r} is newer than this code reads ({FORMAT_VERSION})")
    if not isinstance(meta["task"], str) or not meta["task"]:
        raise CheckpointInvalidError(f"{meta_path}: task must be a task name, not {meta['task']!r}")
    labels = meta.get("labels") or []
    if not isinstance(labels, list):
        raise CheckpointInvalidError(f"{meta_path}: labels must be a list of class names, not {labels!r}")
    return meta


def _recorded_files(checkpoint: Path, meta: dict[str, Any]) -> dict[str, str]:
    """{name: sha256} the metadata lists, each name a file inside the folder."""
    files = meta.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise CheckpointInvalidError(f"{checkpoint / META_FILE}: files must map file names to sha256 hashes")
    names = [meta["weights"], *files]
    root = checkpoint.resolve()
    for name in names:
        if not isinstance(name, str) or not name or not (root / name).resolve().is_relative_to(root):
            raise CheckpointInvalidError(f"{checkpoint / META_FILE}: {name!r} is not a file name inside the checkpoint")
    return files


def read_checkpoint_info(checkpoint: Path) -> CheckpointInfo:
    """Task, labels and digest of a finished, intact checkpoint folder (see the module
    docstring for the checks); ``CheckpointInvalidError`` saying what is wrong otherwise."""
    return _checked(checkpoint, None)


def copy_checked(checkpoint: Path, destination: Path) -> CheckpointInfo:
    """``read_checkpoint_info``, copying the folder's files into ``destination`` (a new,
    empty folder) while they are hashed: each file is read once, and the copy holds exactly
    the bytes that were checked. A checkpoint whose metadata changed while it was copied
    (a training run writing into the folder) is refused."""
    info = _checked(checkpoint, destination)
    try:
        copied = json.loads((destination / META_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointInvalidError(f"{checkpoint / META_FILE} changed while it was copied: {exc}") from exc
    if copied != info.meta:
        raise CheckpointInvalidError(f"{checkpoint / META_FILE} changed while the checkpoint was copied; register it "
                                     "again once the run writing it has finished")
    return info


def _checked(checkpoint: Path, copy_to: Path | None) -> CheckpointInfo:
    meta = read_meta(checkpoint)
    if meta.get("complete") is False:
        raise CheckpointInvalidError(
            f"{checkpoint} is a snapshot of a training run that has not finished "
            f"(epoch {meta.get('epochs_completed', '?')} of {meta.get('epochs', '?')})")
    recorded = _recorded_files(checkpoint, meta)
    digest, actual = _hash_folder(checkpoint, copy_to)
    for name in (meta["weights"], *recorded):
        if name not in actual:
            raise CheckpointInvalidError(f"{checkpoint} is not a complete checkpoint: {name} is missing")
    for name, expected in sorted(recorded.items()):
        if actual[name] != expected:
            raise CheckpointInvalidError(
                f"{checkpoint}: {name} does not match the sha256 recorded in {META_FILE} "
                "(changed or cut short after training)")
    if not recorded:
        log.info("%s records no file hashes (written before they were); checked for %s only",
                 checkpoint, meta["weights"])
    return CheckpointInfo(path=checkpoint, task=meta["task"], labels=tuple(str(v) for v in meta.get("labels") or []),
                          digest=digest, meta=meta)
