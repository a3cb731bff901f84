"""The built-in NOC dashboard: server-rendered pages under ``/dashboard`` (Jinja2
templates and static files shipped in this package; no build step), logged in with an
API key and scoped like the API. See docs/dashboard.md."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from api.dashboard.pages import router
from api.dashboard.render import LoginRequired, PageError, page
from api.dashboard.session import PREFIX

__all__ = ["install"]


async def _login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    if request.method != "GET":
        return page(
            request, "error.html.j2", {"status": 401, "message": "log in first"}, status=401
        )
    target = f"{PREFIX}/login"
    if exc.next_path != f"{PREFIX}/":
        target += "?" + urlencode({"next": exc.next_path})
    return RedirectResponse(target, status_code=303)


async def _page_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PageError)
    return page(
        request, "error.html.j2", {"status": exc.status, "message": exc.message}, status=exc.status
    )


def install(app: FastAPI) -> None:
    """Mount the dashboard's pages and static files on ``app``."""
    app.include_router(router)
    app.mount(
        f"{PREFIX}/static",
        StaticFiles(packages=[("api.dashboard", "static")]),
        name="dashboard-static",
    )
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(PageError, _page_error)

    @app.get(PREFIX, include_in_schema=False)
    async def dashboard_root() -> Response:
        return RedirectResponse(f"{PREFIX}/", status_code=307)
