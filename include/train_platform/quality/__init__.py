"""Annotation checks of datasets: data expectations (Great Expectations), likely
mislabelled samples (cleanlab), annotator agreement (Cohen's / Fleiss' kappa), one score.

``check.check_dataset("NAME@REF", CheckConfig(...))`` is the whole check and ``tp dataset
check`` its command line; README.md describes both. The room imports neither Airflow,
``ml`` nor torch, and imports great_expectations, cleanlab, scikit-learn and statsmodels
inside the functions that use them, so importing the package costs nothing.
"""
