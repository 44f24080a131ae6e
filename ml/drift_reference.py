"""The training data's reference histograms for input drift, stored in the checkpoint as
``drift_reference``; ``ml.serving.drift`` counts served inputs into the same buckets."""

from __future__ import annotations

import numpy as np

DRIFT_BINS = 10  # PSI is conventionally computed over ten quantile buckets


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
