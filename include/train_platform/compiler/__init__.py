"""From a validated pipeline spec to an Airflow DAG made of the platform's operators."""
