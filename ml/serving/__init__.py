"""Serving helpers used by ``ml/service.py`` and the batch scorer
``python -m ml.serving.batch_inference``: configuration, adaptive batching, the prediction
cache, A/B routing, drift, live stats, and the capture of served predictions for a
dataset's intake branch.

These modules may import ``train_platform``'s Airflow-free core (settings, registry,
datasets) but never ``airflow``."""
