"""Where the registry keeps model files: the BentoML model store.

BentoML resolves its home once per process from ``BENTOML_HOME``. The registry passes its
store explicitly on every call instead, so a process (a test session, a scheduler) that
changes ``TP_HOME`` still writes where the settings say. bentoml is imported only here,
inside functions: importing the registry must stay cheap for the DAG processor.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from train_platform.settings import Settings

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


def save_checkpoint_model(
    settings: Settings, name: str, version: int, checkpoint_dir: Path, *, labels: dict[str, str],
    metadata: dict[str, Any],
) -> str:
    """Copies the checkpoint folder as it is (the weights in ``ml.checkpoint``'s own format,
    never a pickled module) into a new BentoML model ``name:v<version>``; returns its tag."""
    import shutil

    bentoml = import_bentoml(settings)
    tag = bento_model_tag(name, version)
    with bentoml.models.create(
        tag, labels=labels, metadata=metadata, _model_store=model_store(settings)
    ) as bento_model:
        for item in sorted(checkpoint_dir.iterdir()):
            target = Path(bento_model.path) / item.name
            if item.is_dir():
                shutil.copytree(item, target)
            else:
                shutil.copy2(item, target)
    return tag


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
