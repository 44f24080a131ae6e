"""From ``SeriesData`` to training examples and batches, per task.

An example is a dict of numpy values in raw units: ``sensor`` (T, C), optional ``timestamps``,
``text``, ``image``, ``audio``, and the target (``label`` for classification, ``target`` for
regression and forecasting; anomaly detection needs none, it predicts the next step).
Normalisation happens when a batch is built, with statistics stored in the checkpoint, so the
replay memory can keep raw examples across runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ml.data import SeriesData
from ml.exceptions import DataError

log = logging.getLogger(__name__)

DRIFT_BINS = 10  # PSI is conventionally computed over ten quantile buckets


@dataclass
class Normalization:
    mean: np.ndarray  # (C,)
    std: np.ndarray  # (C,)

    @classmethod
    def fit(cls, series: list[np.ndarray]) -> "Normalization":
        allv = np.concatenate(series, axis=0).astype(np.float64)
        std = allv.std(axis=0)
        return cls(allv.mean(axis=0).astype(np.float32), np.where(std < 1e-8, 1.0, std).astype(np.float32))

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalization":
        return cls(np.asarray(d["mean"], dtype=np.float32), np.asarray(d["std"], dtype=np.float32))


def drift_reference(series: list[np.ndarray], bins: int = DRIFT_BINS) -> dict:
    """Per-channel reference histogram for input-drift PSI. ``edges`` are the interior cut
    points (quantiles of the training values); bucket i holds values in (edges[i-1], edges[i]],
    with the first and last buckets open to -inf / +inf. ``proportions`` sum to 1."""
    allv = np.concatenate(series, axis=0).astype(np.float64)
    channels = []
    for c in range(allv.shape[1]):
        v = allv[:, c]
        edges = np.unique(np.quantile(v, np.linspace(0, 1, bins + 1)[1:-1]))
        counts = np.bincount(np.searchsorted(edges, v, side="left"), minlength=len(edges) + 1)
        channels.append({"edges": edges.tolist(), "proportions": (counts / counts.sum()).tolist()})
    return {"bins": bins, "n_values": int(len(allv)), "channels": channels}


# ---- task checks and examples -------------------------------------------------------------------
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
                     context: int = 0, min_len: int = 2) -> tuple[SeriesData, SeriesData | None]:
    """Hold out ``fraction`` for validation: whole series for classification/regression
    (stratified by class), the last part in time of each series for forecasting/anomaly
    (preceded by ``context`` steps of history). Series whose held-out part would be shorter
    than ``min_len`` give no validation data."""
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
            val.extend(idx[: int(round(len(idx) * fraction))])
        val_set = set(int(v) for v in val)
        if not val_set:
            return data, None
        train = [i for i in range(len(data)) if i not in val_set]
        return data.subset(train), data.subset(sorted(val_set))
    train, val, val_ids = [], [], []
    for i, x in enumerate(data.series):
        cut = len(x) - int(len(x) * fraction)
        part = x[max(0, cut - context):]
        if len(x) - cut == 0 or len(part) < min_len:
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


# ---- batches ---------------------------------------------------------------------------------
def encode_text(text) -> np.ndarray:
    """Text -> ids: UTF-8 bytes shifted by one (0 is padding). Lists of ints pass through."""
    if isinstance(text, str):
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64) + 1
    return np.asarray(text, dtype=np.int64)


def collate(examples: list[dict], task: str, norm: Normalization, *, label_index: dict[str, int] | None = None,
            target_norm: Normalization | None = None, device: str | torch.device = "cpu"):
    """Pad a list of examples into model inputs (dict of tensors) and targets."""
    b = len(examples)
    lengths = [len(ex["sensor"]) for ex in examples]
    t_max = max(lengths)
    c = norm.mean.shape[0]
    sensor = np.zeros((b, t_max, c), dtype=np.float32)
    mask = np.zeros((b, t_max), dtype=bool)
    for i, ex in enumerate(examples):
        sensor[i, : lengths[i]] = (np.asarray(ex["sensor"], dtype=np.float32) - norm.mean) / norm.std
        mask[i, : lengths[i]] = True
    inputs = {"sensor": torch.from_numpy(sensor), "sensor_mask": torch.from_numpy(mask)}
    if all("timestamps" in ex for ex in examples):
        ts = np.zeros((b, t_max), dtype=np.float32)
        for i, ex in enumerate(examples):
            t = np.asarray(ex["timestamps"], dtype=np.float64)
            ts[i, : lengths[i]] = t - t[0]
            ts[i, lengths[i] :] = ts[i, lengths[i] - 1] if lengths[i] else 0
        inputs["timestamps"] = torch.from_numpy(ts)
    if any(ex.get("text") is not None for ex in examples):
        ids = [encode_text(ex.get("text", "")) for ex in examples]
        arr = np.zeros((b, max(1, max(len(v) for v in ids))), dtype=np.int64)
        for i, v in enumerate(ids):
            arr[i, : len(v)] = v
        inputs["text"] = torch.from_numpy(arr)
    if any(ex.get("image") is not None for ex in examples):
        imgs = [np.asarray(ex["image"], dtype=np.float32) for ex in examples if ex.get("image") is not None]
        shape = imgs[0].shape
        if len(shape) == 2:  # a single (H, W) frame without a frame axis
            shape = (1, *shape)
        arr = np.zeros((b, *shape), dtype=np.float32)
        fmask = np.zeros((b, shape[0]), dtype=bool)
        for i, ex in enumerate(examples):
            if ex.get("image") is None:
                continue
            im = np.asarray(ex["image"], dtype=np.float32)
            im = im[None] if im.ndim == len(shape) - 1 else im
            arr[i, : im.shape[0]] = im
            fmask[i, : im.shape[0]] = True
        fmask[~fmask.any(1), 0] = True  # a sample without images attends to one blank frame
        inputs["image"] = torch.from_numpy(arr)
        inputs["image_mask"] = torch.from_numpy(fmask)
    if any(ex.get("audio") is not None for ex in examples):
        wavs = [np.asarray(ex.get("audio", []), dtype=np.float32).reshape(-1) for ex in examples]
        arr = np.zeros((b, max(len(w) for w in wavs)), dtype=np.float32)
        for i, w in enumerate(wavs):
            arr[i, : len(w)] = w
        inputs["audio"] = torch.from_numpy(arr)
        inputs["audio_lengths"] = torch.tensor([max(len(w), 1) for w in wavs])
    targets = None
    if task == "classification" and label_index is not None and all("label" in ex for ex in examples):
        targets = torch.tensor([label_index[ex["label"]] for ex in examples], dtype=torch.long)
    elif task == "regression" and all("target" in ex for ex in examples):
        y = np.stack([np.asarray(ex["target"], dtype=np.float32) for ex in examples])
        if target_norm is not None:
            y = (y - target_norm.mean) / target_norm.std
        targets = torch.from_numpy(y.astype(np.float32))
    elif task == "forecasting" and all("target" in ex for ex in examples):
        y = np.stack([(np.asarray(ex["target"], dtype=np.float32) - norm.mean) / norm.std for ex in examples])
        targets = torch.from_numpy(y.astype(np.float32))
    elif task == "anomaly":
        targets = inputs["sensor"]
    dev = torch.device(device)
    inputs = {k: v.to(dev) for k, v in inputs.items()}
    return inputs, (None if targets is None else targets.to(dev))
