"""Names in the registry: model names, aliases, and the selectors that are not aliases.

A model name or alias must be usable as a part of a BentoML tag (its names and versions
follow the rule below), which also keeps names portable across file systems and URLs. An
alias may not look like a version (``3``, ``v3``) or be ``latest``, so the part after the
name in a model reference (see ``refs``) always means one thing.
"""

from __future__ import annotations

import re

from train_platform.registry.exceptions import InvalidModelNameError

# BentoML tag rules: lowercase letters, digits, '-', '_', '.'; at most 63 characters.
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
# How a version is spelled where it could be mistaken for an alias: v1, v2, ...
VERSION_RE = re.compile(r"^v([0-9]+)$")

PRODUCTION = "production"
CANDIDATE = "candidate"
# Not an alias: the newest registered version.
LATEST = "latest"


def check_name(value: str, what: str = "model name") -> str:
    """``value`` when it is a valid name; ``InvalidModelNameError`` naming it otherwise."""
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise InvalidModelNameError(
            f"invalid {what} {value!r}: use lowercase letters, digits, '-', '_' or '.', "
            "starting with a letter or digit, at most 63 characters"
        )
    return value


def check_alias(value: str) -> str:
    """``value`` when it can be set as an alias: a valid name that is neither ``latest`` nor
    spelled like a version."""
    check_name(value, "alias")
    if value == LATEST or value.isdigit() or VERSION_RE.match(value):
        raise InvalidModelNameError(
            f"invalid alias {value!r}: 'latest', numbers and v<number> already mean versions"
        )
    return value
