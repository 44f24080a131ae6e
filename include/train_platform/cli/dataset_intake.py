"""``tp dataset intake-served NAME``: import the inference service's capture spool (keyed
predictions sampled at ``TP_SERVE_CAPTURE_RATE``) into the dataset's ``intake`` branch.

The service imports its spool itself unless it runs with ``TP_SERVE_CAPTURE_IMPORT=command``;
either way this command can run at any time, on the machine (or volume) that holds the
spool: each spool file is imported exactly once, whoever imports it
(``train_platform.datasets.served``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``intake-served`` to the ``tp dataset`` sub-commands."""
    p = commands.add_parser(
        "intake-served", help="import the inference service's captured predictions into NAME@intake",
        description="Import the capture spool of the inference service (TP_SERVE_CAPTURE_*) into the "
                    "dataset's intake branch as pre-labelled samples; each spool file exactly once.",
    )
    p.add_argument("name", metavar="NAME", help="the dataset (TP_SERVE_CAPTURE_DATASET of the service)")
    p.add_argument("--spool", type=Path, default=None, metavar="DIR",
                   help="the spool directory (default: TP_HOME/serving/capture/NAME)")
    p.add_argument("--as", dest="user", metavar="USER",
                   help="act as USER (platform-admins only; default: the OS user, or TP_USER for an admin)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_intake_served)


def cmd_intake_served(args: argparse.Namespace) -> int:
    from train_platform.cli.dataset import acting_user
    from train_platform.datasets.dataset import open_dataset
    from train_platform.datasets.exceptions import DatasetError
    from train_platform.datasets.served import import_spool, spool_dir

    dataset = open_dataset(args.name, user=acting_user(args))
    directory = args.spool if args.spool is not None else spool_dir(dataset.settings.home, dataset.name)
    if args.spool is not None and not directory.is_dir():
        error = DatasetError(f"--spool {directory}: no such directory")
        error.exit_code = 2
        raise error
    result = import_spool(dataset, directory)
    if args.json:
        json.dump(result.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"{dataset.name}@{result.branch}: {result.imported} sample(s) imported from {result.files} spool "
              f"file(s) of {directory}; {result.duplicates} already there, {result.skipped} unreadable, "
              f"{result.busy} held by another import"
              + (f"; snapshot {result.snapshot_id}" if result.snapshot_id is not None else ""))
    return 0
