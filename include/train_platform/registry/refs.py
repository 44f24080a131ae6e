"""Model references: the one way to name a registered model version outside the registry.

    model:NAME:ALIAS     model:sensor-classifier:production   (the version the alias points at)
    model:NAME:vN        model:sensor-classifier:v3           (version 3)
    model:NAME:latest    the newest registered version

Task inputs (``base_model``, ``model``), ``python -m ml.serving.batch_inference --model`` and
``tp model show`` take this form. ``ModelRef.parse`` reads it, ``str(ref)`` writes it, and
``resolve`` turns it into the registered version and the checkpoint folder that holds it.
Commands that take the name and the version as two arguments (``tp model promote NAME 3``)
read the second one with ``ModelRef.of``, which also accepts a bare number there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from train_platform.registry.exceptions import (
    AliasNotSetError,
    InvalidModelNameError,
    InvalidModelRefError,
    ModelNotFoundError,
    VersionNotFoundError,
)
from train_platform.registry.names import LATEST, VERSION_RE, check_alias, check_name

if TYPE_CHECKING:  # pragma: no cover - typing only
    from train_platform.registry.model_registry import ModelRegistry, ModelVersion

log = logging.getLogger(__name__)

PREFIX = "model:"
EXPECTED = ("expected model:NAME:ALIAS or model:NAME:vN "
            "(e.g. model:sensor-classifier:production, model:sensor-classifier:v3)")


def _invalid(text: object, why: str) -> InvalidModelRefError:
    return InvalidModelRefError(f"invalid model reference {text!r}: {why}; {EXPECTED}")


def _problem(name: object, alias: object, version: object) -> str | None:
    """What is wrong with these parts of a reference, or None."""
    try:
        check_name(name)
    except InvalidModelNameError as exc:
        return str(exc)
    if (alias is None) == (version is None):
        return ("it names both an alias and a version, not one of them" if alias is not None
                else "it names neither an alias nor a version")
    if version is not None:
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            return f"version {version!r} is not a number from 1 up"
    elif alias != LATEST:
        try:
            check_alias(alias)
        except InvalidModelNameError as exc:
            return str(exc)
    return None


@dataclass(frozen=True)
class ModelRef:
    """One registered version of a model, by alias or by number (exactly one of the two).

    ``alias`` may be ``latest``, the newest version. Construction checks every part, so a
    ``ModelRef`` that exists is well formed; a bad one raises ``InvalidModelRefError``.
    """

    name: str
    alias: str | None = None
    version: int | None = None

    def __post_init__(self) -> None:
        problem = _problem(self.name, self.alias, self.version)
        if problem is not None:
            shown = self.alias if self.version is None else f"v{self.version}"
            raise _invalid(f"{PREFIX}{self.name}:{shown}", problem)

    @property
    def selector(self) -> str:
        """The part after the name: ``v3``, ``production`` or ``latest``."""
        return f"v{self.version}" if self.version is not None else str(self.alias)

    def __str__(self) -> str:
        return f"{PREFIX}{self.name}:{self.selector}"

    @staticmethod
    def is_ref(text: object) -> bool:
        """Whether ``text`` is meant as a model reference (it starts with ``model:``); a
        folder path is not. Says nothing about whether the rest is well formed."""
        return isinstance(text, str) and text.startswith(PREFIX)

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """``model:NAME:ALIAS`` or ``model:NAME:vN`` -> ``ModelRef``; anything else raises
        ``InvalidModelRefError`` naming the text and the expected form."""
        if not isinstance(text, str):
            raise _invalid(text, "it is not a string")
        if not text.startswith(PREFIX):
            raise _invalid(text, f"it does not start with {PREFIX!r}")
        parts = text[len(PREFIX):].split(":")
        if len(parts) == 1 or (len(parts) == 2 and not parts[1]):
            raise _invalid(text, "it has no alias or version after the name")
        if len(parts) != 2:
            raise _invalid(text, "it needs exactly one ':' between the name and the alias or version")
        name, selector = parts
        if selector.isdigit():
            raise _invalid(text, f"a version is written v{selector}, not {selector}")
        match = VERSION_RE.match(selector)
        alias, version = (None, int(match.group(1))) if match else (selector, None)
        problem = _problem(name, alias, version)
        if problem is not None:
            raise _invalid(text, problem)
        return cls(name, alias=alias, version=version)

    @classmethod
    def of(cls, name: str, selector: int | str) -> ModelRef:
        """The reference for a name and a separate version argument: a number (``3``,
        ``"3"``, ``"v3"``), an alias or ``latest``."""
        if isinstance(selector, int) and not isinstance(selector, bool):
            return cls(name, version=selector)
        if not isinstance(selector, str):
            raise _invalid(f"{PREFIX}{name}:{selector!r}", f"{selector!r} is neither a version nor an alias")
        match = VERSION_RE.match(selector)
        if selector.isdigit() or match:
            return cls(name, version=int(match.group(1) if match else selector))
        return cls(name, alias=selector)


@dataclass(frozen=True)
class ResolvedModel:
    """What a reference stands for now: the registered version and its checkpoint folder
    (in the BentoML model store; ``ml.checkpoint.load_checkpoint`` reads it)."""

    ref: ModelRef
    version: ModelVersion
    checkpoint: Path


def resolve(ref: ModelRef | str, registry: ModelRegistry | None = None) -> ResolvedModel:
    """The registered version ``ref`` names and the folder holding its checkpoint.

    A malformed reference raises ``InvalidModelRefError``; an unknown model, an alias that
    points at no version and a missing version raise ``ModelNotFoundError``,
    ``AliasNotSetError`` and ``VersionNotFoundError``, each message starting with the
    reference.
    """
    from train_platform.registry.bento_store import model_path

    if not isinstance(ref, ModelRef):
        ref = ModelRef.parse(ref)
    if registry is None:
        from train_platform.registry.model_registry import ModelRegistry

        registry = ModelRegistry()
    try:
        found = registry.get(ref.name, ref.version if ref.version is not None else ref.alias)
    except (ModelNotFoundError, AliasNotSetError, VersionNotFoundError) as exc:
        raise type(exc)(f"{ref}: {exc}") from exc
    checkpoint = model_path(registry.settings, found.bento_model_tag)
    log.debug("%s is version %d at %s", ref, found.version, checkpoint)
    return ResolvedModel(ref=ref, version=found, checkpoint=checkpoint)
