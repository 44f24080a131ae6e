"""The registry's own reading of a checkpoint folder: metadata file and file hashes, no torch.

The folders are real checkpoints written by ``python -m ml.train`` (see ``models.py``),
copied and then damaged one way per test.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from train_platform.registry.checkpoints import FORMAT_VERSION, META_FILE, checkpoint_digest, read_checkpoint_info
from train_platform.registry.exceptions import CheckpointInvalidError

from tests.registry.models import CLASSES


@pytest.fixture
def ckpt(tmp_path, checkpoints):
    """A private copy of the good checkpoint, free to damage."""
    folder = tmp_path / "ckpt"
    shutil.copytree(checkpoints["good"], folder)
    return folder


def _edit_meta(folder: Path, **changes) -> None:
    meta = json.loads((folder / META_FILE).read_text())
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    (folder / META_FILE).write_text(json.dumps(meta))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_registry_and_ml_agree_on_the_format():
    from ml import checkpoint

    assert (META_FILE, FORMAT_VERSION) == (checkpoint.META_FILE, checkpoint.FORMAT_VERSION)


def test_ml_train_records_the_hash_of_each_file_it_writes(checkpoints):
    folder = checkpoints["good"]
    meta = json.loads((folder / META_FILE).read_text())
    assert meta["files"] == {"model.pt": _sha256(folder / "model.pt"),
                             "optimizer.pt": _sha256(folder / "optimizer.pt")}
    assert meta["complete"] is True


def test_a_finished_checkpoint_gives_task_labels_and_digest(checkpoints):
    info = read_checkpoint_info(checkpoints["good"])
    assert info.task == "classification"
    assert sorted(info.labels) == sorted(CLASSES)
    assert info.digest == checkpoint_digest(checkpoints["good"])
    assert info.meta["weights"] == "model.pt"
    # Content decides the digest, not the path.
    assert read_checkpoint_info(checkpoints["bad"]).digest != info.digest


def test_a_copy_has_the_same_digest(ckpt, checkpoints):
    assert checkpoint_digest(ckpt) == checkpoint_digest(checkpoints["good"])


def test_missing_folder_and_missing_metadata(tmp_path):
    with pytest.raises(CheckpointInvalidError, match=f"checkpoint folder {tmp_path / 'nope'} does not exist"):
        read_checkpoint_info(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointInvalidError, match="is not a checkpoint: checkpoint.json is missing"):
        read_checkpoint_info(tmp_path / "empty")


@pytest.mark.parametrize("content, message", [
    ("{not json", "unreadable checkpoint metadata"),
    ("[1, 2]", r"not a checkpoint of this platform \(not a JSON object\)"),
    ('{"task": "classification"}', r"not a checkpoint of this platform \(no 'model_config', 'normalization', 'weights'\)"),
])
def test_metadata_of_something_else_is_refused(ckpt, content, message):
    (ckpt / META_FILE).write_text(content)
    with pytest.raises(CheckpointInvalidError, match=message):
        read_checkpoint_info(ckpt)


def test_a_newer_format_is_refused(ckpt):
    _edit_meta(ckpt, format_version=FORMAT_VERSION + 1)
    with pytest.raises(CheckpointInvalidError, match=f"format version {FORMAT_VERSION + 1} is newer than this code reads"):
        read_checkpoint_info(ckpt)


def test_the_snapshot_of_an_unfinished_run_is_refused(ckpt):
    _edit_meta(ckpt, complete=False, epochs_completed=3, epochs=8)
    with pytest.raises(CheckpointInvalidError, match=r"snapshot of a training run that has not finished \(epoch 3 of 8\)"):
        read_checkpoint_info(ckpt)


def test_missing_weights_are_refused(ckpt):
    (ckpt / "model.pt").unlink()
    with pytest.raises(CheckpointInvalidError, match="is not a complete checkpoint: model.pt is missing"):
        read_checkpoint_info(ckpt)


def test_weights_changed_after_training_are_refused(ckpt):
    weights = ckpt / "model.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointInvalidError, match="model.pt does not match the sha256 recorded in checkpoint.json"):
        read_checkpoint_info(ckpt)


def test_truncated_optimizer_state_is_refused(ckpt):
    optimizer = ckpt / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    with pytest.raises(CheckpointInvalidError, match="optimizer.pt does not match the sha256"):
        read_checkpoint_info(ckpt)


def test_a_listed_file_outside_the_folder_is_refused(ckpt):
    _edit_meta(ckpt, files={"../elsewhere.pt": "0" * 64})
    with pytest.raises(CheckpointInvalidError, match="'../elsewhere.pt' is not a file name inside the checkpoint"):
        read_checkpoint_info(ckpt)


def test_a_checkpoint_from_before_file_hashes_is_still_read(ckpt, caplog):
    _edit_meta(ckpt, files=None)
    with caplog.at_level("INFO", logger="train_platform.registry.checkpoints"):
        info = read_checkpoint_info(ckpt)
    assert info.task == "classification"
    assert "records no file hashes" in caplog.text
    (ckpt / "model.pt").unlink()
    with pytest.raises(CheckpointInvalidError, match="model.pt is missing"):
        read_checkpoint_info(ckpt)
