"""Serving helpers used by ``ml/service.py`` and the batch scorer
``python -m ml.serving.batch_inference``: configuration, adaptive batching, the prediction
cache, A/B routing, drift and live stats.

These modules may import ``train_platform``'s Airflow-free core (settings, registry) but
never ``airflow``."""
