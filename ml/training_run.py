"""One training run (initial, incremental or full), as a library function. ``python -m
ml.train`` parses flags into a ``TrainRequest``; the continual benchmark calls ``run`` directly.

Output directory layout: the checkpoint files (see ``ml.checkpoint``), ``plugins/``,
``metrics.json``, ``training_curve.png`` and, while a run is unfinished, ``resume.pt``.

Killed at any point, a run leaves either its finished checkpoint (``checkpoint.json`` with
``"complete": true`` is its last write, after the metrics, the plot and the plugin state) or
an unfinished one that ``--resume`` continues: a per-epoch snapshot with ``"complete":
false`` and ``resume.pt``. A run that does not resume first removes what an earlier run
wrote into the folder, ``checkpoint.json`` first. A retry with ``--resume`` that finds this
very run finished (``run_fingerprint``: the same mode, task, data, init and config) returns
it as it is.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from ml.checkpoint import (META_FILE, PLUGIN_DIR, Checkpoint, atomic_torch_save, atomic_write_json,
                           load_checkpoint, read_meta, save_checkpoint)
from ml.collate import collate
from ml.config import TrainConfig
from ml.continual.strategies import build_plugins
from ml.continual.trainer import Trainer, pick_device, set_determinism
from ml.data import SeriesData, load_ref
from ml.exceptions import CheckpointError, ConfigError, DataError
from ml.model import TASKS, ModelConfig, TimeSeriesTransformer
from ml.drift_reference import drift_reference
from ml.examples import build_examples, class_labels, split_validation
from ml.normalization import Normalization
from ml.random_conv import dilations_for
from ml.seasonality import detect_period

log = logging.getLogger(__name__)

MODES = ("initial", "incremental", "full")
RESUME_FILE = "resume.pt"
METRICS_FILE = "metrics.json"
CURVE_FILE = "training_curve.png"


@dataclass
class TrainRequest:
    mode: str
    task: str
    data: str | SeriesData  # a data ref, or data already in memory (benchmarks, tests)
    out: Path
    init: Path | None = None
    epochs: int | None = None  # overrides cfg.epochs
    cfg: TrainConfig = field(default_factory=TrainConfig)
    resume: bool = False
    write_plot: bool = True


@dataclass
class TrainResult:
    checkpoint: Path
    metrics: dict
    resumed_from_epoch: int = 0
    labels: list[str] = field(default_factory=list)


def _check_request(req: TrainRequest) -> None:
    if req.mode not in MODES:
        raise ConfigError(f"unknown mode {req.mode!r}; expected one of {', '.join(MODES)}")
    if req.task not in TASKS:
        raise ConfigError(f"unknown task {req.task!r}; expected one of {', '.join(TASKS)}")
    if req.mode == "incremental" and req.init is None:
        raise ConfigError("mode incremental needs --init CHECKPOINT_DIR (the model to continue from)")
    if req.mode == "initial" and req.init is not None:
        raise ConfigError("mode initial trains from scratch; --init is only for incremental and full")


def _load_init(req: TrainRequest, device) -> Checkpoint | None:
    if req.init is None:
        return None
    ckpt = load_checkpoint(req.init, device=device)
    if ckpt.task != req.task:
        raise CheckpointError(
            f"checkpoint {req.init} was trained for task {ckpt.task!r}, this run is task {req.task!r}"
        )
    if not ckpt.meta.get("complete", True):
        raise CheckpointError(f"checkpoint {req.init} is from an unfinished run (resume that run first)")
    return ckpt


def run(req: TrainRequest) -> TrainResult:
    _check_request(req)
    cfg = copy.deepcopy(req.cfg)
    if req.epochs is not None:
        cfg.epochs = req.epochs
    cfg.validate()
    auto_epochs = cfg.epochs is None
    out = Path(req.out)
    device = pick_device()
    set_determinism(cfg.seed)

    request = _request_fingerprint(req, cfg)
    if req.resume and request is not None and (out / META_FILE).exists():
        meta = read_meta(out)
        if meta.get("complete") and meta.get("run_fingerprint") == request:
            # Killed after its last write (the finished checkpoint.json) or retried after
            # success: the run is done, whatever else is left in the folder.
            log.info("%s already holds this finished run; nothing to resume", out)
            (out / RESUME_FILE).unlink(missing_ok=True)
            metrics = json.loads((out / METRICS_FILE).read_text()) if (out / METRICS_FILE).exists() else {}
            return TrainResult(out, metrics, resumed_from_epoch=int(meta.get("epochs_completed", 0)),
                               labels=list(meta.get("labels") or []))

    data = load_ref(req.data, accepted_prelabels=cfg.use_accepted_prelabels) if isinstance(req.data, str) else req.data
    ref = data.ref
    init = _load_init(req, device)
    if init is not None and init.config.n_channels != data.n_channels:
        raise DataError(f"{ref}: data has {data.n_channels} channels, checkpoint {req.init} expects"
                        f" {init.config.n_channels}")

    continuing = req.mode == "incremental"
    model_overrides = dict(cfg.model)
    if req.task == "forecasting" and not continuing and "context_len" not in model_overrides:
        model_overrides["context_len"] = _forecast_context(data, int(model_overrides.get("horizon", ModelConfig.horizon)))
    mc = init.config if continuing else ModelConfig.from_dict({**model_overrides, "n_channels": data.n_channels})
    context, min_len = {"forecasting": (mc.context_len, mc.context_len + mc.horizon),
                        "anomaly": (0, min(cfg.anomaly_window, 16))}.get(req.task, (0, 1))
    # A fresh forecasting run with open epochs picks its epoch count on the end of the training
    # series (at least ``horizon`` validation windows, and as many for training), then trains
    # on all of it: the most recent steps are the ones a forecast needs most.
    select_epochs = req.task == "forecasting" and auto_epochs and not continuing
    split_args = dict(context=context, min_len=min_len)
    if select_epochs:
        split_args.update(min_held_out=2 * mc.horizon - 1, min_train_len=mc.context_len + 2 * mc.horizon - 1)
    train_data, val_data = split_validation(data, req.task, cfg.val_fraction, cfg.seed, **split_args)
    norm = init.normalization if continuing else Normalization.fit(train_data.series)

    labels: list[str] = []
    label_index = None
    target_norm = None
    if req.task in ("classification", "regression"):
        build_examples(data, req.task)  # checks the label kind before anything else
    if req.task == "classification":
        new_labels = class_labels(train_data)
        labels = list(init.labels) if init is not None else []
        labels += [lab for lab in new_labels if lab not in labels]
        label_index = {lab: i for i, lab in enumerate(labels)}
    elif req.task == "regression":
        ys = np.asarray([[float(v)] for v in (train_data.labels or []) if v is not None], dtype=np.float32)
        if continuing and init.target_normalization is not None:
            target_norm = init.target_normalization
        elif len(ys):
            target_norm = Normalization.fit([ys])

    # The model: the init checkpoint's when continuing (grown for new classes), else fresh.
    previous_model = None
    if continuing:
        model = init.model
        previous_model = copy.deepcopy(init.model)
        if req.task == "classification" and len(labels) > model.cfg.n_classes:
            model.expand_classes(len(labels) - model.cfg.n_classes)
        if cfg.model:
            log.info("incremental run: model overrides in the config are ignored, the checkpoint's architecture is kept")
    else:
        mdict = {**model_overrides, "n_channels": data.n_channels, "n_classes": len(labels)}
        if req.task == "forecasting" and "forecast_season" not in mdict:
            mdict["forecast_season"] = detect_period(train_data.series, mc.context_len)
            log.info("forecasting: context %d steps, season %d (from the training data)",
                     mc.context_len, mdict["forecast_season"])
        if not mdict.get("patch_len"):
            longest = max(len(x) for x in train_data.series)
            mdict["patch_len"] = max(1, -(-longest // int(mdict.get("max_tokens", ModelConfig.max_tokens))))
        if req.task in ("classification", "regression") and mdict.get("random_features", ModelConfig.random_features) \
                and not mdict.get("random_dilations"):
            mdict["random_dilations"] = dilations_for(max(len(x) for x in train_data.series))
        mcfg = ModelConfig.from_dict(mdict)
        model = TimeSeriesTransformer(mcfg)
    mcfg = model.cfg

    window_args = dict(context_len=mcfg.context_len, horizon=mcfg.horizon, window=cfg.anomaly_window)
    train_ex = build_examples(train_data, req.task, stride=cfg.anomaly_stride if req.task == "anomaly" else None,
                              **window_args)
    val_ex = build_examples(val_data, req.task, **window_args) if val_data is not None else None
    if req.task == "classification" and val_ex:
        val_ex = [ex for ex in val_ex if ex["label"] in label_index]
    if req.task in ("classification", "regression", "forecasting"):
        too_long = [ex["id"] for ex in train_ex if len(ex["sensor"]) > mcfg.max_len]
        if too_long:
            raise DataError(f"{ref}: series {too_long[0]!r} is longer than the model's max_len {mcfg.max_len}")

    if auto_epochs:
        cfg.epochs = _auto_epochs(req.task, len(train_ex), cfg)
        log.info("%d epochs (%s default)", cfg.epochs, req.task)
    resume_state = None
    if req.resume and (out / RESUME_FILE).exists():
        resume_state = torch.load(out / RESUME_FILE, map_location="cpu", weights_only=True)
    t0 = time.monotonic()
    selection = None
    if select_epochs and val_ex:
        if resume_state is not None and "selected_epochs" in resume_state:
            cfg.epochs = int(resume_state["selected_epochs"])  # chosen before the interruption
        else:
            half = 0.5 * cfg.time_budget_s if cfg.time_budget_s > 0 else None
            selection = _select_forecast_epochs(model, train_ex, val_ex, cfg, norm, device, half)
            cfg.epochs = selection["epochs"]
        train_data, val_data = data, None
        norm = Normalization.fit(data.series)
        train_ex, val_ex = build_examples(data, req.task, **window_args), None
    out.mkdir(parents=True, exist_ok=True)  # only now: bad data or flags leave nothing behind
    plugins = build_plugins(cfg.plugins, cfg)
    if continuing:
        for p in plugins:
            p.load(Path(req.init) / PLUGIN_DIR)
    trainer = Trainer(model, req.task, cfg, norm=norm, plugins=plugins, label_index=label_index,
                      target_norm=target_norm, previous_model=previous_model, device=device)

    start_epoch = 0
    if resume_state is not None:
        state = resume_state
        if state.get("fingerprint") != _fingerprint(req, cfg, ref):
            raise ConfigError(f"{out}/{RESUME_FILE} belongs to a run with other arguments; resume with the same flags")
        trainer.load_state_dict(state["trainer"])
        start_epoch = int(state["epoch"])
        log.info("resuming %s from epoch %d", out, start_epoch)
    else:
        _forget_previous_run(out)

    meta = {
        "task": req.task, "labels": labels, "mode": req.mode, "dataset_ref": ref, "epochs": cfg.epochs,
        "init_checkpoint": str(req.init) if req.init else None, "normalization": norm.to_dict(),
        "target_normalization": target_norm.to_dict() if target_norm is not None else None,
        "drift_reference": drift_reference(train_data.series), "train_config": cfg.to_dict(),
        "plugins": list(cfg.plugins), "seed": cfg.seed, "device": str(device), "run_fingerprint": request,
    }
    if selection is None and resume_state is not None:
        selection = resume_state.get("epoch_selection")
    if selection is not None:
        meta["epoch_selection"] = selection

    def on_epoch_end(epoch: int, tr: Trainer) -> None:
        save_checkpoint(out, tr.model, {**meta, "epochs_completed": epoch, "complete": False})
        state = {"epoch": epoch, "trainer": tr.state_dict(), "fingerprint": _fingerprint(req, cfg, ref)}
        if meta.get("epoch_selection"):
            state.update(selected_epochs=cfg.epochs, epoch_selection=meta["epoch_selection"])
        atomic_torch_save(out / RESUME_FILE, state)

    if req.task in ("classification", "regression") and model.random_features is not None:
        # Also on resume: the fit is deterministic, and it gives back the leave-one-out
        # outputs the interrupted run trained against (the biases come from the checkpoint).
        replay = [p for p in plugins if p.name == "replay"]
        memory = replay[0].memory if (continuing and replay) else []
        # Validation rows too: every row's ridge output is then a leave-one-out one, as
        # honest for the validation score as for training.
        _fit_random_features(trainer, train_ex + (val_ex or []) + memory,
                             refit_biases=not continuing and start_epoch == 0, calibrate=start_epoch == 0,
                             seed=cfg.seed)
    # The budget is the whole run's: what the ridge head's fit took comes off the epochs'
    # share, and a few percent stay for what follows them (head weighting, last checkpoint).
    spent = time.monotonic() - t0
    budget = max(0.05 * cfg.time_budget_s, 0.95 * cfg.time_budget_s - spent) if cfg.time_budget_s > 0 else 0.0
    trainer.fit(train_ex, val_ex, cfg.epochs, start_epoch=start_epoch, on_epoch_end=on_epoch_end,
                time_budget_s=budget, schedule_epochs=selection["epochs_tried"] if selection else None)
    transformer_weight = None
    if req.task in ("classification", "regression") and model.random_features is not None and val_ex:
        transformer_weight = _weigh_transformer_head(trainer, val_ex)
    trainer.finish(train_ex)
    train_seconds = time.monotonic() - t0
    planned = cfg.epochs
    cfg.epochs = trainer.epochs_run  # the time budget may have planned fewer
    meta["epochs"] = cfg.epochs

    if req.task == "anomaly":
        meta["anomaly"] = _calibrate_threshold(trainer, meta, val_data or train_data, cfg)
    meta.update({"epochs_completed": cfg.epochs, "complete": True,
                 "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "samples_processed": trainer.samples_processed})
    (out / PLUGIN_DIR).mkdir(exist_ok=True)
    for p in plugins:
        p.save(out / PLUGIN_DIR)
    metrics = {
        "task": req.task, "mode": req.mode, "dataset_ref": ref, "epochs": cfg.epochs,
        "epochs_planned": planned, "best_epoch": trainer.best["epoch"] if trainer.best else None,
        "n_train": len(train_ex), "n_val": len(val_ex or []), "labels": labels,
        "samples_processed": trainer.samples_processed, "forward_only_samples": trainer.forward_only_samples,
        "train_seconds_this_process": train_seconds, "history": trainer.history,
        "final": trainer.history[-1] if trainer.history else {},
        "transformer_weight": transformer_weight,
    }
    if req.task == "anomaly":
        metrics["anomaly"] = meta["anomaly"]
    atomic_write_json(out / METRICS_FILE, metrics)
    if req.write_plot:
        _plot(trainer.history, out / CURVE_FILE, f"{req.task} {req.mode} on {ref}")
    # The finished checkpoint.json is the run's last write: once it is there, so is
    # everything else the run produces (a kill before it leaves a snapshot, resumable).
    save_checkpoint(out, trainer.model, meta, optimizer_state=trainer.optimizer.state_dict())
    (out / RESUME_FILE).unlink(missing_ok=True)
    return TrainResult(out, metrics, resumed_from_epoch=start_epoch, labels=labels)


RIDGE_MAX_ROWS = 4000  # the ridge fit's SVD costs O(rows * features * min(rows, features))


@torch.no_grad()
def _fit_random_features(trainer: Trainer, examples: list[dict], *, refit_biases: bool, seed: int,
                         calibrate: bool = True) -> None:
    """Before gradient training: the random-convolution biases (a fresh model only) and the
    ridge head, in closed form, on ``examples`` (the training and validation splits, plus the
    replay memory in an incremental run; at most ``RIDGE_MAX_ROWS`` of them, drawn at random).
    The head's leave-one-out predictions of those rows go to the trainer
    (``remember_ridge_outputs``)."""
    model = trainer.model
    t0 = time.monotonic()
    if len(examples) > RIDGE_MAX_ROWS:
        keep = np.random.default_rng(seed).choice(len(examples), RIDGE_MAX_ROWS, replace=False)
        examples = [examples[i] for i in sorted(keep)]
    trainer.forget_features()
    inputs, targets = collate(examples, trainer.task, trainer.norm, label_index=trainer.label_index,
                              target_norm=trainer.target_norm, device=trainer.device)
    if refit_biases:
        model.random_features.fit(inputs["sensor"].float(), inputs["sensor_mask"].bool(), seed=seed)
    feats = trainer.random_features(examples)
    head = model.ridge_head(trainer.task)
    if trainer.task == "classification":
        y = -torch.ones(len(targets), model.cfg.n_classes, device=feats.device)
        y[torch.arange(len(targets)), targets] = 1.0
    else:
        y = targets.float().view(len(targets), -1)
    loo = head.fit(feats, y)
    trainer.remember_ridge_outputs(examples, head.loo_predictions)
    if trainer.task == "classification" and calibrate:  # (a resumed run keeps its trained scale)
        # Ridge outputs live on the scale of the +-1 targets, far from confident logits:
        # the scale that makes its leave-one-out outputs calibrated lets the Transformer's
        # head learn only where the ridge head is wrong or unsure.
        model.ridge_scale.fill_(_calibrated_scale(head.loo_predictions, targets))
    log.info("random-convolution ridge head: %d features, %d rows, alpha %g, leave-one-out MSE %.4g, "
             "scale %.3g (%.1fs)", feats.shape[1], len(examples), head.alpha, loo, float(model.ridge_scale),
             time.monotonic() - t0)


BLEND_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


@torch.no_grad()
def _weigh_transformer_head(trainer: Trainer, val: list[dict]) -> float:
    """After gradient training: how much of the Transformer's head to keep beside the ridge
    head, chosen on the validation split (whose ridge outputs are leave-one-out ones, so the
    choice is honest) among ``BLEND_WEIGHTS`` by validation loss. On small data sets the
    Transformer's head can fit noise the ridge head does not; a weight of 0 keeps the ridge
    head's answer. The weight is folded into the head's own weights, so nothing new is saved."""
    model = trainer.model
    model.eval()
    parts, truth = [], []
    for s in range(0, len(val), 128):
        inputs, targets = trainer.batch(val[s : s + 128])
        ridge_out = inputs["ridge_out"]
        with trainer.autocast():
            outputs, _ = trainer._forward(inputs, targets)
        full = (outputs["logits"] if trainer.task == "classification" else outputs["value"]).float()
        ridge = model.ridge_scale * ridge_out[:, : full.shape[1]].float()
        parts.append((full - ridge, ridge))
        truth.append(targets)
    own = torch.cat([p[0] for p in parts])
    ridge = torch.cat([p[1] for p in parts])
    y = torch.cat(truth)

    def loss(w: float) -> float:
        out = w * own + ridge
        if trainer.task == "classification":
            return float(torch.nn.functional.cross_entropy(out, y.long()))
        return float(torch.nn.functional.mse_loss(out, y.float().view_as(out)))

    losses = {w: loss(w) for w in BLEND_WEIGHTS}
    best = min(BLEND_WEIGHTS, key=lambda w: (losses[w], -w))  # a tie keeps more of the Transformer
    head = model.classifier.linear if trainer.task == "classification" else model.regressor
    head.weight.mul_(best)
    head.bias.mul_(best)
    model.train()
    log.info("Transformer head weight %.2f beside the ridge head (validation loss %s)", best,
             ", ".join(f"{w:g}: {v:.4g}" for w, v in losses.items()))
    return best


def _calibrated_scale(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """The temperature ``s`` (0.1 to 100, on a log grid) minimising the cross-entropy of
    ``s * outputs`` against ``targets``."""
    grid = torch.logspace(-1, 2, 61, device=outputs.device)
    losses = torch.stack([torch.nn.functional.cross_entropy(s * outputs, targets.long()) for s in grid])
    return float(grid[int(losses.argmin())])


def _select_forecast_epochs(model: TimeSeriesTransformer, train_ex: list[dict], val_ex: list[dict],
                            cfg: TrainConfig, norm: Normalization, device, time_budget_s: float | None) -> dict:
    """The epoch count of a forecasting run: a copy of the fresh model trains on ``train_ex``
    and is validated after every epoch; the count with the lowest validation loss wins, 0
    (the seasonal-naive start) included. The run on all data then follows the learning-rate
    schedule of the ``epochs_tried`` this one planned, stopped there."""
    log.info("forecasting: choosing the epoch count on %d validation windows", len(val_ex))
    probe = Trainer(copy.deepcopy(model), "forecasting", cfg, norm=norm, plugins=[], device=device)
    losses = [probe.validate(val_ex)["val_loss"]]
    probe.fit(train_ex, val_ex, cfg.epochs, time_budget_s=time_budget_s)
    losses += [r["val_loss"] for r in probe.history]
    best = int(np.argmin(losses))
    log.info("forecasting: %d epochs (validation loss %.4g; %.4g before training)", best, losses[best], losses[0])
    return {"epochs": best, "val_loss": losses[best], "val_loss_at_start": losses[0],
            "epochs_tried": len(losses) - 1, "n_val": len(val_ex), "n_train": len(train_ex)}


def _forecast_context(data: SeriesData, horizon: int) -> int:
    """The default forecasting context (``ModelConfig.context_len``), shortened for short
    series to half of what the horizon leaves of the shortest one, so that there are about as
    many training windows as context steps."""
    shortest = min(len(x) for x in data.series)
    return max(1, min(ModelConfig.context_len, (shortest - horizon + 1) // 2))


def _auto_epochs(task: str, n_train: int, cfg: TrainConfig) -> int:
    """Epochs when the config leaves them open: about ``cfg.steps`` optimizer steps for
    classification and regression, whatever the data set's size; fixed counts that reach the
    quality targets for forecasting (100) and anomaly detection (20, many windows each)."""
    if task == "forecasting":
        return 100
    if task == "anomaly":
        return 20
    per_epoch = max(1, -(-n_train // cfg.batch_size))
    return int(min(cfg.max_epochs, max(1, -(-cfg.steps // per_epoch))))


def _request_fingerprint(req: TrainRequest, cfg: TrainConfig) -> str | None:
    """What the run was asked, before any data is read (None for data given in memory):
    recorded in its checkpoint, so a retry knows a finished run in ``out`` is its own."""
    if not isinstance(req.data, str):
        return None
    return json.dumps({"mode": req.mode, "task": req.task, "data": req.data, "init": str(req.init),
                       "cfg": cfg.to_dict()}, sort_keys=True)


def _forget_previous_run(out: Path) -> None:
    """Before a run that does not resume writes into ``out``: what an earlier run there
    wrote goes, its ``checkpoint.json`` first, so that the folder is never taken for a
    checkpoint whose files are partly another run's (a kill between two writes) and no
    file of the earlier run (its plugin state, its optimizer, its metrics) outlives it."""
    import shutil

    from ml.checkpoint import OPTIMIZER_FILE, SAFETENSORS_WEIGHTS, TORCH_WEIGHTS

    if (out / META_FILE).exists():
        log.info("%s holds an earlier run's files; replacing them", out)
    for name in (META_FILE, RESUME_FILE, METRICS_FILE, CURVE_FILE, OPTIMIZER_FILE, SAFETENSORS_WEIGHTS, TORCH_WEIGHTS):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / PLUGIN_DIR, ignore_errors=True)
    for leftover in out.glob(".*.tmp*"):  # a write cut short by a kill (ml.checkpoint's temporary names)
        leftover.unlink(missing_ok=True)


def _fingerprint(req: TrainRequest, cfg: TrainConfig, ref: str) -> str:
    return json.dumps({"mode": req.mode, "task": req.task, "data": ref, "init": str(req.init),
                       "cfg": cfg.to_dict()}, sort_keys=True)


def _calibrate_threshold(trainer: Trainer, meta: dict, data: SeriesData, cfg: TrainConfig) -> dict:
    """Threshold = quantile of smoothed scores on held-out normal data x margin."""
    from ml.predict import anomaly_scores

    info = {"window": cfg.anomaly_window, "smoothing": cfg.anomaly_smoothing}
    ckpt = Checkpoint(model=trainer.model.eval(), config=trainer.model.cfg, task="anomaly", labels=[],
                      meta={**meta, "anomaly": info}, path=Path("."))
    scores = anomaly_scores(ckpt, data.series)
    skip = max(1, cfg.anomaly_smoothing)  # the first steps lack history and score low
    values = np.concatenate([s[skip:] if len(s) > skip else s for s in scores])
    q = float(np.quantile(values, cfg.anomaly_threshold_quantile))
    info["threshold"] = q * cfg.anomaly_threshold_margin
    info["calibration_quantile"] = cfg.anomaly_threshold_quantile
    info["calibration_steps"] = int(len(values))
    log.info("anomaly threshold %.5g from %d validation steps", info["threshold"], len(values))
    return info


def _plot(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    if history and "val_loss" in history[0]:
        ax.plot(epochs, [h["val_loss"] for h in history], label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    if history and "val_accuracy" in history[0]:
        ax2 = ax.twinx()
        ax2.plot(epochs, [h["val_accuracy"] for h in history], color="tab:green", label="validation accuracy")
        ax2.set_ylabel("accuracy")
        ax2.set_ylim(0, 1.02)
        ax2.legend(loc="center right")
    ax.legend(loc="upper right")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
