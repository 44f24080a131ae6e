"""train-platform's Airflow operators, one per file. Thin: they validate in ``__init__`` and
in ``execute`` delegate to ``train_platform`` or launch an ``ml`` command."""
