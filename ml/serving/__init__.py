"""Serving helpers used by ``ml/service.py`` and the batch scorer ``python -m ml.serving.score``:
configuration, adaptive batching, the prediction cache, A/B routing, drift and live stats.

These modules may import ``train_platform``'s Airflow-free core (settings, registry) but
never ``airflow``."""
