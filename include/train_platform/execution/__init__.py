"""Running a task's container command as a local process (the embedded default), and mapping
container paths to local folders. The Kubernetes shape of a task (its pod) is built by the
Airflow-facing ``train_platform.compiler.pods``."""
