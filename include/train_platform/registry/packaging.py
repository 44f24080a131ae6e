"""Packaging: a Bento for one model version, built with BentoML's Python build API.

The Bento holds the inference service (``ml/`` and the Airflow-free core it reads the
registry with), the packages it imports pinned to the versions this platform is tested
with, and the model version from the BentoML model store. Its tag is recorded on the
version in the registry.

Building is idempotent: a Bento whose model, packages and service code are unchanged is
reused (a scheduled packaging task runs every day whether or not production changed); one
whose code or packages changed is rebuilt under the same tag.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from train_platform.registry import bento_store
from train_platform.registry.exceptions import PackagingError
from train_platform.registry.model_registry import ModelRegistry

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[3]
SERVICE = "ml.service:InferenceService"
# What the service imports at run time; pinned with everything they need (see below).
SERVICE_PACKAGES = ("torch", "numpy", "bentoml", "redis", "SQLAlchemy", "psycopg2-binary", "boto3", "PyYAML")
# The service code and the core it imports (registry, settings); tests and DAGs stay out.
INCLUDE = ["ml/**/*.py", "include/train_platform/**/*.py"]
EXCLUDE = ["**/__pycache__/**", "tests/**", "dags/**", "operators/**", "plugins/**", "bench/**"]


def pinned_packages(names: tuple[str, ...] = SERVICE_PACKAGES) -> list[str]:
    """``name==version`` for the service's packages and everything they need, at the
    versions installed here (the environment the platform is tested in).

    This is the Bento's lock, computed offline from installed metadata: BentoML's own
    locking (``lock_packages``) would fetch ``uv`` and resolve against PyPI at build time.
    """
    from importlib import metadata

    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    environment = default_environment()
    pins: dict[str, str] = {}
    queue = list(names)
    while queue:
        name = canonicalize_name(queue.pop())
        if name in pins:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError as exc:
            raise PackagingError(f"package {name!r}, needed by the inference service, is not installed") from exc
        pins[name] = f"{dist.metadata['Name']}=={dist.version}"
        for spec in dist.requires or []:
            requirement = Requirement(spec)
            # Only what is installed unconditionally here: no extras, markers that apply.
            if requirement.marker is not None and not requirement.marker.evaluate({**environment, "extra": ""}):
                continue
            queue.append(requirement.name)
    return [pins[name] for name in sorted(pins)]


def build_digest(packages: list[str]) -> str:
    """sha256 over the service's source files (what INCLUDE takes) and its pinned packages:
    equal digests mean an identical Bento for the same model."""
    digest = hashlib.sha256()
    for pattern in INCLUDE:
        for path in sorted(PROJECT_ROOT.glob(pattern)):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(PROJECT_ROOT)).encode() + b"\0" + path.read_bytes())
    digest.update("\n".join(packages).encode())
    return digest.hexdigest()


def build_bento(registry: ModelRegistry, name: str, version: int | str, *, actor: str | None = None) -> str:
    """Builds the Bento ``tp-<name>:v<version>`` and records it; returns the tag. An existing
    Bento of the same model, code and packages is reused instead."""
    found = registry.get(name, version)
    bentoml = bento_store.import_bentoml(registry.settings)
    from bentoml._internal.bento.build_config import BentoEnvSchema
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml.exceptions import NotFound

    models, bentos = bento_store.model_store(registry.settings), bento_store.bento_store(registry.settings)
    packages = pinned_packages()
    digest = build_digest(packages)
    labels = {"model": name, "registry_version": str(found.version), "task": found.task,
              "model_tag": str(found.bento_model_tag), "build_digest": digest[:63]}
    tag = f"tp-{name}:v{found.version}"
    try:
        existing = bentos.get(tag)
    except NotFound:
        existing = None
    if existing is not None:
        if dict(existing.info.labels) == labels:
            log.info("Bento %s is up to date (same model, code and packages): reusing it", tag)
            if found.bento_tag != tag:
                registry.record_bento(name, found.version, tag, actor=actor)
            return tag
        log.info("Bento %s exists but its model, code or packages changed: rebuilding it", tag)
        bentos.delete(tag)
    try:
        # The build resolves the Bento's models through BentoML's global store; point it at
        # the registry's for the duration of the build.
        with BentoMLContainer.model_store.patch(models), BentoMLContainer.bento_store.patch(bentos):
            bento = bentoml.bentos.build(
                SERVICE,
                name=f"tp-{name}",
                version=f"v{found.version}",
                labels=labels,
                description=f"Inference service for {name} version {found.version} (train-platform)",
                include=INCLUDE,
                exclude=EXCLUDE,
                python={"packages": packages, "lock_packages": False},
                models=[found.bento_model_tag],
                envs=[BentoEnvSchema(name="TP_SERVE_MODEL", value=name),
                      BentoEnvSchema(name="PYTHONPATH", value="include")],
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


def export_bento(registry: ModelRegistry, tag: str, path: str) -> str:
    """Writes the Bento ``tag`` as one archive at ``path`` (a local path or an fs URL such as
    ``s3://bucket/key``), with its models copied in: what a container build or another
    cluster imports."""
    bentoml = bento_store.import_bentoml(registry.settings)
    from bentoml._internal.configuration.containers import BentoMLContainer

    models, bentos = bento_store.model_store(registry.settings), bento_store.bento_store(registry.settings)
    try:
        with BentoMLContainer.model_store.patch(models), BentoMLContainer.bento_store.patch(bentos):
            return bentoml.bentos.export_bento(tag, path, _bento_store=bentos)
    except Exception as exc:
        raise PackagingError(f"exporting the Bento {tag} to {path} failed: {exc}") from exc
