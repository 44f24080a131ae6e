"""Active-learning sampling: which samples a person should label next.

``strategies`` holds the math on NumPy arrays (uncertainty scores, BALD, BADGE);
``selection`` reads a model's scores (the ``.npz`` of ``python -m ml.serving.batch_inference``)
and selects by a strategy and a budget, and gives each sample's runners-up after the
predicted class (``Scores.alternatives``, stored with pre-labels); ``exceptions`` has the
errors, each exit code 2.
This room imports neither torch nor ``ml``: the scores come from running the scorer as a
command. ``tp dataset sample`` and ``tp dataset prelabel`` (``train_platform.cli.
dataset_sampling``) join it to the datasets and the registry.
"""

# The strategy names, here so that the CLI can list them without loading NumPy.
STRATEGIES = ("random", "least_confidence", "margin", "entropy", "bald", "below_confidence", "diverse")
