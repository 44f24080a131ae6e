"""Random dilated convolution features and a ridge head fitted in closed form.

A bank of fixed convolution kernels in the manner of MiniRocket (Dempster et al., 2021):
the 84 length-9 kernels whose weights are two thirds -1 and one third 2, at dilations spread
exponentially up to the series' length, each with a few biases taken from quantiles of its
own output on training series; a feature is the proportion of positive values (PPV) of one
kernel, dilation and bias. ``RidgeHead`` is a ridge regression on such features with an
intercept, its penalty chosen by exact leave-one-out error, as scikit-learn's
``RidgeClassifierCV`` does.

``ml.model`` holds a bank of these features and a ridge head per task (classification and
regression); ``ml.training_run`` fits the ridge before gradient training and the
Transformer's head learns what it adds. ``bench/random_conv_probe.py``
(``bench/results/random_conv_probe.json``) measures features + ridge alone, on globally
normalised ragged series, against aeon's MiniRocket on the same splits: accuracy ratios
1.02 (ArrowHead), 0.978 (OSULeaf), 1.00 (ACSF1, BasicMotions), 1.006 (JapaneseVowels),
fitted in 0.2-2.3 s on one thread.

Written in torch rather than taken from aeon's ``MiniRocket`` so that it can live in the
model: buffers saved in the checkpoint, one forward pass that honours the padding mask of
ragged series (aeon's transform needs equal lengths), and a serving path that imports
neither aeon nor numba.
"""

from __future__ import annotations

import itertools
import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

KERNEL_LEN = 9
# The 84 kernels: every choice of 3 of the 9 taps gets weight 2, the other 6 get -1.
_KERNELS = np.full((84, KERNEL_LEN), -1.0, dtype=np.float32)
for _row, _taps in enumerate(itertools.combinations(range(KERNEL_LEN), 3)):
    _KERNELS[_row, list(_taps)] = 2.0
N_KERNELS = len(_KERNELS)
MAX_DILATIONS = 32
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-3, 3, 10))  # scikit-learn's usual grid for MiniRocket
_GOLDEN = (math.sqrt(5) - 1) / 2  # low-discrepancy quantiles, as MiniRocket uses


def dilations_for(length: int) -> list[int]:
    """Dilations spread exponentially so the widest kernel spans about the whole series."""
    top = max(0.0, math.log2(max(1, length - 1) / (KERNEL_LEN - 1)))
    d = np.unique(np.floor(2.0 ** np.linspace(0, top, MAX_DILATIONS)).astype(int))
    return [int(v) for v in d]


class RandomConvFeatures(nn.Module):
    """(B, T, C) + valid mask (B, T) -> PPV features (B, n_dilations * 84 * n_biases).

    Everything is a buffer: nothing here is trained by gradient. ``fit`` draws the channel
    subsets and the biases from training series; until then every bias is zero."""

    def __init__(self, n_channels: int, dilations: list[int], n_features: int, seed: int = 0):
        super().__init__()
        self.dilations = list(dilations)
        n_dil = max(1, len(self.dilations))
        self.n_biases = max(1, round(n_features / (N_KERNELS * n_dil)))
        self.n_features = N_KERNELS * n_dil * self.n_biases
        self.register_buffer("kernels", torch.from_numpy(_KERNELS).unsqueeze(1))  # (84, 1, 9)
        rng = np.random.default_rng(seed)
        masks = np.zeros((n_dil, N_KERNELS, n_channels), dtype=np.float32)
        top = math.log2(min(n_channels, KERNEL_LEN) + 1)
        for i in range(n_dil):  # MiniRocket's multivariate rule: a random channel subset per kernel
            for k in range(N_KERNELS):
                size = min(n_channels, int(2 ** rng.uniform(0, top)))
                masks[i, k, rng.choice(n_channels, size=size, replace=False)] = 1.0
        self.register_buffer("channel_masks", torch.from_numpy(masks))
        self.register_buffer("biases", torch.zeros(n_dil, N_KERNELS, self.n_biases))

    def _conv(self, x: torch.Tensor, valid: torch.Tensor, i: int):
        """Kernel outputs at dilation ``i`` (B, 84, T') and which of them are valid. Even
        dilation indices pad the series with zeros (same length); odd ones do not, so
        their outputs never read past either end, as in MiniRocket."""
        d = self.dilations[i]
        w = self.kernels * self.channel_masks[i].unsqueeze(-1)  # (84, C, 9)
        span = (KERNEL_LEN - 1) * d
        if i % 2 == 0:
            out = F.conv1d(x, w, padding=span // 2, dilation=d)
            ok = valid
        else:
            if x.shape[-1] <= span:
                return None, None
            out = F.conv1d(x, w, dilation=d)
            ok = valid[:, span:]  # output t reads steps t .. t + span
        return out, ok

    @torch.no_grad()
    def fit(self, x: torch.Tensor, valid: torch.Tensor, seed: int = 0) -> None:
        """Biases from the outputs of random training series: for every kernel and dilation,
        quantiles of its output on one series drawn at random."""
        rng = np.random.default_rng(seed)
        xt = x.transpose(1, 2)
        q = torch.tensor([((j + 1) * _GOLDEN) % 1 for j in range(self.n_biases)], dtype=torch.float32)
        for i in range(len(self.dilations)):
            picks = rng.integers(len(x), size=N_KERNELS)
            out, ok = self._conv(xt[picks], valid[picks], i)
            if out is None:
                continue
            for k in range(N_KERNELS):
                vals = out[k, k][ok[k]]
                if vals.numel():
                    self.biases[i, k] = torch.quantile(vals.float(), q.to(vals.device))

    @staticmethod
    def _count_above(out: torch.Tensor, biases: torch.Tensor) -> torch.Tensor:
        """How many of each kernel's outputs lie above each of its biases: (B, 84, T'),
        (84, n_biases) -> (B, 84, n_biases).

        On the CPU, one NumPy comparison per bias into a preallocated boolean array, summed
        along time as bytes: NumPy's comparisons cost about 0.3 ns per element here against
        2 ns for torch's, which made the whole forward pass about 4x faster than comparing a
        broadcast (B, 84, T', n_biases) tensor in torch. Elsewhere, that broadcast
        comparison, a few biases at a time."""
        b, k, _ = out.shape
        nb = biases.shape[-1]
        if out.device.type != "cpu":
            bias = biases.unsqueeze(0).unsqueeze(2)  # (1, 84, 1, n_biases)
            return torch.cat([(out.unsqueeze(-1) > bias[..., j : j + 8]).sum(2)
                              for j in range(0, nb, 8)], dim=-1)
        if out.dtype not in (torch.float32, torch.float64):  # NumPy has no bfloat16
            out, biases = out.float(), biases.float()
        o, thresholds = out.contiguous().numpy(), biases.to(out.dtype).contiguous().numpy()
        above = np.empty(o.shape, dtype=bool)
        counts = np.empty((b, k, nb), dtype=np.int32)
        for j in range(nb):
            np.greater(o, thresholds[:, j : j + 1], out=above)
            np.add.reduce(above.view(np.uint8), axis=-1, dtype=np.int32, out=counts[..., j])
        return torch.from_numpy(counts)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        xt = x.transpose(1, 2)  # (B, C, T)
        b = x.shape[0]
        feats = []
        for i in range(len(self.dilations)):
            out, ok = self._conv(xt, valid, i)
            if out is None:  # every series in the batch is shorter than this kernel's span
                feats.append(x.new_zeros(b, N_KERNELS * self.n_biases))
                continue
            if not bool(ok.all()):
                out = out.masked_fill(~ok.unsqueeze(1), float("-inf"))  # padding is never above a bias
            feats_i = self._count_above(out, self.biases[i])
            n = ok.sum(-1, keepdim=True).clamp(min=1).unsqueeze(1)  # (B, 1, 1)
            feats.append((feats_i.to(x.dtype) / n.to(x.dtype)).flatten(1))
        return torch.cat(feats, dim=1)


class RidgeHead(nn.Module):
    """A linear map from features to outputs, fitted in closed form: features scaled by their
    standard deviation, ridge with an intercept, the penalty the one of ``RIDGE_ALPHAS``
    with the smallest leave-one-out squared error (computed exactly from one SVD)."""

    def __init__(self, n_features: int, n_outputs: int):
        super().__init__()
        self.register_buffer("weight", torch.zeros(max(n_outputs, 1), n_features))
        self.register_buffer("bias", torch.zeros(max(n_outputs, 1)))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.alpha = None
        self.loo_predictions = None  # (N, K) after ``fit``; not saved

    @torch.no_grad()
    def fit(self, feats: torch.Tensor, targets: torch.Tensor) -> float:
        """``targets`` (N, K): +1/-1 per class for classification, values for regression."""
        x = feats.double()
        y = targets.double()
        scale = x.std(0, unbiased=False)
        scale = torch.where(scale < 1e-8, torch.ones_like(scale), scale)
        xs = x / scale
        xm, ym = xs.mean(0), y.mean(0)
        xc, yc = xs - xm, y - ym
        u, s, vt = torch.linalg.svd(xc, full_matrices=False)
        uty = u.T @ yc  # (r, K)
        s2 = s * s
        best = None
        n = len(x)
        for alpha in RIDGE_ALPHAS:
            shrink = s2 / (s2 + alpha)
            fitted = u @ (shrink.unsqueeze(1) * uty) + ym
            h = (u * u) @ shrink + 1.0 / n  # the hat matrix's diagonal, intercept included
            loo = (y - fitted) / (1 - h).clamp(min=1e-9).unsqueeze(1)
            err = float(loo.pow(2).mean())
            if best is None or err < best[0]:
                best = (err, alpha)
        self.alpha = best[1]
        shrink = s2 / (s2 + self.alpha)
        h = (u * u) @ shrink + 1.0 / n
        fitted = u @ (shrink.unsqueeze(1) * uty) + ym
        # Each row's prediction by the fit without that row: what the head would say of it
        # unseen (a trainer trains what is added to the head against these, not the fit's own).
        self.loo_predictions = (y - (y - fitted) / (1 - h).clamp(min=1e-9).unsqueeze(1)).float()
        coef = vt.T @ ((s / (s2 + self.alpha)).unsqueeze(1) * uty)  # (F, K) on scaled features
        self.weight.copy_((coef / scale.unsqueeze(1)).T.to(self.weight.dtype))
        self.bias.copy_((ym - xm @ coef).to(self.bias.dtype))  # (x/scale - xm) @ coef + ym
        self.fitted.fill_(True)
        return best[0]

    def grow(self, n_new: int) -> None:
        """Rows for new classes (zero until the next ``fit``)."""
        self.weight = torch.cat([self.weight, self.weight.new_zeros(n_new, self.weight.shape[1])])
        self.bias = torch.cat([self.bias, self.bias.new_zeros(n_new)])

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return feats @ self.weight.T + self.bias
