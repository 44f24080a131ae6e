"""The train-platform pages inside Airflow: the review page, datasets and models views, and
their JSON API, as one FastAPI app (``app.create_app``) that ``train_platform_ui_plugin.py``
hands to Airflow. This package may import Airflow (for its authentication); what it shows
comes from the Airflow-free core (``train_platform.review``, ``datasets``, ``registry``),
imported inside the request handlers so that loading the plugin stays light."""
