"""Which version of each pipeline is active.

Several versions of one pipeline may sit in the dags folder. The active one is the highest
(by semantic-version precedence) unless ``tp pipeline activate NAME VERSION`` pinned another
(that is the rollback). Pins live in one small JSON file under TP_HOME, read once per parse.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from train_platform.settings import Settings
from train_platform.spec.models import version_key

log = logging.getLogger(__name__)


def _state_file(settings: Settings) -> Path:
    return settings.pipeline_state_dir / "active.json"


def read_pins(settings: Settings) -> dict[str, str]:
    """Pins by pipeline name; none when the file is missing, and none (with a warning) when
    it cannot be read, so a damaged file never stops the dags folder from loading."""
    path = _state_file(settings)
    try:
        pins = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("ignoring unreadable pipeline pins %s: %s", path, exc)
        return {}
    if not isinstance(pins, dict):
        log.warning("ignoring pipeline pins %s: expected a JSON object of name -> version, got %s",
                    path, type(pins).__name__)
        return {}
    bad = sorted(str(name) for name, version in pins.items() if not isinstance(version, str))
    if bad:
        log.warning("ignoring pins of %s in %s: a version must be a string", ", ".join(bad), path)
    return {name: version for name, version in pins.items() if isinstance(version, str)}


def write_pin(settings: Settings, name: str, version: str | None) -> None:
    """Pin ``name`` to ``version`` (``None`` removes the pin); written atomically."""
    pins = read_pins(settings)
    if version is None:
        pins.pop(name, None)
    else:
        pins[name] = version
    path = _state_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".active-")
    with os.fdopen(fd, "w") as handle:
        json.dump(pins, handle, indent=2, sort_keys=True)
    os.replace(tmp, path)


def choose_active(versions: list[str], pinned: str | None) -> str:
    if pinned in versions:
        return pinned
    return max(versions, key=version_key)
