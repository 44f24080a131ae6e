"""Shapes, masks and head behaviour of the unified model."""

from __future__ import annotations

import pytest
import torch

from ml.model import ModelConfig, TimeSeriesTransformer

B, T, C = 3, 20, 2


def make(**kw) -> TimeSeriesTransformer:
    torch.manual_seed(0)
    cfg = ModelConfig(n_channels=C, d_model=16, n_layers=2, n_heads=2, d_ff=32, dropout=0.0, n_classes=4,
                      n_targets=2, horizon=5, context_len=T, **kw)
    return TimeSeriesTransformer(cfg).eval()


def sensor_inputs(lengths=(20, 15, 8)):
    x = torch.randn(B, T, C)
    mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    return {"sensor": x * mask[..., None], "sensor_mask": mask}


def test_heads_shapes_and_losses():
    m = make()
    inputs = sensor_inputs()
    out, loss = m(inputs, "classification", torch.tensor([0, 1, 3]))
    assert out["logits"].shape == (B, 4) and loss.ndim == 0 and torch.isfinite(loss)
    out, loss = m(inputs, "regression", torch.randn(B, 2))
    assert out["value"].shape == (B, 2) and torch.isfinite(loss)
    full = {"sensor": torch.randn(B, T, C), "sensor_mask": torch.ones(B, T, dtype=torch.bool)}
    out, loss = m(full, "forecasting", torch.randn(B, 5, C))
    assert out["forecast"].shape == (B, 5, C) and torch.isfinite(loss)
    out, loss = m(inputs, "anomaly", inputs["sensor"])
    assert out["score"].shape == (B, T) and out["prediction"].shape == (B, T, C) and torch.isfinite(loss)
    assert out["score"][2, 8:].abs().sum() == 0  # padded steps score nothing
    out, loss = m(inputs, "classification")
    assert loss is None
    with pytest.raises(ValueError, match="unknown task"):
        m(inputs, "segmentation")


def test_padding_does_not_change_outputs():
    m = make()
    x = torch.randn(1, 8, C)
    alone, _ = m({"sensor": x, "sensor_mask": torch.ones(1, 8, dtype=torch.bool)}, "classification")
    padded = torch.cat([x, torch.full((1, 12, C), 99.0)], dim=1)
    mask = torch.arange(20)[None, :] < 8
    with_pad, _ = m({"sensor": padded, "sensor_mask": mask}, "classification")
    torch.testing.assert_close(alone["logits"], with_pad["logits"], atol=1e-5, rtol=1e-5)
    a_alone, _ = m({"sensor": x, "sensor_mask": torch.ones(1, 8, dtype=torch.bool)}, "anomaly")
    a_pad, _ = m({"sensor": padded, "sensor_mask": mask}, "anomaly")
    torch.testing.assert_close(a_alone["score"], a_pad["score"][:, :8], atol=1e-5, rtol=1e-5)


def test_anomaly_scores_are_causal():
    """Changing step 12 must not change the scores of steps 0..11 (each is a prediction from
    the past only), and must change the score of step 12."""
    m = make()
    inputs = {"sensor": torch.randn(1, T, C)}
    a, _ = m(inputs, "anomaly")
    changed = inputs["sensor"].clone()
    changed[0, 12] += 5.0
    b, _ = m({"sensor": changed}, "anomaly")
    torch.testing.assert_close(a["score"][:, :12], b["score"][:, :12])
    assert not torch.allclose(a["score"][:, 12], b["score"][:, 12])


@pytest.mark.parametrize("modality", ["text", "image", "audio"])
def test_each_modality_changes_the_output_and_respects_its_mask(modality):
    m = make(image_channels=1)
    inputs = sensor_inputs()
    base, _ = m(inputs, "classification")
    extra = {
        "text": {"text": torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0], [3, 0, 0, 0]])},
        "image": {"image": torch.randn(B, 2, 16, 16), "image_mask": torch.tensor([[1, 1], [1, 0], [1, 0]]).bool()},
        "audio": {"audio": torch.randn(B, 800), "audio_lengths": torch.tensor([800, 400, 200])},
    }[modality]
    out, _ = m({**inputs, **extra}, "classification")
    assert out["logits"].shape == (B, 4)
    assert not torch.allclose(out["logits"], base["logits"])
    # Content behind a modality's padding must not matter.
    noisy = {k: v.clone() for k, v in extra.items()}
    if modality == "text":
        noisy["text"][1, 2:] = 0  # already padding: same ids
        noisy["text"][2, 1:] = 0
    elif modality == "image":
        noisy["image"][1:, 1] = torch.randn(2, 16, 16) * 10
    else:
        noisy["audio"][2, 300:] = torch.randn(500) * 10
    out2, _ = m({**inputs, **noisy}, "classification")
    torch.testing.assert_close(out["logits"], out2["logits"], atol=1e-5, rtol=1e-5)


def test_timestamps_are_used_when_configured():
    m = make(use_timestamps=True, timestamp_scale=1.0)
    inputs = sensor_inputs()
    ts = torch.arange(T, dtype=torch.float32).repeat(B, 1)
    a, _ = m({**inputs, "timestamps": ts}, "regression")
    b, _ = m({**inputs, "timestamps": ts * 3}, "regression")
    assert not torch.allclose(a["value"], b["value"])


def test_head_expansion_keeps_old_logits():
    m = make()
    inputs = sensor_inputs()
    before, _ = m(inputs, "classification")
    m.expand_classes(3)
    after, _ = m(inputs, "classification")
    assert after["logits"].shape == (B, 7) and m.cfg.n_classes == 7
    torch.testing.assert_close(after["logits"][:, :4], before["logits"])
    # From an empty head, as a first class-incremental experience starts.
    torch.manual_seed(0)
    empty = TimeSeriesTransformer(ModelConfig(n_channels=C, d_model=16, n_layers=1, n_heads=2, d_ff=32))
    assert empty(inputs, "classification")[0]["logits"].shape == (B, 0)
    empty.expand_classes(2)
    assert empty(inputs, "classification")[0]["logits"].shape == (B, 2)
