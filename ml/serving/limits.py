"""Bounds on what one request may hold, checked on the fields as parsed from JSON, before
any of them is converted to arrays.

Every dimension has a bound (``ServingConfig``, ``TP_SERVE_MAX_*``): time steps and channels
of ``sensor``, ``timestamps``, text tokens, image frames, colour channels and pixels per
side, audio samples, and the characters of ``key`` and of a feedback ``label``. A request
over one is refused with ``InvalidInputError`` (HTTP 400) naming the field, the size found,
the bound and the variable that sets it. The model's own limits (``ml.predict.validate_sample``)
apply afterwards, so the tighter of the two wins. The body as a whole is capped before it
is parsed (``TP_SERVE_MAX_BODY_BYTES``, HTTP 413, in ``ml/service.py``).

Only the outer length of each nesting level is looked at, along its first element: that is
enough to refuse an oversized array without walking it, and ``validate_sample`` refuses a
ragged one when it converts it.
"""

from __future__ import annotations

from typing import Any

from ml.exceptions import InvalidInputError
from ml.serving.config import ServingConfig


def _over(field: str, what: str, found: int, bound: int, variable: str) -> InvalidInputError:
    return InvalidInputError(f"{field}: {found} {what}, the service takes at most {bound} ({variable})")


def _lengths(value: Any, depth: int) -> list[int]:
    """Lengths of ``value`` and of its first element, first element's first element, ...,
    ``depth`` levels down, stopping at the first level that is not a list."""
    out = []
    for _ in range(depth):
        if not isinstance(value, list):
            break
        out.append(len(value))
        if not value:
            break
        value = value[0]
    return out


def check_predict_request(body: dict[str, Any], key: str | None, config: ServingConfig) -> None:
    """Raises ``InvalidInputError`` when a field of a ``/predict`` body is over its bound."""
    if key is not None and len(key) > config.max_key_chars:
        raise _over("key", "characters", len(key), config.max_key_chars, "TP_SERVE_MAX_KEY_CHARS")
    sensor = body.get("sensor")
    if isinstance(sensor, list):
        steps = len(sensor)
        if steps > config.max_steps:
            raise _over("sensor", "time steps", steps, config.max_steps, "TP_SERVE_MAX_STEPS")
        channels = len(sensor[0]) if steps and isinstance(sensor[0], list) else 0
        if channels > config.max_channels:
            raise _over("sensor", "channels per time step", channels, config.max_channels, "TP_SERVE_MAX_CHANNELS")
    timestamps = body.get("timestamps")
    if isinstance(timestamps, list) and len(timestamps) > config.max_steps:
        raise _over("timestamps", "values", len(timestamps), config.max_steps, "TP_SERVE_MAX_STEPS")
    text = body.get("text")
    if isinstance(text, str):
        # A string's tokens are its UTF-8 bytes (BentoML's JSON parser refuses the lone
        # surrogates that have no UTF-8 form).
        tokens = len(text.encode("utf-8"))
        if tokens > config.max_text_tokens:
            raise _over("text", "tokens (UTF-8 bytes)", tokens, config.max_text_tokens, "TP_SERVE_MAX_TEXT_TOKENS")
    elif isinstance(text, list) and len(text) > config.max_text_tokens:
        raise _over("text", "tokens", len(text), config.max_text_tokens, "TP_SERVE_MAX_TEXT_TOKENS")
    image = body.get("image")
    if isinstance(image, list):
        _check_image(_lengths(image, 4), config)
    audio = body.get("audio")
    if isinstance(audio, list) and len(audio) > config.max_audio_samples:
        raise _over("audio", "samples", len(audio), config.max_audio_samples, "TP_SERVE_MAX_AUDIO_SAMPLES")


def _check_image(lengths: list[int], config: ServingConfig) -> None:
    # (H, W), (F, H, W) or (F, ch, H, W); a shorter or ragged nesting is validate_sample's
    # to refuse. Which reading applies follows the depth, as validate_sample's does.
    if len(lengths) <= 2:
        frames, channels, sides = 1, None, lengths
    elif len(lengths) == 3:
        frames, channels, sides = lengths[0], None, lengths[1:]
    else:
        frames, channels, sides = lengths[0], lengths[1], lengths[2:]
    if frames > config.max_frames:
        raise _over("image", "frames", frames, config.max_frames, "TP_SERVE_MAX_FRAMES")
    if channels is not None and channels > config.max_image_channels:
        raise _over("image", "colour channels", channels, config.max_image_channels, "TP_SERVE_MAX_IMAGE_CHANNELS")
    for axis, side in zip(("height", "width"), sides):
        if side > config.max_image_side:
            raise _over("image", f"pixels of frame {axis}", side, config.max_image_side, "TP_SERVE_MAX_IMAGE_SIDE")


def check_feedback_request(key: str, label: str, config: ServingConfig) -> None:
    """Raises ``InvalidInputError`` when a ``/feedback`` key or label is over its bound."""
    if len(key) > config.max_key_chars:
        raise _over("key", "characters", len(key), config.max_key_chars, "TP_SERVE_MAX_KEY_CHARS")
    if len(label) > config.max_key_chars:
        raise _over("label", "characters", len(label), config.max_key_chars, "TP_SERVE_MAX_KEY_CHARS")
