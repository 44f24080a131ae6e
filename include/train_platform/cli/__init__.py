"""The ``tp`` command line.

Each command group lives in its own module exposing ``register(subparsers)``; the module
adds its sub-commands, each with ``func`` set to a callable ``(args) -> int`` (the exit
code). Heavy libraries are imported inside those callables, never at registration.

Everything ``tp`` writes to stderr (its error line, log lines, the traceback of an
unexpected error) goes through ``settings.redact``, so no password or token from the
settings is printed. A reader that closes ``tp``'s output early (``tp ... | head``) ends the
command quietly with exit 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib import import_module

from train_platform.exceptions import TrainPlatformError
from train_platform.settings import configure_logging, redact

# Command groups in the order `tp --help` lists them.
_GROUPS = ("pipeline", "dataset", "model", "storage")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tp", description="train-platform command line")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    for name in _GROUPS:
        try:
            module = import_module(f"train_platform.cli.{name}")
        except ModuleNotFoundError as exc:  # a group whose module is not part of this build
            if exc.name != f"train_platform.cli.{name}":
                raise
            continue
        module.register(groups)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(argv)
    except BrokenPipeError:
        # The reader went away (`tp ... | head`): it has what it wanted. Point stdout at
        # /dev/null so the interpreter's own flush at exit does not fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # --help prints here: inside main's pipe handling
    configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, still inside main
        return code
    except TrainPlatformError as exc:
        # Known user-facing errors: one clear line, never a traceback.
        print(f"tp: error: {redact(exc)}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise  # main's pipe handling
    except Exception:  # noqa: BLE001 - an unexpected error: its traceback, with secrets redacted
        import traceback

        sys.stderr.write(redact(traceback.format_exc()))
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
