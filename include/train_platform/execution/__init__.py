"""Running a task's container command: as a local process (embedded default) or as a
Kubernetes pod (at scale). Both take the same command, inputs, outputs and resources."""
