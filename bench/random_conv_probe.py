"""Probe: ``ml.random_conv`` features + ridge head alone, against aeon's MiniRocket, on the
quality benchmark's five classification data sets (same splits, same process, same threads).

It measures what the component reaches by itself, without the Transformer that ``ml.model``
trains beside it (``bench/quality.py`` measures the whole model). Our side reads ragged series with their padding
mask, globally normalised with the training split's per-channel mean and standard deviation
(``ml.normalization``); MiniRocket gets every series padded to the longest length by repeating
its last value, as in ``bench/quality.py``.

    TP_TORCH_THREADS=1 .venv/bin/python bench/random_conv_probe.py   # writes bench/results/random_conv_probe.json
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ml.data import load_ref  # noqa: E402
from ml.normalization import Normalization  # noqa: E402
from ml.random_conv import RandomConvFeatures, RidgeHead, dilations_for  # noqa: E402

DATASETS = ("ArrowHead", "OSULeaf", "ACSF1", "BasicMotions", "JapaneseVowels")
RESULTS = ROOT / "bench" / "results" / "random_conv_probe.json"


def padded(series, norm: Normalization):
    t = max(len(x) for x in series)
    x = np.zeros((len(series), t, len(norm.mean)), dtype=np.float32)
    m = np.zeros((len(series), t), dtype=bool)
    for i, s in enumerate(series):
        x[i, : len(s)] = (np.asarray(s, dtype=np.float32) - norm.mean) / norm.std
        m[i, : len(s)] = True
    return torch.from_numpy(x), torch.from_numpy(m)


def features(f: RandomConvFeatures, x, m, chunk: int = 64):
    return torch.cat([f(x[i : i + chunk], m[i : i + chunk]) for i in range(0, len(x), chunk)])


def ours(train, test, seed: int) -> dict:
    t0 = time.monotonic()
    norm = Normalization.fit(train.series)
    x, m = padded(train.series, norm)
    f = RandomConvFeatures(train.n_channels, dilations_for(max(len(s) for s in train.series)), 9996, seed=seed)
    f.fit(x, m, seed=seed)
    classes = sorted(set(train.labels))
    index = {c: i for i, c in enumerate(classes)}
    y = -torch.ones(len(x), len(classes))
    y[torch.arange(len(x)), torch.tensor([index[c] for c in train.labels])] = 1
    head = RidgeHead(f.n_features, len(classes))
    head.fit(features(f, x, m), y)
    fit_s = time.monotonic() - t0
    xt, mt = padded(test.series, norm)
    pred = head(features(f, xt, mt)).argmax(1).numpy()
    acc = float(np.mean([classes[p] == lab for p, lab in zip(pred, test.labels)]))
    return {"accuracy": acc, "train_seconds": round(fit_s, 1), "ridge_alpha": head.alpha,
            "n_features": f.n_features, "n_dilations": len(f.dilations),
            "config": f"RandomConvFeatures(~9996 features, seed={seed}) + RidgeHead (LOO over 10 alphas 1e-3..1e3)"}


def minirocket(train, test, seed: int, threads: int) -> dict:
    from aeon.classification.convolution_based import MiniRocketClassifier
    from quality import panel  # bench/quality.py: the same padding MiniRocket gets there

    length = max(max(len(s) for s in train.series), max(len(s) for s in test.series))
    model = MiniRocketClassifier(n_jobs=threads, random_state=seed)
    t0 = time.monotonic()
    model.fit(panel(train, length), np.asarray(train.labels))
    fit_s = time.monotonic() - t0
    acc = float(np.mean(model.predict(panel(test, length)) == np.asarray(test.labels)))
    return {"accuracy": acc, "train_seconds": round(fit_s, 1),
            "config": f"aeon MiniRocketClassifier defaults, n_jobs={threads}, random_state={seed}"}


def main() -> int:
    warnings.filterwarnings("ignore")
    threads = int(os.environ.get("TP_TORCH_THREADS", "1"))
    torch.set_num_threads(threads)
    load_start = os.getloadavg()
    results = {}
    for name in DATASETS:
        train, test = load_ref(f"aeon:{name}:train"), load_ref(f"aeon:{name}:test")
        a, b = ours(train, test, 0), minirocket(train, test, 0, threads)
        results[name] = {"ours_component": a, "minirocket": b,
                         "accuracy_ratio": round(a["accuracy"] / b["accuracy"], 3)}
        print(name, json.dumps(results[name]), flush=True)
    out = {"machine": {"cpu_count": os.cpu_count(), "torch_threads": threads, "baseline_n_jobs": threads,
                       "load_average_at_start": load_start, "load_average_at_end": os.getloadavg(),
                       "torch": torch.__version__},
           "note": "ml.random_conv alone (not yet part of the model) against MiniRocket; accuracy is "
                   "deterministic, the seconds depend on the machine's load",
           "results": results}
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
