"""From examples (see ``ml.examples``) to model inputs: ``collate`` normalises and pads a list
of them into a dict of tensors with masks, plus the task's targets."""

from __future__ import annotations

import numpy as np
import torch

from ml.normalization import Normalization


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
