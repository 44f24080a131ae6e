"""The FastAPI app the plugin mounts at ``/train-platform`` in Airflow's API server.

Pages (``pages.py``): the review page, datasets and models. JSON API (``api.py``) under
``/api``, documented by FastAPI's OpenAPI page at ``/docs``. Static files (the page's
script and style sheet, no CDN) under ``/static``. Platform errors become one clear
message: JSON ``{"detail", "error"}`` from the API, the page with the message otherwise.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from train_platform.exceptions import TrainPlatformError
from train_platform_ui import api, pages
from train_platform_ui.auth import LoginRequired, login_url

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
URL_PREFIX = "/train-platform"


def status_of(exc: TrainPlatformError) -> int:
    """The HTTP status a platform error answers with."""
    from train_platform.datasets.exceptions import (
        ConcurrentAccessError,
        DatasetNotFoundError,
        PermissionDeniedError,
        RefNotFoundError,
        UnknownSamplesError,
    )
    from train_platform.registry.exceptions import ModelNotFoundError, VersionNotFoundError
    from train_platform.review.exceptions import ReviewError

    if isinstance(exc, ReviewError):
        return exc.status
    if isinstance(exc, PermissionDeniedError):
        return 403
    if isinstance(exc, (DatasetNotFoundError, RefNotFoundError, UnknownSamplesError, ModelNotFoundError,
                        VersionNotFoundError)):
        return 404
    if isinstance(exc, ConcurrentAccessError):
        return 409
    return 400


def error_body(exc: TrainPlatformError) -> dict:
    body = {"detail": str(exc), "error": type(exc).__name__}
    ids = getattr(exc, "ids", None)
    if ids:
        body["ids"] = list(ids)
    samples = getattr(exc, "samples", None)
    if samples:
        body["samples"] = samples
    return body


def is_api(request: Request) -> bool:
    """Whether the request is for the JSON API (the app sees paths below its mount point)."""
    return request.url.path.removeprefix(request.scope.get("root_path", "")).startswith("/api/")


def create_app() -> FastAPI:
    app = FastAPI(
        title="train-platform",
        description=(
            "The review page, dataset and model views of train-platform inside Airflow, and the JSON API "
            "they use. Authentication is Airflow's: the JWT of the logged-in Airflow user, as a bearer "
            "token (`POST /auth/token`) or the `_token` cookie the Airflow UI sets. That user's dataset "
            "roles apply: a reader may look, a writer may also review."
        ),
        version="1",
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(api.router, prefix="/api", tags=["train-platform"])
    app.include_router(pages.router, include_in_schema=False)

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired):
        return RedirectResponse(login_url(exc.next_url), status_code=303)

    @app.exception_handler(TrainPlatformError)
    async def _platform_error(request: Request, exc: TrainPlatformError):
        status = status_of(exc)
        if is_api(request):
            return JSONResponse(error_body(exc), status_code=status)
        return pages.error_page(request, exc, status)

    return app


__all__ = ["URL_PREFIX", "create_app", "error_body", "status_of"]
