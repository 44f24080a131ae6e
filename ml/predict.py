"""Inference on JSON-like samples: what serving, batch scoring and evaluation call.

A sample is ``{"sensor": [[c1, c2, ...], ...]}`` (time steps x channels) with optional
``timestamps`` (one number per step), ``text`` (a string or token ids), ``image`` (frames x
H x W, or frames x channels x H x W) and ``audio`` (a waveform). ``validate_sample`` checks
one against a checkpoint and returns a ``ValidatedSample`` (numpy arrays); ``predict``
validates every sample first, then runs them in batches of up to ``BATCH_SIZE`` with padding
masks. ``predict_validated`` is the second half alone: the inference service validates each
request when it arrives and hands the ``ValidatedSample`` to its batcher, so nothing is
checked or converted twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ml.checkpoint import Checkpoint
from ml.collate import collate, encode_text
from ml.exceptions import InvalidInputError

BATCH_SIZE = 64  # the serving benchmark sends 1..64 samples; one forward pass each
ANOMALY_MAX_LEN = 1_000_000  # anomaly scoring slides a window, so only memory bounds the length
SAMPLE_KEYS = {"sensor", "timestamps", "text", "image", "audio", "id"}


@dataclass(frozen=True, slots=True)
class ValidatedSample:
    """One sample as ``validate_sample`` left it: arrays the checkpoint it was checked against
    accepts as they are, in raw units (``ml.collate`` normalises when it builds a batch)."""

    sensor: np.ndarray  # (T, C) float32; for forecasting, the last context_len steps
    timestamps: np.ndarray | None = None  # (T,) float64
    text: np.ndarray | None = None  # (L,) int64 token ids (a string arrives as its UTF-8 bytes + 1)
    image: np.ndarray | None = None  # (F, H, W) or (F, ch, H, W) float32
    audio: np.ndarray | None = None  # (L,) float32

    def arrays(self) -> dict[str, np.ndarray]:
        """The fields that are set, by name: an example for ``collate``, and what the serving
        cache hashes. The arrays themselves, not copies."""
        out = {"sensor": self.sensor}
        for name in ("timestamps", "text", "image", "audio"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _finite_array(value, name: str, dims: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"{name}: not a rectangular array of numbers ({e})") from e
    if arr.ndim not in dims:
        raise InvalidInputError(f"{name}: expected {' or '.join(map(str, dims))} dimensions, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        where = tuple(int(v) for v in np.argwhere(bad)[0])
        raise InvalidInputError(f"{name}: non-finite value at index {list(where)}")
    return arr


def validate_sample(checkpoint: Checkpoint, sample: Any) -> ValidatedSample:
    """Check one JSON-like sample against the checkpoint and return its arrays.
    Raises ``InvalidInputError`` saying what is wrong."""
    cfg = checkpoint.config
    if not isinstance(sample, dict):
        raise InvalidInputError(f"a sample must be an object with a 'sensor' field, got {type(sample).__name__}")
    unknown = sorted(set(sample) - SAMPLE_KEYS)
    if unknown:
        raise InvalidInputError(f"unknown sample fields: {', '.join(unknown)} (allowed: {', '.join(sorted(SAMPLE_KEYS))})")
    if "sensor" not in sample:
        raise InvalidInputError("the sample has no 'sensor' field")
    x = _finite_array(sample["sensor"], "sensor", (1, 2))
    if x.ndim == 1:
        if cfg.n_channels != 1:
            raise InvalidInputError(f"sensor: got a flat list, the model expects {cfg.n_channels} channels per step")
        x = x[:, None]
    t, c = x.shape
    if c != cfg.n_channels:
        raise InvalidInputError(f"sensor: {c} channels per time step, the model expects {cfg.n_channels}")
    if t == 0:
        raise InvalidInputError("sensor: no time steps")
    task = checkpoint.task
    if task == "forecasting":
        if t < cfg.context_len:
            raise InvalidInputError(f"sensor: {t} time steps, forecasting needs at least {cfg.context_len}")
    elif task == "anomaly":
        if t < 2 or t > ANOMALY_MAX_LEN:
            raise InvalidInputError(f"sensor: {t} time steps, anomaly scoring takes 2..{ANOMALY_MAX_LEN}")
    elif t > cfg.max_len:
        raise InvalidInputError(f"sensor: {t} time steps is too long, the model takes at most {cfg.max_len}")
    timestamps = ids = frames = wav = None
    if sample.get("timestamps") is not None:
        ts = _finite_array(sample["timestamps"], "timestamps", (1,))
        if len(ts) != t:
            raise InvalidInputError(f"timestamps: {len(ts)} values for {t} time steps")
        timestamps = ts.astype(np.float64)
    if sample.get("text") is not None:
        text = sample["text"]
        if not isinstance(text, (str, list)):
            raise InvalidInputError("text: expected a string or a list of token ids")
        ids = encode_text(text) if isinstance(text, str) else np.asarray(text)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer) and len(ids):
            raise InvalidInputError("text: token ids must be a flat list of integers")
        if len(ids) > cfg.max_text_len:
            raise InvalidInputError(f"text: {len(ids)} tokens is too long, the model takes at most {cfg.max_text_len}")
        if len(ids) and (ids.min() < 0 or ids.max() >= cfg.text_vocab):
            raise InvalidInputError(f"text: token ids must lie in 0..{cfg.text_vocab - 1}")
        ids = ids.astype(np.int64)
    if sample.get("image") is not None:
        img = _finite_array(sample["image"], "image", (2, 3, 4))
        frames = img[None] if img.ndim == 2 else img
        if frames.ndim == 4 and frames.shape[1] != cfg.image_channels:
            raise InvalidInputError(f"image: {frames.shape[1]} colour channels, the model expects {cfg.image_channels}")
        if frames.ndim == 3 and cfg.image_channels != 1:
            raise InvalidInputError(f"image: frames without a channel axis, the model expects {cfg.image_channels} channels")
        if len(frames) > cfg.max_frames:
            raise InvalidInputError(f"image: {len(frames)} frames, the model takes at most {cfg.max_frames}")
        if min(frames.shape[-2:]) < 4:
            raise InvalidInputError(f"image: frames of {frames.shape[-2:]} pixels are too small (4x4 at least)")
    if sample.get("audio") is not None:
        wav = _finite_array(sample["audio"], "audio", (1,))
        if len(wav) < 48 or len(wav) > cfg.max_audio_len:
            raise InvalidInputError(f"audio: {len(wav)} samples, the model takes 48..{cfg.max_audio_len}")
    if task == "forecasting":
        x = x[-cfg.context_len :]
        if timestamps is not None:
            timestamps = timestamps[-cfg.context_len :]
    return ValidatedSample(sensor=x, timestamps=timestamps, text=ids, image=frames, audio=wav)


@torch.inference_mode()
def run_batches(checkpoint: Checkpoint, examples: list[dict]) -> list[dict[str, np.ndarray]]:
    """Raw model outputs (denormalised) per example, for classification/regression/forecasting."""
    model, task, dev = checkpoint.model, checkpoint.task, checkpoint.device
    norm, tnorm = checkpoint.normalization, checkpoint.target_normalization
    out: list[dict[str, np.ndarray]] = []
    for start in range(0, len(examples), BATCH_SIZE):
        chunk = examples[start : start + BATCH_SIZE]
        inputs, _ = collate(chunk, task, norm, device=dev)
        with _autocast(dev):
            res, _ = model(inputs, task)
        if task == "classification":
            probs = torch.softmax(res["logits"].float(), dim=-1).cpu().numpy()
            out.extend({"probabilities": p} for p in probs)
        elif task == "regression":
            v = res["value"].float().cpu().numpy()
            if tnorm is not None:
                v = v * tnorm.std + tnorm.mean
            out.extend({"value": row} for row in v)
        elif task == "forecasting":
            f = res["forecast"].float().cpu().numpy() * norm.std + norm.mean  # (B, H, C)
            out.extend({"forecast": row} for row in f)
        else:
            raise ValueError(f"run_batches does not handle task {task}")
    return out


@torch.inference_mode()
def anomaly_scores(checkpoint: Checkpoint, series: list[np.ndarray]) -> list[np.ndarray]:
    """Per-step anomaly scores of whole series. Windows of the training length slide with
    half-window stride; each step takes its score from the window that saw the most
    history before it, and scores are smoothed with a centred moving average."""
    info = checkpoint.meta.get("anomaly", {})
    window = int(info.get("window", 128))
    smooth = int(info.get("smoothing", 1))
    half = max(1, window // 2)
    jobs: list[tuple[int, int, dict]] = []
    for k, x in enumerate(series):
        t = len(x)
        starts = list(range(0, max(1, t - window + 1), half))
        if starts[-1] + window < t:
            starts.append(t - window)
        jobs.extend((k, s, {"sensor": x[s : s + window]}) for s in starts)
    scores = [np.zeros(len(x), dtype=np.float64) for x in series]
    filled = [np.zeros(len(x), dtype=bool) for x in series]
    model, dev, norm = checkpoint.model, checkpoint.device, checkpoint.normalization
    for start in range(0, len(jobs), BATCH_SIZE):
        chunk = jobs[start : start + BATCH_SIZE]
        inputs, _ = collate([j[2] for j in chunk], "anomaly", norm, device=dev)
        with _autocast(dev):
            res, _ = model(inputs, "anomaly")
        sc = res["score"].float().cpu().numpy()
        for (k, s, ex), row in zip(chunk, sc):
            n = len(ex["sensor"])
            pos = np.arange(s, s + n)
            keep = (np.arange(n) >= (0 if s == 0 else half)) | ~filled[k][pos]
            scores[k][pos[keep]] = row[:n][keep]
            filled[k][pos[keep]] = True
    if smooth > 1:
        kernel = np.ones(smooth) / smooth
        # Centred, so a peak is not shifted after the event it belongs to.
        scores = [np.convolve(s, kernel, mode="same") if len(s) >= smooth else s for s in scores]
    return scores


def predict(checkpoint: Checkpoint, samples: list[dict]) -> list[dict]:
    """Validate and predict a list of samples; one result dict per sample, in order."""
    if not isinstance(samples, list):
        raise InvalidInputError("samples must be a list of objects")
    validated = []
    for i, s in enumerate(samples):
        try:
            validated.append(validate_sample(checkpoint, s))
        except InvalidInputError as e:
            raise InvalidInputError(f"sample {i}: {e}") from e
    return predict_validated(checkpoint, validated)


def predict_validated(checkpoint: Checkpoint, samples: Sequence[ValidatedSample]) -> list[dict]:
    """Predict samples that ``validate_sample`` checked against this checkpoint; one result
    dict per sample, in order."""
    if not samples:
        return []
    frame_shapes = {s.image.shape[1:] for s in samples if s.image is not None}
    if len(frame_shapes) > 1:  # frames are stacked into one tensor per batch
        raise InvalidInputError(f"image: all samples in a request need frames of one size, got {sorted(frame_shapes)}")
    task = checkpoint.task
    if task == "anomaly":
        threshold = float(checkpoint.meta["anomaly"]["threshold"])
        return [
            {"scores": [float(v) for v in sc], "threshold": threshold, "is_anomaly": bool(sc.max() > threshold)}
            for sc in anomaly_scores(checkpoint, [s.sensor for s in samples])
        ]
    raw = run_batches(checkpoint, [s.arrays() for s in samples])
    results = []
    for r in raw:
        if task == "classification":
            p = r["probabilities"]
            best = int(np.argmax(p))
            results.append({
                "label": checkpoint.labels[best],
                "confidence": float(p[best]),
                "probabilities": {lab: float(v) for lab, v in zip(checkpoint.labels, p)},
            })
        elif task == "regression":
            v = r["value"]
            results.append({"value": float(v[0]) if len(v) == 1 else [float(a) for a in v]})
        else:
            results.append({"forecast": [[float(a) for a in row] for row in r["forecast"]]})
    return results

