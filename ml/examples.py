"""From ``SeriesData`` to examples, per task: label checks, the validation split and
``build_examples``.

An example is a dict of numpy values in raw units: ``sensor`` (T, C), optional ``timestamps``,
``text``, ``image``, ``audio``, and the target (``label`` for classification, ``target`` for
regression and forecasting; anomaly detection needs none, it predicts the next step).
Examples stay in raw units: ``ml.collate`` normalises them when it builds a batch, with
statistics stored in the checkpoint, so the replay memory can keep raw examples across runs.
"""

from __future__ import annotations

import logging

import numpy as np

from ml.data import SeriesData
from ml.exceptions import DataError

log = logging.getLogger(__name__)


def class_labels(data: SeriesData) -> list[str]:
    """Sorted label set; numeric-looking labels sort numerically ('2' before '10')."""
    distinct = {v for v in data.labels if v is not None}

    def key(v: str):
        try:
            return (0, float(v), v)
        except ValueError:
            return (1, 0.0, v)

    return sorted(distinct, key=key)


def _check_classification_labels(data: SeriesData) -> None:
    if data.labels is None:
        raise DataError(f"{data.ref}: task classification needs labels, the data has none")
    values = [v for v in data.labels if v is not None]
    if not values:
        raise DataError(f"{data.ref}: task classification needs labels, every sample is unlabelled")
    numbers = []
    for v in values:
        try:
            numbers.append(float(v))
        except ValueError:
            return  # class names
    fractional = [x for x in numbers if not float(x).is_integer()]
    if data.label_kind == "numeric" and fractional and len(set(numbers)) > len(numbers) // 2:
        raise DataError(
            f"{data.ref}: labels are continuous numbers (e.g. {fractional[0]}, {len(set(numbers))} distinct"
            " values); task classification needs class labels - use task regression"
        )


def _regression_targets(data: SeriesData) -> list[float | None]:
    if data.labels is None:
        raise DataError(f"{data.ref}: task regression needs numeric targets, the data has no labels")
    out = []
    for i, v in enumerate(data.labels):
        if v is None:
            out.append(None)
            continue
        try:
            out.append(float(v))
        except ValueError as e:
            raise DataError(
                f"{data.ref}: series {data.ids[i]!r} has label {v!r}; task regression needs numeric"
                " targets - use task classification for class labels"
            ) from e
    return out


def _base_example(data: SeriesData, i: int, sl: slice | None = None) -> dict:
    sl = sl or slice(None)
    ex = {"sensor": data.series[i][sl], "id": data.ids[i]}
    if data.timestamps is not None:
        ex["timestamps"] = data.timestamps[i][sl]
    if data.extras is not None:
        ex.update(data.extras[i])
    return ex


def build_examples(data: SeriesData, task: str, *, context_len: int = 36, horizon: int = 12,
                   window: int = 128, stride: int | None = None, scored_only: bool = False) -> list[dict]:
    """Examples for ``task``. Unlabelled series are skipped for supervised tasks.
    ``scored_only`` keeps only the forecasting windows that start in the held-out part."""
    examples: list[dict] = []
    if task == "classification":
        _check_classification_labels(data)
        for i, lab in enumerate(data.labels):
            if lab is not None:
                examples.append({**_base_example(data, i), "label": lab})
    elif task == "regression":
        for i, y in enumerate(_regression_targets(data)):
            if y is not None:
                examples.append({**_base_example(data, i), "target": np.asarray([y], dtype=np.float32)})
    elif task == "forecasting":
        need = context_len + horizon
        for i, x in enumerate(data.series):
            if len(x) < need:
                raise DataError(
                    f"{data.ref}: series {data.ids[i]!r} has {len(x)} steps; forecasting needs at least"
                    f" context {context_len} + horizon {horizon} = {need}"
                )
            first = 0
            if scored_only and data.eval_from is not None:
                first = max(0, data.eval_from - context_len)
            for s in range(first, len(x) - need + 1, stride or 1):
                ex = _base_example(data, i, slice(s, s + context_len))
                ex["target"] = x[s + context_len : s + need]
                examples.append(ex)
    elif task == "anomaly":
        stride = stride or max(1, window // 2)
        for i, x in enumerate(data.series):
            if len(x) < 2:
                raise DataError(f"{data.ref}: series {data.ids[i]!r} has {len(x)} steps; anomaly scoring needs 2+")
            starts = list(range(0, max(1, len(x) - window + 1), stride))
            if starts[-1] + window < len(x):
                starts.append(len(x) - window)
            for s in starts:
                examples.append(_base_example(data, i, slice(s, s + window)))
    else:
        raise DataError(f"unknown task {task!r}")
    if not examples:
        raise DataError(f"{data.ref}: no usable {task} examples (all samples unlabelled?)")
    return examples


def split_validation(data: SeriesData, task: str, fraction: float, seed: int, *,
                     context: int = 0, min_len: int = 2, min_held_out: int = 0,
                     min_train_len: int = 0) -> tuple[SeriesData, SeriesData | None]:
    """Hold out ``fraction`` for validation: whole series for classification/regression
    (stratified by class, at least one of each class with two or more), the last part in
    time of each series for forecasting/anomaly (at least ``min_held_out`` steps, preceded by
    ``context`` steps of history). Series whose held-out part would be shorter than
    ``min_len``, or whose training part shorter than ``min_train_len``, give no validation data."""
    if fraction <= 0:
        return data, None
    if task in ("classification", "regression"):
        rng = np.random.default_rng(seed)
        groups: dict[str, list[int]] = {}
        for i, lab in enumerate(data.labels or [None] * len(data)):
            groups.setdefault(lab if task == "classification" else "all", []).append(i)
        val = []
        for idx in groups.values():
            idx = list(rng.permutation(idx))
            # At least one series of every class that has two, so that even a small data set
            # validates each class (the ridge head's blend with the Transformer's is chosen there).
            n_val = int(round(len(idx) * fraction))
            val.extend(idx[: max(n_val, 1) if len(idx) >= 2 else n_val])
        val_set = set(int(v) for v in val)
        if not val_set:
            return data, None
        train = [i for i in range(len(data)) if i not in val_set]
        return data.subset(train), data.subset(sorted(val_set))
    train, val, val_ids = [], [], []
    for i, x in enumerate(data.series):
        cut = len(x) - max(int(len(x) * fraction), min_held_out)
        part = x[max(0, cut - context):]
        if len(x) - cut == 0 or len(part) < min_len or cut < min_train_len:
            train.append(x)
            continue
        train.append(x[:cut])
        val.append(part)
        val_ids.append(data.ids[i])
    if not val:
        log.info("%s: too short to hold out %.0f%% for validation; training on all of it", data.ref, 100 * fraction)
        return data, None
    return (SeriesData(ref=data.ref, series=train, ids=list(data.ids), label_kind=data.label_kind),
            SeriesData(ref=data.ref, series=val, ids=val_ids, label_kind=data.label_kind))
