"""Fixtures shared by the pipeline tests (``kubeconfig`` and ``tp_home`` live in tests/conftest.py)."""
