"""Quality of the model on real data shipped inside aeon, with the default training config
(only the number of epochs is set per dataset).

- JapaneseVowels (9 classes, 12 channels, ragged lengths): accuracy, target >= 0.97
- BasicMotions (4 classes, 6 channels): accuracy, target >= 0.95
- Airline (monthly passengers): forecasting 12 months from 36, MAE on the last 20% of the
  series against the seasonal-naive forecast (same windows), target: below it
- KDD-TSAD 135 (InternalBleeding16): anomaly detection trained on the normal-only prefix,
  point-adjusted F1 and where the top score falls relative to the labelled anomaly

    .venv/bin/python bench/quality.py          # writes bench/results/quality.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from ml.checkpoint import load_checkpoint  # noqa: E402
from ml.config import TrainConfig  # noqa: E402
from ml.data import load_ref  # noqa: E402
from ml.metrics import evaluate  # noqa: E402
from ml.training_run import TrainRequest, run  # noqa: E402

log = logging.getLogger("bench.quality")

RESULTS = ROOT / "bench" / "results" / "quality.json"

CASES = {
    "JapaneseVowels": {"task": "classification", "epochs": 30, "metric": "accuracy", "target": 0.97},
    "BasicMotions": {"task": "classification", "epochs": 30, "metric": "accuracy", "target": 0.95},
    "Airline": {"task": "forecasting", "epochs": 100, "metric": "mae", "season": 12},
    "KDD-TSAD_135": {"task": "anomaly", "epochs": 20, "metric": "f1"},
}


def run_case(name: str, case: dict, workdir: Path, seed: int) -> dict:
    cfg = TrainConfig(epochs=case["epochs"], seed=seed, log_every=0)
    t0 = time.monotonic()
    result = run(TrainRequest(mode="initial", task=case["task"], data=f"aeon:{name}:train", out=workdir / name,
                              cfg=cfg, write_plot=False))
    train_s = time.monotonic() - t0
    ckpt = load_checkpoint(result.checkpoint)
    metrics = evaluate(ckpt, load_ref(f"aeon:{name}:test"), season=case.get("season"))
    metrics.pop("checkpoint", None)
    out = {"task": case["task"], "train_ref": f"aeon:{name}:train", "test_ref": f"aeon:{name}:test",
           "epochs": case["epochs"], "train_seconds": round(train_s, 1),
           "samples_processed": result.metrics["samples_processed"], "metrics": metrics}
    if case["task"] == "classification":
        out["target"] = {"accuracy_at_least": case["target"], "met": metrics["accuracy"] >= case["target"]}
    elif case["task"] == "forecasting":
        out["target"] = {"mae_below_seasonal_naive": metrics["seasonal_naive_mae"],
                         "met": metrics["mae"] < metrics["seasonal_naive_mae"]}
    else:
        top = metrics["top_score"][0]
        out["target"] = {"labelled_anomaly_found": top["top_within_100"], "met": top["top_within_100"]}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("ml").setLevel(logging.WARNING)
    threads = int(os.environ.get("TP_TORCH_THREADS", "1"))
    torch.set_num_threads(threads)
    results = {}
    with tempfile.TemporaryDirectory(prefix="tp-quality-") as tmp:
        for name in args.cases:
            results[name] = run_case(name, CASES[name], Path(tmp), args.seed)
            r = results[name]
            log.info("%s: %s=%.4f target met: %s (%.1fs)", name, CASES[name]["metric"],
                     r["metrics"][CASES[name]["metric"]], r["target"]["met"], r["train_seconds"])
    payload = {"machine": {"device": "cuda" if torch.cuda.is_available() else "cpu", "torch_threads": threads,
                           "cpu_count": os.cpu_count(), "python": platform.python_version(),
                           "torch": torch.__version__},
               "seed": args.seed, "results": results}
    text = json.dumps(payload, indent=2) + "\n"
    if not args.no_save and set(args.cases) == set(CASES):
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
