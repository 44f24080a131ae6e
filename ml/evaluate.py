"""``python -m ml.evaluate``: metrics of a checkpoint on a data set, written as JSON.

    python -m ml.evaluate --checkpoint /tmp/x --data aeon:BasicMotions:test --out /tmp/x/eval.json \
        [--baseline model:sensor-classifier:production]

classification: accuracy, macro_f1, confusion, per-class n/correct/accuracy/precision/f1 and
the classes the model knows; regression and forecasting: mae, rmse; anomaly: precision,
recall, f1 (point-adjusted; point-wise ones under "point_wise").

``--baseline`` (a model reference or a checkpoint folder) is measured too, on the same data
loaded once, under ``"baseline"``; a reference that points at no version yet (the first run
of a pipeline) gives ``"baseline": null`` and says why in ``"baseline_missing"``. ``"data"``
records what was evaluated: the ref, the number of samples and a sha256 of their ids,
labels and values. This command only measures; whether the candidate may be deployed is the
registry's evaluation gate (``train_platform.registry.gate``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ml._cli import run_cli

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ml.evaluate", description="Evaluate a checkpoint on a data set.")
    p.add_argument("--checkpoint", required=True, type=Path, help="checkpoint directory")
    p.add_argument("--data", required=True, help="aeon:NAME[:train|test], tp://NAME@REF, or a .npz/.csv/.parquet file")
    p.add_argument("--out", required=True, type=Path, help="metrics JSON file to write")
    p.add_argument("--task", help="fail unless the checkpoint was trained for this task")
    p.add_argument("--season", type=int, help="forecasting: also report the seasonal-naive MAE with this period")
    p.add_argument("--baseline", help="also measure this version on the same data: model:NAME:ALIAS|vN or a "
                                      "checkpoint directory (the version in production, for the evaluation gate)")
    return p


def data_identity(data: Any) -> dict[str, Any]:
    """What was evaluated, so that two evaluations can be told to be on the same samples:
    the ref, the number of samples and a sha256 over their ids, labels and values."""
    digest = hashlib.sha256()
    for index, series in enumerate(data.series):
        digest.update(str(data.ids[index]).encode() + b"\0")
        label = data.labels[index] if data.labels is not None else None
        digest.update(("" if label is None else str(label)).encode() + b"\0")
        digest.update(str(series.shape).encode() + series.tobytes())
        if data.point_labels is not None:
            digest.update(data.point_labels[index].tobytes())
    return {"ref": data.ref, "samples": len(data.series), "sha256": digest.hexdigest()}


def _baseline_checkpoint(ref: str) -> tuple[Path | None, dict[str, Any]]:
    """The baseline's checkpoint folder and what identifies it; no folder when a model
    reference points at no version yet."""
    from train_platform.registry import AliasNotSetError, ModelNotFoundError, ModelRef, resolve

    if not ModelRef.is_ref(ref):
        return Path(ref), {"ref": ref, "version": None}
    parsed = ModelRef.parse(ref)
    try:
        found = resolve(parsed)
    except (ModelNotFoundError, AliasNotSetError) as exc:
        return None, {"ref": ref, "missing": str(exc)}
    return found.checkpoint, {"ref": str(parsed), "version": found.version.version}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ml.checkpoint import atomic_write_json, load_checkpoint
    from ml.continual.trainer import pick_device
    from ml.data import load_ref
    from ml.exceptions import CheckpointError
    from ml.metrics import evaluate

    device = pick_device()
    ckpt = load_checkpoint(args.checkpoint, device=device)
    if args.task and args.task != ckpt.task:
        raise CheckpointError(f"checkpoint {args.checkpoint} was trained for task {ckpt.task!r}, not {args.task!r}")
    baseline_dir, baseline_id = (None, {}) if args.baseline is None else _baseline_checkpoint(args.baseline)
    baseline = load_checkpoint(baseline_dir, device=device) if baseline_dir is not None else None
    data = load_ref(args.data)
    metrics = evaluate(ckpt, data, season=args.season)
    metrics["data"] = data_identity(data)
    if args.baseline is not None:
        if baseline is None:
            metrics["baseline"] = None
            metrics["baseline_missing"] = baseline_id["missing"]
            log.info("no baseline to compare with: %s", baseline_id["missing"])
        else:
            measured = evaluate(baseline, data, season=args.season)
            metrics["baseline"] = {**measured, **baseline_id}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, metrics)
    keys = ("accuracy", "macro_f1", "mae", "rmse", "precision", "recall", "f1")
    headline = {k: metrics[k] for k in keys if k in metrics}
    if metrics.get("baseline"):
        headline["baseline"] = {"ref": metrics["baseline"]["ref"], "version": metrics["baseline"]["version"],
                                **{k: metrics["baseline"][k] for k in keys if k in metrics["baseline"]}}
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
