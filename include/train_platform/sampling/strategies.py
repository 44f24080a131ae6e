"""Active-learning strategies on a model's scores, as NumPy arrays.

Every scoring function takes class probabilities ``(N, K)`` (``bald``: MC-dropout passes
``(S, N, K)``) and returns one score per sample, higher meaning more worth a person's label:

- ``least_confidence``: 1 - max_k p_k
- ``margin``: 1 - (p_top1 - p_top2), so a small margin scores high
- ``entropy``: -sum_k p_k log p_k (natural log)
- ``bald``: the mutual information between the label and the model's weights, estimated
  from MC-dropout passes (Houlsby et al. 2011; Gal et al. 2017):
  H(mean_s p_s) - mean_s H(p_s)

``badge`` picks a batch that is uncertain and diverse at once (Ash et al. 2020, BADGE): each
sample's gradient embedding is g = (p - onehot(argmax p)) ⊗ e, the gradient of the
cross-entropy at the predicted label with respect to the last layer's weights, whose length
grows with the model's uncertainty and whose direction follows the pooled embedding e;
k-means++ seeding on the g's then picks samples far from those already picked.

Why these are written here rather than called from scikit-activeml (whose
``uncertainty_scores``, ``batch_bald`` and ``Badge`` compute the same quantities): importing
``skactiveml.pool`` imports torch whenever torch is installed (its classifier wrappers try
``import torch`` at import time, and blocking that import breaks SciPy's array-API checks),
and this core room never imports torch. The tests check these functions against
scikit-activeml's. BADGE has a second reason: ``skactiveml.pool.Badge`` materialises the
(N, K·D) gradient embeddings (about 0.5 GB for 100,000 samples, 10 classes, 64 dimensions)
and needs a fitted scikit-activeml classifier; here the distances come from the identity
|g_i - g_j|^2 = |a_i|^2 |e_i|^2 + |a_j|^2 |e_j|^2 - 2 (a_i·a_j)(e_i·e_j), with a = p - onehot,
at O(N (K + D)) per pick and without that matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Probabilities are clipped here before a log: a 0 contributes 0 to an entropy either way.
_EPS = 1e-12


def least_confidence(probabilities: np.ndarray) -> np.ndarray:
    return 1.0 - probabilities.max(axis=1)


def margin(probabilities: np.ndarray) -> np.ndarray:
    if probabilities.shape[1] < 2:
        return np.zeros(len(probabilities))
    top2 = -np.partition(-probabilities, 1, axis=1)[:, :2]
    return 1.0 - (top2[:, 0] - top2[:, 1])


def _entropy(probabilities: np.ndarray) -> np.ndarray:
    return -(probabilities * np.log(np.clip(probabilities, _EPS, 1.0))).sum(axis=-1)


def entropy(probabilities: np.ndarray) -> np.ndarray:
    return _entropy(probabilities)


def bald(mc_probabilities: np.ndarray) -> np.ndarray:
    """Mutual information from ``(S, N, K)`` MC-dropout probabilities; 0 when every pass
    agrees, high when the passes are each confident but disagree."""
    mean = mc_probabilities.mean(axis=0)
    return np.maximum(_entropy(mean) - _entropy(mc_probabilities).mean(axis=0), 0.0)


def badge(
    probabilities: np.ndarray,
    embeddings: np.ndarray,
    n: int,
    *,
    allowed: np.ndarray,
    chosen: Sequence[int] = (),
    rng: np.random.Generator,
) -> tuple[list[int], list[float]]:
    """Pick ``n`` more rows among ``allowed`` (a boolean mask) by k-means++ seeding on
    gradient embeddings, continuing from the rows in ``chosen``. Returns the picks in order
    and each one's squared distance to the nearest earlier pick at the time it was picked
    (for the first pick of an empty batch: its squared gradient length).

    The first pick of an empty batch is the longest gradient (the most uncertain sample
    weighted by the size of its embedding); every later one is drawn with probability
    proportional to that squared distance, so picks spread out while uncertain regions
    keep the most weight."""
    p = np.asarray(probabilities, dtype=np.float32)
    # float32 products, by einsum rather than BLAS: one pick is two matrix-vector products
    # over the pool, bound by memory bandwidth, and a multi-threaded BLAS on a busy machine
    # made them several times slower than einsum's single loop.
    e = np.ascontiguousarray(embeddings, dtype=np.float32)
    a = p.copy()
    a[np.arange(len(a)), p.argmax(axis=1)] -= 1.0
    sq = np.einsum("ij,ij->i", a, a, dtype=np.float64) * np.einsum("ij,ij->i", e, e, dtype=np.float64)  # |g_i|^2
    open_rows = allowed.astype(np.float64)  # 1 where a row may still be picked
    open_rows[list(chosen)] = 0.0
    nearest = np.full(len(a), np.inf)

    def add_center(c: int) -> None:
        d2 = sq + sq[c] - 2.0 * np.einsum("ij,j->i", a, a[c]) * np.einsum("ij,j->i", e, e[c])
        np.minimum(nearest, np.maximum(d2, 0.0), out=nearest)
        open_rows[c] = 0.0

    for c in chosen:
        add_center(int(c))
    picks: list[int] = []
    gains: list[float] = []
    for _ in range(n):
        if not open_rows.any():
            break
        if np.isinf(nearest).all():
            # Nothing picked yet: the longest gradient, ties to the lowest row.
            pick = int(np.argmax(np.where(open_rows > 0, sq, -1.0)))
            gain = float(sq[pick])
        else:
            # Draw with probability proportional to the squared distance (k-means++).
            cumulative = np.cumsum(nearest * open_rows)
            total = cumulative[-1]
            if total > 0:
                pick = int(np.searchsorted(cumulative, rng.random() * total, side="right"))
            else:  # every open row coincides with a pick: any of them adds as little
                pick = int(rng.choice(np.flatnonzero(open_rows)))
            gain = float(nearest[pick])
        picks.append(pick)
        gains.append(gain)
        add_center(pick)
    return picks, gains


__all__ = ["badge", "bald", "entropy", "least_confidence", "margin"]
