"""Training configuration: one typed dataclass tree, read from JSON or YAML (``--config``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

from ml.exceptions import ConfigError

PLUGIN_NAMES = ("replay", "ewc", "lwf")


@dataclass
class ReplayConfig:
    memory_size: int = 200  # bounded memory; ~20 per class for 10-class sensor problems
    batch_fraction: float = 1.0  # memory samples added per batch, relative to the batch size:
    # equal parts old and new keeps the classifier balanced across experiences


@dataclass
class EWCConfig:
    lam: float = 10.0  # penalty strength; 100 froze the model so new classes were not learned (JV bench)
    decay: float = 0.9  # online EWC: older experiences' importances fade slowly
    max_samples: int = 256  # Fisher estimated per sample on at most this many examples (cost bound)


@dataclass
class LwFConfig:
    alpha: float = 0.3  # weight of distillation next to the task loss; 1.0 held back new classes (JV bench)
    temperature: float = 2.0  # softens the teacher's distribution (Hinton et al. use 2-4)


@dataclass
class TrainConfig:
    # None = per task: classification/regression train for about ``steps`` optimizer steps
    # (small data sets get more epochs, large ones fewer), forecasting 100 epochs, anomaly 20.
    epochs: int | None = None
    steps: int = 400  # step budget of an auto-epoch classification/regression run
    max_epochs: int = 500  # cap of the auto epoch count (tiny data sets: one step per epoch)
    # Wall-clock budget of the whole run: after each epoch the run plans no more epochs than
    # fit in what is left of it once the ridge head's fit is counted, keeping 5% for the work
    # after the last epoch (0 = no budget). The planned count is saved for --resume, so a
    # resumed run ends alike.
    time_budget_s: float = 50.0
    # Classification/regression: keep the weights of the epoch with the best validation
    # result (accuracy, then loss; regression: loss) and end with them: early stopping without
    # cutting the learning-rate schedule short.
    restore_best: bool = True
    restore_best_min_val: int = 30  # smaller validation sets are too coarse to pick an epoch by
    batch_size: int = 32  # small data sets: more steps per epoch beat bigger batches
    lr: float = 2e-3  # AdamW peak learning rate for a 2-layer, 64-wide encoder
    weight_decay: float = 0.01  # light: dropout already regularises
    warmup_fraction: float = 0.05  # short linear warm-up, then cosine decay to 5% of peak
    grad_clip: float = 1.0  # guards against rare spikes on tiny batches
    seed: int = 0  # every run is seeded; CPU runs are bit-for-bit reproducible
    val_fraction: float = 0.1  # held out for per-epoch validation (best epoch) and anomaly calibration
    log_every: int = 20  # steps between progress lines
    anomaly_window: int = 128  # training/scoring window for anomaly detection
    anomaly_stride: int = 8  # overlapping training windows: one normal series gives many examples
    anomaly_smoothing: int = 1  # centred moving average of scores; on KDD-TSAD 135 raw scores
    # separated the anomaly from normal data best (13x vs 5x with 16 steps of smoothing)
    anomaly_threshold_quantile: float = 1.0  # of validation scores; 1.0 = the largest normal score
    anomaly_threshold_margin: float = 1.5  # the maximum of a series grows with its length, and the
    # validation part is much shorter than the series scored later
    # tp:// data: also learn from pending model pre-labels accepted above their run's
    # --accept-above (label_source "model-accepted"). Off: only reviewed labels teach.
    use_accepted_prelabels: bool = False
    plugins: list[str] = field(default_factory=lambda: list(PLUGIN_NAMES))  # "ours": all three
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    ewc: EWCConfig = field(default_factory=EWCConfig)
    lwf: LwFConfig = field(default_factory=LwFConfig)
    model: dict = field(default_factory=dict)  # overrides of ml.model.ModelConfig fields

    def validate(self) -> "TrainConfig":
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.steps < 1 or self.max_epochs < 1:
            raise ConfigError(f"steps and max_epochs must be >= 1, got {self.steps}, {self.max_epochs}")
        if self.time_budget_s < 0:
            raise ConfigError(f"time_budget_s must be >= 0, got {self.time_budget_s}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        unknown = [p for p in self.plugins if p not in PLUGIN_NAMES]
        if unknown:
            raise ConfigError(f"unknown plugins {unknown}; known: {', '.join(PLUGIN_NAMES)}")
        if self.replay.memory_size < 0:
            raise ConfigError("replay.memory_size must be >= 0")
        if self.anomaly_window < 8:
            raise ConfigError(f"anomaly_window must be >= 8, got {self.anomaly_window}")
        from ml.model import ModelConfig

        try:
            ModelConfig.from_dict(self.model)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model: {e}") from e
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> "TrainConfig":
        return _build(cls, data, where).validate()


def _build(cls, data, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {', '.join(unknown)}")
    kwargs = {}
    defaults = cls()
    for name, value in data.items():
        current = getattr(defaults, name)
        if is_dataclass(current):
            kwargs[name] = _build(type(current), value, f"{where}.{name}")
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from e


def load_config(path: str | None, overrides: dict | None = None) -> TrainConfig:
    """Read a JSON or YAML config file (or defaults) and apply command-line overrides."""
    data: dict = {}
    if path:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {path} does not exist")
        text = p.read_text()
        try:
            if p.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text) or {}
            else:
                data = json.loads(text)
        except Exception as e:  # json and yaml both raise their own error types
            raise ConfigError(f"{path}: cannot parse: {e}") from e
    data = {**data, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    return TrainConfig.from_dict(data, where=path or "config")
