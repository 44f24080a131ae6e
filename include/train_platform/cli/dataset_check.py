"""``tp dataset check NAME@REF``: the annotation check of one dataset snapshot.

Exit codes: 0 the check passed (score at least ``--min-score``), 1 it did not (or it could
not run to its end: an error line says why), 2 bad input (an unknown dataset, ref or model,
a ref holding no samples, an unusable ``--report`` folder: nothing is written), 5 the acting
user may not read the dataset. The check itself never writes to the dataset.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``check`` to the ``tp dataset`` sub-commands."""
    p = commands.add_parser(
        "check", help="annotation check: data expectations, likely wrong labels, annotator agreement, a score",
        description="Check the samples at NAME@REF (read only). Exit 0 passed, 1 below --min-score, 2 bad input.",
    )
    p.add_argument("name", metavar="NAME[@REF]", help="dataset and branch, tag or snapshot id (default main)")
    p.add_argument("--model", metavar="MODEL_REF",
                   help="judge labels with this model's predictions (model:NAME:ALIAS|vN); "
                        "default: a cross-validated classifier on summary statistics")
    p.add_argument("--min-score", type=float, default=None, metavar="F",
                   help="pass at this score or above (default 0.95)")
    p.add_argument("--report", type=Path, metavar="DIR",
                   help="write the HTML Data Docs (DIR/index.html) and check.json here")
    p.add_argument("--labels", metavar="A,B,...",
                   help="the dataset's label set (default: every label at least two samples carry)")
    p.add_argument("--min-length", type=int, metavar="N", help="fewest time steps (default: median length / 4)")
    p.add_argument("--max-length", type=int, metavar="N", help="most time steps (default: median length x 4)")
    p.add_argument("--channels", type=int, metavar="N", help="channel count (default: the most common one)")
    p.add_argument("--as", dest="user", metavar="USER", help="act as USER (platform-admin only; default: the OS user)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    from train_platform.cli.dataset import acting_user
    from train_platform.quality.check import DEFAULT_MIN_SCORE, CheckConfig, check_dataset

    labels = None
    if args.labels is not None:
        labels = tuple(label.strip() for label in args.labels.split(",") if label.strip())
    config = CheckConfig(
        model=args.model,
        min_score=DEFAULT_MIN_SCORE if args.min_score is None else args.min_score,
        labels=labels,
        min_length=args.min_length,
        max_length=args.max_length,
        channels=args.channels,
    )
    result = check_dataset(args.name, config, user=acting_user(args), report_dir=args.report)
    if args.json:
        json.dump(result.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(result.summary())
    return 0 if result.passed else 1
