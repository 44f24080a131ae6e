"""Checkpoint directories: what the trainer writes and what serving loads.

A checkpoint is a directory with
- ``model.safetensors`` (when the safetensors package is installed) or ``model.pt`` (a torch
  ``state_dict`` saved with ``torch.save``, loadable with ``weights_only=True``; never a
  pickled module);
- ``checkpoint.json``: format version, ``task``, ``labels``, ``n_channels``, ``model_config``,
  ``normalization`` (per-channel mean/std), ``drift_reference`` (per-channel histogram for
  PSI), ``mode``, ``epochs``, ``dataset_ref`` and the rest of the training record;
  ``complete`` (false in the per-epoch snapshots of a run still going on) and ``files``
  (name -> sha256 of the weights and optimizer files written with it), which is what the
  registry checks a checkpoint by without importing torch (older checkpoints lack
  ``files``);
- ``optimizer.pt`` and ``plugins/`` (replay memory, EWC importances) for continued training.

Every file is written to a temporary name and renamed, and ``checkpoint.json`` is written
last, so a directory with a ``checkpoint.json`` always has the weights it describes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ml.exceptions import CheckpointError
from ml.model import TASKS, ModelConfig, TimeSeriesTransformer
from ml.normalization import Normalization


FORMAT_VERSION = 1
META_FILE = "checkpoint.json"
OPTIMIZER_FILE = "optimizer.pt"
PLUGIN_DIR = "plugins"
TORCH_WEIGHTS = "model.pt"
SAFETENSORS_WEIGHTS = "model.safetensors"


def _have_safetensors() -> bool:
    try:
        import safetensors.torch  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class Checkpoint:
    model: TimeSeriesTransformer  # in eval mode, on the requested device
    config: ModelConfig
    task: str
    labels: list[str]  # class names for classification, [] otherwise
    meta: dict  # the parsed checkpoint.json
    path: Path

    @property
    def normalization(self) -> Normalization:
        return Normalization.from_dict(self.meta["normalization"])

    @property
    def target_normalization(self) -> Normalization | None:
        d = self.meta.get("target_normalization")
        return None if d is None else Normalization.from_dict(d)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_torch_save(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_checkpoint(path: str | Path, model: TimeSeriesTransformer, meta: dict,
                    optimizer_state: dict | None = None) -> Path:
    """Write weights, optimizer state and ``checkpoint.json`` (last) into ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if _have_safetensors():
        from safetensors.torch import save_file

        tmp = path / f".{SAFETENSORS_WEIGHTS}.tmp"
        save_file(state, str(tmp))
        os.replace(tmp, path / SAFETENSORS_WEIGHTS)
        weights = SAFETENSORS_WEIGHTS
    else:
        atomic_torch_save(path / TORCH_WEIGHTS, state)
        weights = TORCH_WEIGHTS
    files = {weights: file_sha256(path / weights)}
    if optimizer_state is not None:
        atomic_torch_save(path / OPTIMIZER_FILE, optimizer_state)
        files[OPTIMIZER_FILE] = file_sha256(path / OPTIMIZER_FILE)
    full = {**meta, "format_version": FORMAT_VERSION, "weights": weights, "files": files,
            "model_config": model.cfg.to_dict(), "n_channels": model.cfg.n_channels}
    atomic_write_json(path / META_FILE, full)
    return path


def read_meta(path: str | Path) -> dict:
    path = Path(path)
    meta_path = path / META_FILE
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a checkpoint: no such directory")
    if not meta_path.exists():
        raise CheckpointError(f"{path} is not a checkpoint: {META_FILE} is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{meta_path}: unreadable checkpoint metadata: {e}") from e
    for key in ("task", "model_config", "normalization", "weights"):
        if key not in meta:
            raise CheckpointError(f"{meta_path}: not a checkpoint of this platform (no {key!r})")
    if meta["task"] not in TASKS:
        raise CheckpointError(f"{meta_path}: unknown task {meta['task']!r}")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{meta_path}: format version {meta['format_version']} is newer than this code reads")
    return meta


def load_state_dict(path: Path, weights: str) -> dict:
    wpath = path / weights
    if not wpath.exists():
        raise CheckpointError(f"{path} is not a complete checkpoint: {weights} is missing")
    try:
        if weights.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(str(wpath))
        return torch.load(wpath, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or truncated file
        raise CheckpointError(f"{wpath}: cannot read the weights: {e}") from e


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint directory; the model is returned in eval mode on ``device``."""
    path = Path(path)
    meta = read_meta(path)
    try:
        cfg = ModelConfig.from_dict(meta["model_config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}/{META_FILE}: bad model_config: {e}") from e
    model = TimeSeriesTransformer(cfg)
    state = load_state_dict(path, meta["weights"])
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match the model config: {e}") from e
    model.to(device).eval()
    return Checkpoint(model=model, config=cfg, task=meta["task"], labels=list(meta.get("labels") or []),
                      meta=meta, path=path)
