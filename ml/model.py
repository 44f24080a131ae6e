"""The unified time-series Transformer, in one file.

Inputs are a dict of modalities. ``sensor`` (B, T, C) with its padding mask is required;
``text`` (token ids), ``image`` (frames) and ``audio`` (waveform) are optional. Each modality
has a small encoder producing ``d_model`` tokens plus a learned modality embedding; the token
sequences are joined and run through one pre-norm ``nn.TransformerEncoder``. Four heads read
the result: classification (expandable), regression, forecasting and anomaly scoring.
Classification and regression add a ridge head over fixed random-convolution features of
the sensor series (``ml.random_conv``), fitted in closed form by ``ml.training_run``.

``forward(inputs, task, targets=None) -> (outputs, loss)`` serves training and inference.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from ml.random_conv import RandomConvFeatures, RidgeHead

TASKS = ("classification", "regression", "forecasting", "anomaly")

# Index of each modality in the modality-embedding table.
MODALITIES = {"sensor": 0, "text": 1, "image": 2, "audio": 3}

TEXT_PAD_ID = 0  # text ids are UTF-8 bytes + 1, so 0 is free for padding


@dataclass
class ModelConfig:
    n_channels: int = 1  # sensor channels; fixed by the training data
    d_model: int = 64  # the datasets here hold hundreds of series: wider overfits and is slow on CPU
    n_layers: int = 2  # two layers already reach the quality targets on the aeon benchmarks
    n_heads: int = 4  # 16-dim heads: enough to attend to a few distinct temporal patterns
    d_ff: int = 128  # 2x d_model keeps the block small; 4x brought nothing on these datasets
    dropout: float = 0.1  # mild regularisation for small training sets
    max_len: int = 2048  # longest sensor sequence accepted (in steps); also sizes the position table
    sensor_kernel: int = 3  # causal conv embedding: one step alone carries too little signal
    # Classification and regression read the series through a convolutional stem and patch
    # tokens (ConvTran / PatchTST ideas): a few dilated residual convs see local shape at
    # every step, then each patch of ``patch_len`` steps is averaged into one token, so long
    # series (hundreds to thousands of steps) become at most about ``max_tokens`` tokens.
    conv_stem: bool = True
    stem_layers: int = 3  # dilations 1, 2, 4: a receptive field of about 50 steps with kernel 7
    stem_kernel: int = 7
    series_norm: bool = True  # also feed each series z-normalised by its own mean/std (UCR-style)
    patch_len: int = 0  # steps per token; 0 = chosen from the training data (see max_tokens)
    max_tokens: int = 64  # patch_len = ceil(longest training series / max_tokens)
    # Classification and regression also read fixed random dilated convolution features
    # (``ml.random_conv``) through a ridge head fitted in closed form before gradient training;
    # the Transformer's head adds to it. 0 features = Transformer only. The dilations are
    # chosen from the training data's longest series (empty = the feature bank is off).
    random_features: int = 9996
    random_dilations: list = field(default_factory=list)
    n_classes: int = 0  # grows with head expansion in class-incremental training
    n_targets: int = 1  # regression outputs per sample
    horizon: int = 12  # forecasting steps; 12 = one season of monthly data
    context_len: int = 36  # forecasting context; 3 seasons of monthly data
    instance_norm: bool = True  # forecasting: normalise each window (level shifts, trends)
    linear_skip: bool = True  # forecasting: a linear map context -> horizon beside the encoder
    # Forecasting: the linear skip starts as the seasonal-naive forecast of this period (1 = the
    # last value) and the encoder's head at zero, so training starts from the classical floor
    # baseline and learns what to add. 0 = no such start; training picks it from the data.
    forecast_season: int = 0
    use_timestamps: bool = False  # add an encoding of real timestamps to sensor tokens
    timestamp_scale: float = 1.0  # seconds per unit of the timestamp encoding's base period
    text_vocab: int = 257  # UTF-8 bytes + padding id: no tokenizer files to ship
    max_text_len: int = 256  # longer texts are rejected by input validation
    image_channels: int = 1  # grayscale frames unless configured otherwise
    max_frames: int = 16  # images per sample
    max_audio_len: int = 32000  # 2 s at 16 kHz; audio is downsampled 32x into tokens

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)


class SensorEncoder(nn.Module):
    """(B, T, C) -> (B, T, d). A left-padded conv so token t never sees step t+1, which the
    anomaly head relies on (it predicts the next step)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.kernel = cfg.sensor_kernel
        self.conv = nn.Conv1d(cfg.n_channels, cfg.d_model, cfg.sensor_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)  # (B, C, T)
        x = F.pad(x, (self.kernel - 1, 0))
        return self.conv(x).transpose(1, 2)  # (B, T, d)


class ConvStem(nn.Module):
    """(B, T, C) + valid mask (B, T) -> patch tokens (B, N, d) + their mask (B, N).

    Input channels: the globally normalised series and, with ``series_norm``, the same series
    z-normalised per sample and channel over its valid steps (shape without level and scale,
    which is what most UCR/UEA classes differ in). Residual blocks LayerNorm -> GELU ->
    dilated depthwise-separable conv work per step; padded steps are zeroed after every block, and a patch's
    token is the mean of its valid steps only, so padding never leaks into a token."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, k = cfg.d_model, cfg.stem_kernel
        c_in = cfg.n_channels * (2 if cfg.series_norm else 1)
        self.series_norm = cfg.series_norm
        self.patch = max(1, cfg.patch_len)
        self.inp = nn.Conv1d(c_in, d, k, padding=k // 2)
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(cfg.stem_layers))
        # Depthwise-separable (a dilated per-channel conv, then a 1x1 mix): about 6x cheaper
        # than a full conv at every step, which is what bounds training time on a CPU.
        self.convs = nn.ModuleList(
            nn.Sequential(nn.Conv1d(d, d, k, padding=(k // 2) * 2**i, dilation=2**i, groups=d), nn.Conv1d(d, d, 1))
            for i in range(cfg.stem_layers)
        )
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, valid: torch.Tensor):
        m = valid.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        x = x * m
        if self.series_norm:
            n = m.sum(1, keepdim=True).clamp(min=1.0)
            mu = x.sum(1, keepdim=True) / n
            var = ((x - mu) * m).pow(2).sum(1, keepdim=True) / n
            x = torch.cat([x, (x - mu) / (var + 1e-5).sqrt() * m], dim=-1)
        mt = m.transpose(1, 2)  # (B, 1, T)
        h = self.inp(x.transpose(1, 2)) * mt  # (B, d, T)
        for norm, conv in zip(self.norms, self.convs):
            h = h + conv(F.gelu(norm(h.transpose(1, 2)).transpose(1, 2))) * mt
        p = self.patch
        pad = (-h.shape[-1]) % p
        h, mt = F.pad(h, (0, pad)), F.pad(mt, (0, pad))
        b, d, t = h.shape
        total = h.view(b, d, t // p, p).sum(-1)
        count = mt.view(b, 1, t // p, p).sum(-1)  # (B, 1, N)
        tok = (total / count.clamp(min=1.0)).transpose(1, 2)  # (B, N, d)
        return self.out(tok), count[:, 0] > 0


class TimestampEncoding(nn.Module):
    """Sinusoids of the time since the first step at geometric periods, projected to d."""

    def __init__(self, cfg: ModelConfig, n_freq: int = 8):
        super().__init__()
        periods = cfg.timestamp_scale * (4.0 ** torch.arange(n_freq, dtype=torch.float32))
        self.register_buffer("omega", 2 * math.pi / periods, persistent=False)
        self.proj = nn.Linear(2 * n_freq, cfg.d_model)

    def forward(self, ts: torch.Tensor) -> torch.Tensor:
        t = (ts - ts[:, :1]).unsqueeze(-1) * self.omega  # (B, T, n_freq)
        return self.proj(torch.cat([t.sin(), t.cos()], dim=-1))  # (B, T, d)


class ImageEncoder(nn.Module):
    """(B, F, [ch,] H, W) frames -> (B, F, d): a two-layer CNN per frame, globally pooled."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.channels = cfg.image_channels
        self.net = nn.Sequential(
            nn.Conv2d(cfg.image_channels, 16, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.proj = nn.Linear(32, cfg.d_model)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.dim() == 4:  # grayscale without a channel axis
            img = img.unsqueeze(2)
        b, f = img.shape[:2]
        h = self.net(img.flatten(0, 1)).flatten(1)  # (B*F, 32)
        return self.proj(h).view(b, f, -1)  # (B, F, d)


class AudioEncoder(nn.Module):
    """(B, L) waveform -> (B, L', d) with two strided convs (32x downsampling)."""

    STRIDES = ((16, 8), (8, 4))  # (kernel, stride) pairs

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        (k1, s1), (k2, s2) = self.STRIDES
        self.net = nn.Sequential(
            nn.Conv1d(1, 32, k1, stride=s1), nn.GELU(), nn.Conv1d(32, cfg.d_model, k2, stride=s2)
        )

    @classmethod
    def n_tokens(cls, length: torch.Tensor) -> torch.Tensor:
        for k, s in cls.STRIDES:
            length = torch.div(length - k, s, rounding_mode="floor") + 1
        return length.clamp(min=0)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.net(wav.unsqueeze(1)).transpose(1, 2)  # (B, L', d)


class ClassifierHead(nn.Module):
    """A linear head whose rows are classes. ``expand`` appends rows and copies the old ones,
    so the logits of old classes do not change when classes are added."""

    def __init__(self, d_model: int, n_classes: int):
        super().__init__()
        self.linear = nn.Linear(d_model, max(n_classes, 1))
        self.n_classes = n_classes

    def expand(self, n_new: int) -> None:
        old = self.linear
        new = nn.Linear(old.in_features, self.n_classes + n_new).to(old.weight.device)
        with torch.no_grad():
            new.weight[: self.n_classes] = old.weight[: self.n_classes]
            new.bias[: self.n_classes] = old.bias[: self.n_classes]
        self.linear = new
        self.n_classes += n_new

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(h)[:, : self.n_classes]


class TimeSeriesTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.sensor = SensorEncoder(cfg)
        self.text = nn.Embedding(cfg.text_vocab, d, padding_idx=TEXT_PAD_ID)
        self.image = ImageEncoder(cfg)
        self.audio = AudioEncoder(cfg)
        self.timestamps = TimestampEncoding(cfg) if cfg.use_timestamps else None
        n_pos = max(cfg.max_len, cfg.max_text_len, cfg.max_frames, int(AudioEncoder.n_tokens(torch.tensor(cfg.max_audio_len))))
        self.position = nn.Embedding(n_pos, d)
        self.modality = nn.Embedding(len(MODALITIES), d)
        self.drop = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(
            d, cfg.n_heads, cfg.d_ff, cfg.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.classifier = ClassifierHead(d, cfg.n_classes)
        self.regressor = nn.Linear(d, cfg.n_targets)
        self.forecaster = nn.Linear(2 * d, cfg.horizon * cfg.n_channels)
        self.forecast_skip = nn.Linear(cfg.context_len, cfg.horizon) if cfg.linear_skip else None
        self.next_step = nn.Linear(d, cfg.n_channels)
        # Small embedding init (as in GPT-2): N(0, 1) position vectors would swamp the
        # sensor tokens, whose scale comes from normalised inputs through one conv.
        for emb in (self.position, self.modality, self.text):
            nn.init.normal_(emb.weight, std=0.02)
        with torch.no_grad():
            self.text.weight[TEXT_PAD_ID].zero_()
        if self.forecast_skip is not None and 0 < cfg.forecast_season <= cfg.context_len:
            with torch.no_grad():
                self.forecast_skip.weight.zero_()
                self.forecast_skip.bias.zero_()
                h = torch.arange(cfg.horizon)
                self.forecast_skip.weight[h, cfg.context_len - cfg.forecast_season + h % cfg.forecast_season] = 1.0
                self.forecaster.weight.zero_()
                self.forecaster.bias.zero_()
        # Built last, so the other modules' initial weights do not depend on the stem.
        self.stem = ConvStem(cfg) if cfg.conv_stem else None
        self.random_features = None
        if cfg.random_features and cfg.random_dilations:
            # Buffers drawn from numpy's generator: torch's stream (and so every other
            # module's initial weights) is the same with or without them.
            self.random_features = RandomConvFeatures(cfg.n_channels, cfg.random_dilations, cfg.random_features)
            n = self.random_features.n_features
            self.ridge_classifier = RidgeHead(n, cfg.n_classes)
            self.ridge_regressor = RidgeHead(n, cfg.n_targets)
            self.ridge_scale = nn.Parameter(torch.ones(()))
            # The ridge part decides at first; the Transformer's head learns what it adds.
            with torch.no_grad():
                for lin in (self.classifier.linear, self.regressor):
                    lin.weight.zero_()
                    lin.bias.zero_()

    # ---- building the token sequence -------------------------------------------------------
    def _tokens(self, inputs: dict[str, torch.Tensor], causal: bool, patched: bool = False):
        """Join every present modality into (B, L, d) tokens, a key-padding mask (True = pad)
        and, for causal scoring, an attention mask (True = blocked). ``patched``: sensor
        tokens come from the convolutional stem, one per patch (classification, regression)."""
        x = inputs["sensor"]
        b, t, _ = x.shape
        dev = x.device
        valid = inputs.get("sensor_mask")
        valid = torch.ones(b, t, dtype=torch.bool, device=dev) if valid is None else valid.bool()
        if patched and self.stem is not None:
            tok, valid = self.stem(x, valid)
            t = tok.shape[1]
            tok = tok + self.position(torch.arange(t, device=dev))
            if self.timestamps is not None and "timestamps" in inputs:
                p = self.stem.patch
                ts = inputs["timestamps"].float()[:, ::p][:, :t]
                tok = tok + self.timestamps(ts)
        else:
            tok = self.sensor(x) + self.position(torch.arange(t, device=dev))
            if self.timestamps is not None and "timestamps" in inputs:
                tok = tok + self.timestamps(inputs["timestamps"].float())
        tok = tok + self.modality.weight[MODALITIES["sensor"]]
        parts, masks = [tok], [valid]
        for name in ("text", "image", "audio"):
            if inputs.get(name) is None:
                continue
            if name == "text":
                ids = inputs["text"].long()
                emb, m = self.text(ids), ids != TEXT_PAD_ID
            elif name == "image":
                emb = self.image(inputs["image"].float())
                m = inputs.get("image_mask")
                m = torch.ones(emb.shape[:2], dtype=torch.bool, device=dev) if m is None else m.bool()
            else:
                emb = self.audio(inputs["audio"].float())
                lengths = inputs.get("audio_lengths")
                if lengths is None:
                    m = torch.ones(emb.shape[:2], dtype=torch.bool, device=dev)
                else:
                    n = AudioEncoder.n_tokens(lengths.long())
                    m = torch.arange(emb.shape[1], device=dev)[None, :] < n[:, None]
            emb = emb + self.position(torch.arange(emb.shape[1], device=dev)) + self.modality.weight[MODALITIES[name]]
            parts.append(emb)
            masks.append(m)
        tokens = self.drop(torch.cat(parts, dim=1))  # (B, L, d)
        valid_all = torch.cat(masks, dim=1)  # (B, L)
        attn = None
        if causal:
            n = tokens.shape[1]
            attn = torch.zeros(n, n, dtype=torch.bool, device=dev)
            attn[:t, :t] = torch.triu(torch.ones(t, t, dtype=torch.bool, device=dev), diagonal=1)
            # Other modalities must not read sensor tokens, or they would carry step t+1
            # back to step t in the next layer.
            attn[t:, :t] = True
        return tokens, valid_all, attn, t

    def encode(self, inputs: dict[str, torch.Tensor], causal: bool = False, patched: bool = False):
        tokens, valid, attn, t = self._tokens(inputs, causal, patched)
        if causal and tokens.shape[1] == t:
            # Sensor tokens only: padding sits at the end, so under a causal mask no valid
            # step can see a padded one and the key-padding mask is redundant. Dropping it
            # lets attention take the fused causal kernel.
            h = self.encoder(tokens, mask=attn, is_causal=True)
        else:
            # An all-False padding mask changes nothing but sends attention down PyTorch's
            # slow masked-softmax path on CPU (about 60% of a serving forward pass): batches
            # of equal-length samples, the common case in serving, go without it.
            padding = None if bool(valid.all()) else ~valid
            h = self.encoder(tokens, mask=attn, src_key_padding_mask=padding)
        return self.norm(h), valid, t  # (B, L, d)

    @staticmethod
    def _pool(h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        w = valid.unsqueeze(-1).to(h.dtype)
        return (h * w).sum(1) / w.sum(1).clamp(min=1.0)  # (B, d)

    # ---- forward ---------------------------------------------------------------------------
    def forward(self, inputs: dict[str, torch.Tensor], task: str, targets: torch.Tensor | None = None,
                ridge_out: torch.Tensor | None = None):
        """``ridge_out``: the ridge head's outputs to use instead of computing them (in
        training, each example's leave-one-out prediction; see ``ml.continual.trainer``)."""
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
        if task == "forecasting":
            return self._forecast(inputs, targets)
        if task == "anomaly":
            return self._anomaly(inputs, targets)
        h, valid, _ = self.encode(inputs, patched=True)
        pooled = self._pool(h, valid)
        if task == "classification":
            logits = self.classifier(pooled)  # (B, K)
            ridge = self._ridge(inputs, "classification", ridge_out)
            if ridge is not None:
                logits = logits + self.ridge_scale * ridge[:, : logits.shape[1]]
            loss = None if targets is None else F.cross_entropy(logits.float(), targets.long())
            return {"logits": logits}, loss
        value = self.regressor(pooled)  # (B, n_targets)
        ridge = self._ridge(inputs, "regression", ridge_out)
        if ridge is not None:
            value = value + self.ridge_scale * ridge
        loss = None if targets is None else F.mse_loss(value.float(), targets.float().view_as(value))
        return {"value": value}, loss

    def ridge_head(self, task: str) -> RidgeHead | None:
        """The closed-form head of ``task`` (None without the random-feature bank)."""
        if self.random_features is None:
            return None
        return self.ridge_classifier if task == "classification" else self.ridge_regressor

    def ridge_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The random-convolution features of a batch (given in ``inputs`` when computed before)."""
        if inputs.get("random_features") is not None:
            return inputs["random_features"]
        x = inputs["sensor"]
        valid = inputs.get("sensor_mask")
        valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if valid is None else valid.bool()
        return self.random_features(x.float(), valid)

    def _ridge(self, inputs, task: str, ridge_out):
        head = self.ridge_head(task)
        if head is None or not bool(head.fitted):
            return None
        return ridge_out if ridge_out is not None else head(self.ridge_features(inputs))

    def _forecast(self, inputs, targets):
        cfg = self.cfg
        x = inputs["sensor"]  # (B, L, C), exactly context_len steps, no padding
        mu = sd = None
        if cfg.instance_norm:
            mu = x.mean(1, keepdim=True)
            sd = x.std(1, keepdim=True, unbiased=False).clamp(min=1e-3)
            x = (x - mu) / sd
        h, valid, t = self.encode({**inputs, "sensor": x})
        hs = h[:, :t]
        feat = torch.cat([hs[:, -1], self._pool(hs, valid[:, :t])], dim=-1)  # (B, 2d)
        y = self.forecaster(feat).view(x.shape[0], cfg.horizon, cfg.n_channels)  # (B, H, C)
        if self.forecast_skip is not None:
            y = y + self.forecast_skip(x.transpose(1, 2)).transpose(1, 2)
        loss = None
        if targets is not None:
            tgt = targets.float()
            if cfg.instance_norm:
                tgt = (tgt - mu) / sd  # loss in each window's own scale: no window dominates
            loss = F.mse_loss(y.float(), tgt)
        if cfg.instance_norm:
            y = y * sd + mu
        return {"forecast": y}, loss

    def _anomaly(self, inputs, targets):
        """Token t predicts step t+1; the score of step t is the squared error of that
        prediction, averaged over channels. Step 0 has no prediction and scores 0."""
        x = inputs["sensor"]
        h, valid, t = self.encode(inputs, causal=True)
        pred = self.next_step(h[:, : t - 1])  # (B, T-1, C): predictions of steps 1..T-1
        err = (pred.float() - x[:, 1:].float()).pow(2).mean(-1)  # (B, T-1)
        sensor_valid = valid[:, :t]
        step_valid = sensor_valid[:, 1:]
        err = err * step_valid
        score = torch.cat([torch.zeros_like(err[:, :1]), err], dim=1)  # (B, T)
        prediction = torch.cat([x[:, :1].float(), pred.float()], dim=1)  # (B, T, C)
        loss = None
        if targets is not None:
            loss = err.sum() / step_valid.sum().clamp(min=1)
        return {"score": score, "prediction": prediction}, loss

    def expand_classes(self, n_new: int) -> None:
        self.classifier.expand(n_new)
        if self.random_features is not None:
            self.ridge_classifier.grow(n_new)  # refitted with the new classes before training
        self.cfg.n_classes = self.classifier.n_classes
