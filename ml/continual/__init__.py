"""Continual learning: one small trainer with lifecycle hooks (``trainer.py``) and one plugin
per method (``replay.py``, ``ewc.py``, ``lwf.py``). Plugins compose; ``strategies.py`` names
the combinations the benchmark compares."""
