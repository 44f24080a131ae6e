"""``python -m ml.train``: train a model (initial, incremental or full) into a checkpoint dir.

    python -m ml.train --mode initial --task classification --data aeon:BasicMotions:train \\
        --epochs 1 --out /tmp/x
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ml._cli import run_cli
from ml.model import TASKS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ml.train", description=__doc__.splitlines()[0].strip("`"))
    p.add_argument("--mode", required=True, choices=["initial", "incremental", "full"],
                   help="initial: from scratch; incremental: continue --init on new data with the"
                        " continual plugins; full: retrain from scratch on all data")
    p.add_argument("--task", required=True, choices=list(TASKS))
    p.add_argument("--data", required=True, help="aeon:NAME[:train|test], tp://NAME@REF, or a .npz/.csv/.parquet file")
    p.add_argument("--init", type=Path, help="checkpoint directory to continue from (incremental) or take the label order from (full)")
    p.add_argument("--out", required=True, type=Path, help="output checkpoint directory")
    p.add_argument("--epochs", type=int, help="overrides the config's epochs")
    p.add_argument("--config", help="training config file (JSON or YAML); see ml/config.py")
    p.add_argument("--set", dest="overrides", metavar="JSON",
                   help='config values over the file\'s, as a JSON object (e.g. \'{"lr": 0.001}\'): how'
                        " pipeline parameters reach a task's container without a file")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--seed", type=int, help="overrides the config's seed")
    return p


def _json_overrides(text: str | None) -> dict:
    from ml.exceptions import ConfigError

    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--set: not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise ConfigError(f"--set: expected a JSON object, got {type(value).__name__}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ml.config import load_config
    from ml.training_run import TrainRequest, run

    overrides = _json_overrides(args.overrides)
    cfg = load_config(args.config, {**overrides, "seed": args.seed})
    result = run(TrainRequest(mode=args.mode, task=args.task, data=args.data, out=args.out, init=args.init,
                              epochs=args.epochs, cfg=cfg, resume=args.resume))
    final = result.metrics.get("final", {})
    summary = " ".join(f"{k}={v:.4g}" for k, v in final.items() if isinstance(v, float))
    print(f"checkpoint {result.checkpoint} ({summary})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
