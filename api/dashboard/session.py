"""Who is looking at the dashboard: log-in with an API key, a session cookie, and the
token that every form carries.

- The log-in page sets a short-lived random cookie and puts the same value in its form
  (double submit): a log-in POST without both, equal, is refused.
- A successful log-in opens a session (fleet/repositories/dashboard.py): the cookie
  holds a random id, PostgreSQL only its SHA-256. The cookie is ``HttpOnly``,
  ``SameSite=Strict``, scoped to ``/dashboard`` and ``Secure`` when served over https.
- Every later POST (log-out) must carry the session's own token.
- A session is refused once it expires or its key is revoked; log-out deletes it.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import Depends, Request
from starlette.responses import Response

from api.auth import Principal
from api.dashboard.render import LoginRequired, PageError
from api.deps import SessionDep
from fleet.repositories import dashboard as repo

__all__ = [
    "LOGIN_COOKIE",
    "PREFIX",
    "SESSION_COOKIE",
    "Viewer",
    "ViewerDep",
    "check_csrf",
    "form",
    "safe_next",
    "set_cookie",
]

PREFIX = "/dashboard"
SESSION_COOKIE = "tlsfleet_session"
LOGIN_COOKIE = "tlsfleet_login"
#: Largest form the dashboard reads (a key and two tokens fit many times over).
_MAX_FORM = 8 * 1024


@dataclass(frozen=True, slots=True)
class Viewer:
    """The logged-in caller: its key as the API sees it, and its session's form token."""

    principal: Principal
    key_name: str
    csrf_token: str
    session_token: str


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    """A dashboard cookie: HttpOnly, SameSite=Strict, Secure over https."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def new_login_token() -> str:
    return secrets.token_urlsafe(32)


async def form(request: Request) -> dict[str, str]:
    """The fields of an ``application/x-www-form-urlencoded`` body (first value each)."""
    body = await request.body()
    if len(body) > _MAX_FORM:
        raise PageError(413, "the form is too large")
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise PageError(415, "send the form as application/x-www-form-urlencoded")
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def check_csrf(expected: str | None, given: str | None) -> None:
    """403 unless the form's token is the expected one."""
    if not expected or not given or not hmac.compare_digest(expected, given):
        raise PageError(403, "the form's token is missing or stale: reload the page and retry")


def safe_next(value: str | None) -> str:
    """Where to go after log-in: a dashboard path, never another site."""
    if value and value.startswith(PREFIX + "/") and "//" not in value and "\\" not in value:
        return value
    return PREFIX + "/"


async def get_viewer(request: Request, session: SessionDep) -> Viewer:
    """The caller of a dashboard page; to the log-in page without a live session."""
    token = request.cookies.get(SESSION_COOKIE)
    found = await repo.find_session(session, token) if token else None
    if found is None:
        path = request.url.path
        if request.url.query:
            path += "?" + request.url.query
        raise LoginRequired(path)
    key, csrf = found
    viewer = Viewer(
        Principal(key.id, key.prefix, key.role, key.account_manager_id),
        key.name,
        csrf,
        token or "",
    )
    request.state.viewer = viewer
    return viewer


ViewerDep = Annotated[Viewer, Depends(get_viewer)]
