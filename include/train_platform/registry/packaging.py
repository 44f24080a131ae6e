"""Packaging: a Bento for one model version, built with BentoML's Python build API.

The Bento holds the inference service (``ml/`` and the Airflow-free core it reads the
registry with), the packages it imports pinned to the versions this platform is tested
with, and the model version from the BentoML model store. Its tag is recorded on the
version in the registry.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from train_platform.registry import bento_store
from train_platform.registry.exceptions import PackagingError
from train_platform.registry.registry import ModelRegistry

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[3]
SERVICE = "ml.service:InferenceService"
# What the service imports at run time; versions come from requirements/constraints.
SERVICE_PACKAGES = ("torch", "numpy", "bentoml", "redis", "SQLAlchemy", "psycopg2-binary", "boto3", "PyYAML")
# The service code and the core it imports (registry, settings); tests and DAGs stay out.
INCLUDE = ["ml/**/*.py", "include/train_platform/**/*.py"]
EXCLUDE = ["**/__pycache__/**", "tests/**", "dags/**", "operators/**", "plugins/**", "bench/**"]


def pinned_packages(names: tuple[str, ...] = SERVICE_PACKAGES, root: Path = PROJECT_ROOT) -> list[str]:
    """``name==version`` for each package, from requirements.txt then constraints.txt."""
    pins: dict[str, str] = {}
    for file in ("constraints.txt", "requirements.txt"):  # requirements win
        path = root / file
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            match = re.match(r"^\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^\s;#]+)", line)
            if match:
                pins[match.group(1).lower()] = f"{match.group(1)}=={match.group(3)}"
    missing = [name for name in names if name.lower() not in pins]
    if missing:
        raise PackagingError(f"no pinned version for {', '.join(missing)} in requirements.txt/constraints.txt")
    return [pins[name.lower()] for name in names]


def build_bento(registry: ModelRegistry, name: str, version: int | str, *, actor: str | None = None) -> str:
    """Builds the Bento ``tp-<name>:v<version>`` and records it; returns the tag."""
    found = registry.get(name, version)
    bentoml = bento_store.import_bentoml(registry.settings)
    from bentoml._internal.configuration.containers import BentoMLContainer

    models, bentos = bento_store.model_store(registry.settings), bento_store.bento_store(registry.settings)
    try:
        # The build resolves the Bento's models through BentoML's global store; point it at
        # the registry's for the duration of the build.
        with BentoMLContainer.model_store.patch(models), BentoMLContainer.bento_store.patch(bentos):
            bento = bentoml.bentos.build(
                SERVICE,
                name=f"tp-{name}",
                version=f"v{found.version}",
                labels={"model": name, "registry_version": str(found.version), "task": found.task},
                description=f"Inference service for {name} version {found.version} (train-platform)",
                include=INCLUDE,
                exclude=EXCLUDE,
                python={"packages": pinned_packages()},
                models=[found.bento_model_tag],
                envs=[{"name": "TP_SERVE_MODEL", "value": name}, {"name": "PYTHONPATH", "value": "include"}],
                build_ctx=str(PROJECT_ROOT),
                _bento_store=bentos,
            )
    except PackagingError:
        raise
    except Exception as exc:  # bentoml raises many kinds; all mean "no Bento"
        raise PackagingError(f"building the Bento for {name} v{found.version} failed: {exc}") from exc
    tag = str(bento.tag)
    registry.record_bento(name, found.version, tag, actor=actor)
    log.info("built Bento %s for %s v%d", tag, name, found.version)
    return tag
