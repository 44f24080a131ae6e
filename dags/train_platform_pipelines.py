"""The one DAG file of train-platform: compiles every pipeline YAML/JSON in this folder.

Every pipeline's DAG shows this file in Airflow's Code tab, because Airflow shows the
Python file a DAG comes from. The pipeline's own YAML source, its parameters and its
version history are in the DAG's Docs (the "Docs" button on the DAG's page).

Airflow's DAG processor only reads .py files; this one turns each pipeline file under the
dags folder (``.airflowignore`` respected) into a DAG, and each broken one into a placeholder
DAG tagged ``invalid-pipeline`` that shows its errors. When Airflow starts a task it compiles
only the files that can define that task's DAG. It imports no torch, bentoml,
great_expectations or pyiceberg.
"""

from pathlib import Path

from train_platform.compiler.loader import load_dags

globals().update(load_dags(Path(__file__).resolve().parent))
