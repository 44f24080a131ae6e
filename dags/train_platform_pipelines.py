"""The one DAG file of train-platform: compiles every pipeline YAML/JSON in this folder.

Airflow's DAG processor only reads .py files; this one turns each pipeline file under the
dags folder (``.airflowignore`` respected) into a DAG, and each broken one into a placeholder
DAG tagged ``invalid-pipeline`` that shows its errors. It imports no torch, bentoml,
great_expectations or pyiceberg.
"""

from pathlib import Path

from train_platform.compiler.loader import load_dags

globals().update(load_dags(Path(__file__).resolve().parent))
