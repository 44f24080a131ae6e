"""Where the registry keeps model files: the BentoML model store.

BentoML resolves its home once per process from ``BENTOML_HOME``. The registry passes its
store explicitly on every call instead, so a process (a test session, a scheduler) that
changes ``TP_HOME`` still writes where the settings say. bentoml is imported only here,
inside functions: importing the registry must stay cheap for the DAG processor.

A registration writes a version's files in two steps, so that a kill at any moment leaves
nothing a later registration trips over and no database lock is held while bytes move:

1. ``stage_checkpoint`` (no lock held): the checkpoint is checked and copied, hashed as it is
   read, into ``BENTOML_HOME/staging/NAME.<id>/model``, an entry whose lock file
   (``NAME.<id>.lock``) the registering process holds an ``flock`` on.
2. ``install_staged`` (inside the registry's write transaction, once the version number is
   known): ``model.yaml`` is written and the folder renamed to ``models/NAME/vN``.

A process killed in step 1 leaves an entry whose flock the kernel released:
``clean_staging``, run by every registration, removes it. One killed after the rename but
before the database commit leaves ``models/NAME/vN`` without a version row: the next
registration, holding the write lock and so knowing the number is free, sets it aside
and installs its own copy there.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from train_platform.registry.checkpoints import CheckpointInfo, copy_checked
from train_platform.settings import Settings

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from bentoml._internal.bento import BentoStore
    from bentoml._internal.models import ModelStore


def bentoml_home(settings: Settings) -> Path:
    """``BENTOML_HOME`` when the environment sets it (an image, a shared volume), else a
    folder under the platform home so the embedded shape keeps everything in one place."""
    explicit = os.environ.get("BENTOML_HOME")
    return Path(explicit).expanduser() if explicit else settings.home / "bentoml"


def import_bentoml(settings: Settings):
    """bentoml, imported on first use only (it takes seconds and pulls in half of PyPI)."""
    import bentoml

    return bentoml


def model_store(settings: Settings) -> "ModelStore":
    import_bentoml(settings)
    from bentoml._internal.models import ModelStore

    path = bentoml_home(settings) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return ModelStore(str(path))


def bento_store(settings: Settings) -> "BentoStore":
    import_bentoml(settings)
    from bentoml._internal.bento import BentoStore

    path = bentoml_home(settings) / "bentos"
    path.mkdir(parents=True, exist_ok=True)
    return BentoStore(str(path))


def bento_model_tag(name: str, version: int) -> str:
    return f"{name}:v{version}"


STAGING_DIR = "staging"


@dataclass
class StagedModel:
    """A checkpoint copied and checked into the staging folder of the store, waiting for
    its version number. ``content`` becomes the store's ``NAME/vN`` folder by one rename."""

    folder: Path  # staging/<id>/, holding ``content``
    lock: Path  # staging/<id>.lock, flock'd by this process while the entry is in use
    info: CheckpointInfo
    _fd: int = field(repr=False, default=-1)

    @property
    def content(self) -> Path:
        return self.folder / "model"


def staging_root(settings: Settings) -> Path:
    """Where registrations copy checkpoints before they hold the database's write lock:
    inside the BentoML home, so the final move into the store is a rename on one filesystem."""
    return bentoml_home(settings) / STAGING_DIR


def _new_entry(settings: Settings, name: str) -> tuple[Path, Path, int]:
    """A new staging entry: its lock file created and flock'd *before* its folder exists,
    so a cleaner never takes a live entry for a dead one."""
    import fcntl
    import tempfile

    root = staging_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    # Locked under a name the cleaner skips, then renamed: a cleaner can never flock it in
    # the moment between its creation and our flock.
    fd, tmp = tempfile.mkstemp(prefix=".new-", suffix=".lock", dir=root)
    fcntl.flock(fd, fcntl.LOCK_EX)
    entry = f"{name}.{uuid.uuid4().hex}"
    lock = root / f"{entry}.lock"
    os.replace(tmp, lock)
    folder = root / entry
    folder.mkdir()
    return folder, lock, fd


def _release(folder: Path, lock: Path, fd: int) -> None:
    """Removes an entry: folder first, lock file last (a lock file without its folder is
    what a cleaner finds after a kill in between, and removes)."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    lock.unlink(missing_ok=True)
    if fd >= 0:
        os.close(fd)


def clean_staging(settings: Settings) -> int:
    """Removes the staging entries of registrations that died (their lock file's flock is
    free: the kernel released it with the process); entries of live registrations are left
    alone. Returns how many were removed."""
    import fcntl
    import time

    root = staging_root(settings)
    if not root.is_dir():
        return 0
    removed = 0
    for lock in root.glob("*.lock"):
        if lock.name.startswith(".new-"):
            # Killed between creating and renaming its lock: an empty file, no folder.
            try:
                if time.time() - lock.stat().st_mtime > 3600:
                    lock.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            continue
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            continue  # removed by another cleaner or its owner just now
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # a live registration's
        folder = lock.with_suffix("")
        log.info("removing %s, left by a registration that did not finish", folder)
        _release(folder, lock, fd)
        removed += 1
    return removed


def stage_checkpoint(settings: Settings, name: str, checkpoint: Path) -> StagedModel:
    """Checks ``checkpoint`` and copies it into a new staging entry while hashing it (see
    ``checkpoints.copy_checked``); entries left by dead registrations are removed first.
    Takes no database lock: this is the slow part of a registration."""
    import_bentoml(settings)  # here, not under the database lock
    clean_staging(settings)
    folder, lock, fd = _new_entry(settings, name)
    try:
        info = copy_checked(checkpoint, folder / "model")
    except BaseException:
        _release(folder, lock, fd)
        raise
    return StagedModel(folder=folder, lock=lock, info=info, _fd=fd)


def discard_staged(staged: StagedModel) -> None:
    """Removes a staging entry (a registration that failed, or one whose content was
    installed)."""
    _release(staged.folder, staged.lock, staged._fd)
    staged._fd = -1


def _store_item(settings: Settings, tag: str) -> Path:
    from bentoml._internal.tag import Tag

    return bentoml_home(settings) / "models" / Tag.from_taglike(tag).path()


def install_staged(settings: Settings, staged: StagedModel, name: str, version: int, *,
                   labels: dict[str, str], metadata: dict[str, Any]) -> str:
    """Makes the staged copy the BentoML model ``name:v<version>`` by one rename; returns
    its tag. Runs under the registry's write lock, where ``version`` is known to be free in
    the database: a store folder already there is what a registration killed between this
    rename and its database commit left, and is set aside (renamed into staging, removed
    after) rather than blocking the number."""
    bentoml = import_bentoml(settings)
    from bentoml._internal.models.model import Model, ModelContext, ModelOptions

    tag = bento_model_tag(name, version)
    target = _store_item(settings, tag)
    if target.exists():
        folder, lock, fd = _new_entry(settings, f"orphan-{name}")
        os.replace(target, folder / "model")
        os.close(fd)  # the entry is now a dead one: the next ``clean_staging`` removes it
        log.warning("%s was in the model store without a registered version (a registration killed before "
                    "its database commit); set aside in %s", tag, folder)
    model = Model.create(tag, module="", api_version="v1", signatures={}, labels=labels, options=ModelOptions(),
                         metadata=metadata, context=ModelContext(framework_name="", framework_versions={}))
    with open(staged.content / "model.yaml", "w", encoding="utf8") as stream:
        model.info.dump(stream)
    del model, bentoml
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged.content, target)
    return tag


def uninstall(settings: Settings, staged: StagedModel, tag: str) -> None:
    """Undoes ``install_staged`` when the database write failed: the folder goes back into
    its staging entry, where a retry under another number takes it again."""
    target = _store_item(settings, tag)
    if target.exists() and not staged.content.exists():
        os.replace(target, staged.content)


def mark_latest(settings: Settings, name: str) -> None:
    """BentoML's ``NAME/latest`` file, naming the highest version in the store (written
    to a temporary name and renamed)."""
    folder = bentoml_home(settings) / "models" / name
    numbers = [int(p.name[1:]) for p in folder.glob("v*") if p.name[1:].isdigit() and (p / "model.yaml").is_file()]
    if not numbers:
        return
    tmp = folder / f".latest.{os.getpid()}.tmp"
    tmp.write_text(f"v{max(numbers)}")
    os.replace(tmp, folder / "latest")


def delete_model(settings: Settings, tag: str) -> None:
    bentoml = import_bentoml(settings)
    bentoml.models.delete(tag, _model_store=model_store(settings))


def model_path(settings: Settings, tag: str) -> Path:
    """The folder of a stored model version: a checkpoint directory ``ml`` can load."""
    bentoml = import_bentoml(settings)
    return Path(bentoml.models.get(tag, _model_store=model_store(settings)).path)


def export_model(settings: Settings, tag: str, path: str) -> str:
    bentoml = import_bentoml(settings)
    return bentoml.models.export_model(tag, path, _model_store=model_store(settings))
