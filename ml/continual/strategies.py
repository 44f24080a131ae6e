"""Named strategies = plugin lists. ``joint`` is not a plugin list but a mode: retraining
from scratch on everything seen (``--mode full``)."""

from __future__ import annotations

from ml.config import TrainConfig
from ml.continual.base import Plugin
from ml.continual.ewc import EWCPlugin
from ml.continual.lwf import LwFPlugin
from ml.continual.replay import ReplayPlugin

STRATEGIES: dict[str, list[str]] = {
    "naive": [],
    "ewc": ["ewc"],
    "lwf": ["lwf"],
    "replay": ["replay"],
    "ours": ["replay", "ewc", "lwf"],
}


def build_plugins(names: list[str], cfg: TrainConfig) -> list[Plugin]:
    plugins: list[Plugin] = []
    for name in names:
        if name == "replay":
            plugins.append(ReplayPlugin(cfg.replay, seed=cfg.seed))
        elif name == "ewc":
            plugins.append(EWCPlugin(cfg.ewc, seed=cfg.seed))
        elif name == "lwf":
            plugins.append(LwFPlugin(cfg.lwf))
        else:
            raise ValueError(f"unknown plugin {name!r}")
    return plugins
