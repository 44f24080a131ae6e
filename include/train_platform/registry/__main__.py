"""``python -m train_platform.registry ARGS`` is ``tp model ARGS``: the form task commands use,
since a local task runs ``python`` from the worker's environment, where ``tp`` may not be on
the PATH."""

import sys

from train_platform.cli import main

if __name__ == "__main__":
    sys.exit(main(["model", *sys.argv[1:]]))
