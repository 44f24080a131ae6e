"""Metrics of a checkpoint on a data set: what ``python -m ml.evaluate`` writes and the
benchmarks report."""

from __future__ import annotations

import numpy as np

from ml.checkpoint import Checkpoint
from ml.data import SeriesData
from ml.exceptions import DataError
from ml.predict import anomaly_scores, run_batches
from ml.examples import build_examples


def _check_channels(ckpt: Checkpoint, data: SeriesData) -> None:
    if data.n_channels != ckpt.config.n_channels:
        raise DataError(f"{data.ref}: data has {data.n_channels} channels, checkpoint {ckpt.path} expects"
                        f" {ckpt.config.n_channels}")


def classification_metrics(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict:
    extra = sorted({y for y in y_true if y not in labels})  # classes the model never saw
    names = list(labels) + extra
    index = {n: i for i, n in enumerate(names)}
    cm = np.zeros((len(names), len(names)), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        cm[index[t], index[p]] += 1
    present = [i for i in range(len(names)) if cm[i].sum() > 0 or cm[:, i].sum() > 0]
    f1s = []
    per_class = {}
    for i in present:
        tp = cm[i, i]
        prec = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        rec = tp / cm[i].sum() if cm[i].sum() else 0.0
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
        # Recall is the class's accuracy: the share of its samples predicted as it.
        per_class[names[i]] = {"n": int(cm[i].sum()), "correct": int(tp), "accuracy": float(rec),
                               "precision": float(prec), "f1": float(f1s[-1])}
    return {
        "accuracy": float(np.trace(cm) / max(1, cm.sum())),
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "confusion": cm.tolist(),
        "confusion_labels": names,
        "unseen_labels": extra,
        "per_class": per_class,
        "n": int(cm.sum()),
    }


def point_adjust(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Point adjustment (Xu et al. 2018): a labelled anomaly segment counts as found in full
    when any of its steps is flagged."""
    adjusted = pred.copy()
    t = truth.astype(bool)
    i = 0
    while i < len(t):
        if t[i]:
            j = i
            while j < len(t) and t[j]:
                j += 1
            if pred[i:j].any():
                adjusted[i:j] = True
            i = j
        else:
            i += 1
    return adjusted


def _prf(pred: np.ndarray, truth: np.ndarray) -> dict:
    tp = int((pred & truth).sum())
    fp = int((pred & ~truth).sum())
    fn = int((~pred & truth).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def anomaly_metrics(scores: list[np.ndarray], truths: list[np.ndarray], threshold: float) -> dict:
    s = np.concatenate(scores)
    t = np.concatenate(truths).astype(bool)
    pred = s > threshold
    adjusted = np.concatenate([point_adjust(sc > threshold, tr.astype(bool)) for sc, tr in zip(scores, truths)])
    out = {**_prf(adjusted, t), "point_wise": _prf(pred, t), "threshold": float(threshold),
           "flagged_steps": int(pred.sum()), "anomalous_steps": int(t.sum()), "steps": int(len(t))}
    # Where the highest score falls, per series: the UCR/KDD convention counts a detection
    # when the top score lies within 100 steps of the labelled region.
    tops = []
    for sc, tr in zip(scores, truths):
        top = int(np.argmax(sc))
        idx = np.flatnonzero(tr)
        dist = int(np.min(np.abs(idx - top))) if len(idx) else None
        tops.append({"top_index": top, "anomaly_start": int(idx[0]) if len(idx) else None,
                     "anomaly_end": int(idx[-1]) if len(idx) else None, "distance": dist,
                     "top_in_anomaly": dist == 0, "top_within_100": dist is not None and dist <= 100})
    out["top_score"] = tops
    return out


def evaluate(ckpt: Checkpoint, data: SeriesData, season: int | None = None) -> dict:
    _check_channels(ckpt, data)
    task, cfg = ckpt.task, ckpt.config
    result: dict = {"task": task, "dataset_ref": data.ref, "checkpoint": str(ckpt.path)}
    if task == "classification":
        examples = build_examples(data, task)
        too_long = [ex["id"] for ex in examples if len(ex["sensor"]) > cfg.max_len]
        if too_long:
            raise DataError(f"{data.ref}: series {too_long[0]!r} is longer than the model's max_len {cfg.max_len}")
        probs = run_batches(ckpt, examples)
        preds = [ckpt.labels[int(np.argmax(p["probabilities"]))] for p in probs]
        result.update(classification_metrics([ex["label"] for ex in examples], preds, ckpt.labels))
        result["labels"] = list(ckpt.labels)  # the classes the model knows
    elif task in ("regression", "forecasting"):
        examples = build_examples(data, task, context_len=cfg.context_len, horizon=cfg.horizon, scored_only=True)
        out = run_batches(ckpt, examples)
        key = "value" if task == "regression" else "forecast"
        pred = np.stack([o[key] for o in out]).astype(np.float64)
        true = np.stack([np.asarray(ex["target"]) for ex in examples]).astype(np.float64)
        err = pred - true
        result.update({"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())), "n": len(examples)})
        if task == "forecasting":
            ctx = np.stack([np.asarray(ex["sensor"]) for ex in examples]).astype(np.float64)  # (N, L, C)
            naive = np.repeat(ctx[:, -1:], cfg.horizon, axis=1)
            result["naive_mae"] = float(np.abs(naive - true).mean())
            if season:
                if season > ctx.shape[1]:
                    raise DataError(f"season {season} is longer than the context {ctx.shape[1]}")
                h = np.arange(cfg.horizon)
                snaive = ctx[:, ctx.shape[1] - season + (h % season)]
                result["seasonal_naive_mae"] = float(np.abs(snaive - true).mean())
                result["season"] = season
            result["horizon"] = cfg.horizon
            result["context_len"] = cfg.context_len
    else:
        if data.point_labels is None:
            raise DataError(f"{data.ref}: anomaly evaluation needs per-step labels (an is_anomaly column)")
        threshold = float(ckpt.meta["anomaly"]["threshold"])
        scores = anomaly_scores(ckpt, data.series)
        result.update(anomaly_metrics(scores, data.point_labels, threshold))
    return result
