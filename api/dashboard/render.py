"""Rendering the dashboard's pages: the Jinja2 environment (templates shipped as package
data, autoescaped), the page errors and the headers every page carries."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

__all__ = ["SECURITY_HEADERS", "LoginRequired", "PageError", "page"]

#: Scripts and styles only from the dashboard's own static files; nothing framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class PageError(Exception):
    """A page that cannot be shown: 403 (the role may not), 404 (nothing the caller may
    see), … rendered as an HTML page with that status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class LoginRequired(Exception):
    """No live session: the browser is sent to the log-in page (then back)."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def _when(value: dt.datetime | None) -> str:
    return "—" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _share(part: int, whole: int) -> str:
    return "—" if not whole else f"{100 * part / whole:.1f} %"


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The templates (built on first use, not at import)."""
    env = Environment(
        loader=PackageLoader("api.dashboard", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["duration"] = _duration
    env.globals["share"] = _share
    return env


def page(
    request: Request, template: str, context: dict[str, Any], *, status: int = 200
) -> HTMLResponse:
    """Render ``template`` with ``context`` (plus the request, the refresh interval and
    the caller's session, when the route put them on ``request.state``)."""
    refresh = context.pop("refresh", None)
    asked = request.query_params.get("refresh", "")
    if asked.isdigit() and 5 <= int(asked) <= 3600:
        refresh = int(asked)
    html = (
        environment()
        .get_template(template)
        .render(
            request=request,
            refresh=refresh,
            viewer=getattr(request.state, "viewer", None),
            **context,
        )
    )
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
