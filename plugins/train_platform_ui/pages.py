"""The HTML pages: the review page, the datasets and models views, rendered on the server
with Jinja2 (templates in ``templates/``); the review page's actions run in
``static/review.js`` against the JSON API. Every page needs a logged-in Airflow user
(``auth.page_user``; anonymous callers are sent to Airflow's login page).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from train_platform.exceptions import TrainPlatformError
from train_platform_ui import views
from train_platform_ui.auth import PageUser
from train_platform_ui.svg import series_svg

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter()
APP_PREFIX = "/train-platform"
SHORTCUTS = [
    ("a", "accept the pre-label"), ("r", "reject as a bad sample"), ("s", "skip"),
    ("l", "choose a label (correct)"), ("1–9", "pick the model's alternative 1–9 (correct)"),
    ("u", "undo the pending decision"),
    ("j / k", "next / previous sample"), ("Ctrl+Enter", "submit"),
]


def _common(request: Request, user: str, active: str) -> dict[str, Any]:
    base = request.scope.get("root_path", "").rstrip("/")
    return {"user": user, "base": base, "airflow_base": base.removesuffix(APP_PREFIX), "active": active}


def error_page(request: Request, exc: TrainPlatformError, status: int) -> HTMLResponse:
    """A platform error as a page (the API answers JSON instead)."""
    context = {"base": request.scope.get("root_path", "").rstrip("/"), "user": None, "active": None,
               "airflow_base": "", "message": str(exc), "status": status}
    return templates.TemplateResponse(request, "error.html", context, status_code=status)


@router.get("/")
def index(request: Request) -> RedirectResponse:
    return RedirectResponse(f"{request.scope.get('root_path', '').rstrip('/')}/review", status_code=307)


@router.get("/review", response_class=HTMLResponse)
def review_page(
    request: Request,
    user: PageUser,
    dataset: str | None = None,
    branch: str = "main",
    batch: str | None = None,
    offset: int = Query(0, ge=0),
    limit: int = Query(20, ge=1, le=200),
    submitted: str | None = None,
) -> HTMLResponse:
    from train_platform.datasets.dataset import open_dataset
    from train_platform.review.batches import load_batch
    from train_platform.review.sync import SCRATCH_MARK
    from train_platform_ui.app import status_of

    context = _common(request, user, "review")
    datasets = views.dataset_list(user)
    readable = [d["name"] for d in datasets if d["role"]]
    if dataset is None and readable:
        dataset = readable[0]
    context.update(datasets=datasets, dataset=dataset, branch=branch, batch_filter=batch or "", branches=[],
                   batch=None, svgs={}, error=None, submitted=submitted, shortcuts=SHORTCUTS, offset=offset, limit=limit)
    status = 200
    if dataset:
        try:
            refs = open_dataset(dataset, user=user).refs()
            context["branches"] = [name for name, ref in refs.items() if ref["type"] == "branch" and SCRATCH_MARK not in name]
            loaded = load_batch(dataset, branch, reviewer=user, batch_id=batch or None, offset=offset, limit=limit)
            context["batch"] = loaded
            context["svgs"] = {
                s.sample_id: Markup(series_svg(s.series, title=f"{s.sample_id}: channels over time",
                                               start_time=s.start_time, end_time=s.end_time))
                for s in loaded.samples
            }
        except TrainPlatformError as exc:
            status = status_of(exc)
            context["error"] = str(exc)
    return templates.TemplateResponse(request, "review.html", context, status_code=status)


@router.get("/datasets", response_class=HTMLResponse)
def datasets_page(request: Request, user: PageUser) -> HTMLResponse:
    context = _common(request, user, "datasets")
    context["datasets"] = views.dataset_list(user)
    return templates.TemplateResponse(request, "datasets.html", context)


@router.get("/datasets/{name}", response_class=HTMLResponse)
def dataset_page(request: Request, name: str, user: PageUser) -> HTMLResponse:
    context = _common(request, user, "datasets")
    context["view"] = views.dataset_view(name, user)
    return templates.TemplateResponse(request, "dataset.html", context)


@router.get("/models", response_class=HTMLResponse)
def models_page(request: Request, user: PageUser) -> HTMLResponse:
    context = _common(request, user, "models")
    context["models"] = views.model_list()
    return templates.TemplateResponse(request, "models.html", context)


@router.get("/models/{name}", response_class=HTMLResponse)
def model_page(request: Request, name: str, user: PageUser) -> HTMLResponse:
    context = _common(request, user, "models")
    context["view"] = views.model_view(name)
    return templates.TemplateResponse(request, "model.html", context)
