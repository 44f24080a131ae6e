"""The environment Airflow runs from holds the product, not the benchmarks' baselines."""

from __future__ import annotations

import importlib.metadata

import pytest

BENCH_ONLY = ["dag-factory"]


@pytest.mark.parametrize("distribution", BENCH_ONLY)
def test_benchmark_only_packages_are_not_installed_in_the_product_venv(distribution):
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution(distribution)


def test_airflow_loads_no_plugin_of_a_benchmark_package():
    """Admin -> Plugins lists what ``get_plugin_info`` returns: no dag-factory there."""
    from airflow import plugins_manager

    names = [info["name"] for info in plugins_manager.get_plugin_info()]
    assert not [n for n in names if "factory" in n.lower()], names
