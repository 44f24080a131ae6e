"""The Airflow plugin of train-platform: the review page, datasets and models views inside
Airflow's UI.

``fastapi_apps`` mounts the app of ``train_platform_ui`` at ``/train-platform`` in the API
server, behind Airflow's own authentication; ``external_views`` puts its pages in Airflow's
navigation, under "Train platform", shown inside the Airflow UI (``url_route``). Loading the
plugin imports FastAPI and this package only: the dataset and registry code loads on the
first request.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from train_platform_ui.app import URL_PREFIX, create_app

CATEGORY = "Train platform"


class TrainPlatformUIPlugin(AirflowPlugin):
    name = "train_platform_ui"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "train-platform"}]
    external_views = [
        {"name": "Review data", "href": f"{URL_PREFIX}/review", "url_route": "tp-review", "category": CATEGORY,
         "destination": "nav"},
        {"name": "Datasets", "href": f"{URL_PREFIX}/datasets", "url_route": "tp-datasets", "category": CATEGORY,
         "destination": "nav"},
        {"name": "Models", "href": f"{URL_PREFIX}/models", "url_route": "tp-models", "category": CATEGORY,
         "destination": "nav"},
    ]
