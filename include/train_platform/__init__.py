"""train-platform core: pipeline spec and compiler, settings, datasets, storage mounts,
model registry and the ``tp`` CLI.

This package never imports torch, bentoml, great_expectations or pyiceberg at import time,
so the DAG processor stays light.
"""

__version__ = "0.1.0"
