"""The registry's revisions, oldest first (Alembic reads them by path; this file makes the
folder a package so that it ships with ``train_platform``)."""
