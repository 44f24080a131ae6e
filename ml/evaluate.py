"""``python -m ml.evaluate``: metrics of a checkpoint on a data set, written as JSON.

    python -m ml.evaluate --checkpoint /tmp/x --data aeon:BasicMotions:test --out /tmp/x/eval.json

classification: accuracy, macro_f1, confusion; regression and forecasting: mae, rmse;
anomaly: precision, recall, f1 (point-adjusted; point-wise ones under "point_wise").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ml._cli import run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ml.evaluate", description="Evaluate a checkpoint on a data set.")
    p.add_argument("--checkpoint", required=True, type=Path, help="checkpoint directory")
    p.add_argument("--data", required=True, help="aeon:NAME[:train|test], tp://NAME@REF, or a .npz/.csv/.parquet file")
    p.add_argument("--out", required=True, type=Path, help="metrics JSON file to write")
    p.add_argument("--task", help="fail unless the checkpoint was trained for this task")
    p.add_argument("--season", type=int, help="forecasting: also report the seasonal-naive MAE with this period")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ml.checkpoint import atomic_write_json, load_checkpoint
    from ml.continual.trainer import pick_device
    from ml.data import load_ref
    from ml.metrics import evaluate
    from ml.exceptions import CheckpointError

    ckpt = load_checkpoint(args.checkpoint, device=pick_device())
    if args.task and args.task != ckpt.task:
        raise CheckpointError(f"checkpoint {args.checkpoint} was trained for task {ckpt.task!r}, not {args.task!r}")
    data = load_ref(args.data)
    metrics = evaluate(ckpt, data, season=args.season)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, metrics)
    headline = {k: metrics[k] for k in ("accuracy", "macro_f1", "mae", "rmse", "precision", "recall", "f1") if k in metrics}
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
