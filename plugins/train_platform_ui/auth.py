"""Who is calling: the user logged in to Airflow, as Airflow's own API decides it.

The pages and the JSON API sit behind Airflow's authentication. The caller is resolved by
Airflow's ``get_user`` dependency, the one its REST API uses: the JWT from an
``Authorization: Bearer`` header, else from the ``_token`` cookie the Airflow UI sets at
login, validated (signature, expiry, revocation) by the configured auth manager. No form
field or other header names the user. That user's name is the acting user of every dataset
operation, so the dataset roles of that name apply.

An anonymous or invalid caller gets 401 (403 for an invalid token) from the API; a page
redirects to the auth manager's login page, which comes back to the page afterwards.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

# The two credentials Airflow accepts, declared here for the OpenAPI page; Airflow's own
# ``get_user`` reads and validates them (imported on first use: it loads Airflow's API
# models, which the other Airflow components that load plugins do not need).
bearer_scheme = HTTPBearer(auto_error=False, description="an Airflow JWT (POST /auth/token)")
cookie_scheme = APIKeyCookie(name="_token", auto_error=False, description="the Airflow UI's login cookie")


class LoginRequired(Exception):
    """Raised by ``page_user`` for an anonymous page request; the app redirects to login."""

    def __init__(self, next_url: str):
        self.next_url = next_url
        super().__init__("login required")


async def _airflow_user_name(request: Request, bearer: HTTPAuthorizationCredentials | None) -> str:
    from airflow.api_fastapi.core_api.security import get_user

    user = await get_user(request, None, bearer)
    return user.get_name()


async def api_user(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)] = None,
    _cookie: Annotated[str | None, Depends(cookie_scheme)] = None,
) -> str:
    """The logged-in Airflow user's name, for the JSON API (401/403 otherwise)."""
    return await _airflow_user_name(request, bearer)


async def page_user(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)] = None,
) -> str:
    """The logged-in Airflow user's name, for the HTML pages (login page otherwise)."""
    try:
        return await _airflow_user_name(request, bearer)
    except HTTPException as exc:
        if exc.status_code in (status.HTTP_401_UNAUTHORIZED, status.HTTP_403_FORBIDDEN):
            raise LoginRequired(str(request.url)) from exc
        raise


ApiUser = Annotated[str, Depends(api_user)]
PageUser = Annotated[str, Depends(page_user)]


def login_url(next_url: str) -> str:
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager().get_url_login(next_url=next_url)


__all__ = ["ApiUser", "LoginRequired", "PageUser", "api_user", "login_url", "page_user"]
