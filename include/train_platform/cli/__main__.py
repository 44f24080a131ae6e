"""``python -m train_platform.cli ARGS`` is ``tp ARGS``: the form task commands use, since a
local task runs ``python`` from the worker's environment, where ``tp`` may not be on the
PATH."""

import sys

from train_platform.cli import main

sys.exit(main())
