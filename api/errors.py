"""Every error the API returns is an RFC 9457 problem document, built here.

Routes raise :class:`ApiError` subclasses (or let domain errors through); the handlers
installed by :func:`install` turn them, FastAPI's validation errors, Starlette's HTTP
errors (unknown route, wrong method) and database conflicts into
``application/problem+json`` with ``type``, ``title``, ``status``, ``detail`` and
``instance``. This is the one place where errors map to HTTP status codes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import DataError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    "PROBLEM_TYPE",
    "ApiError",
    "BatchTooLarge",
    "Conflict",
    "Forbidden",
    "Invalid",
    "NotFound",
    "Unauthorized",
    "Unavailable",
    "install",
    "problem_response",
]

log = logging.getLogger(__name__)

#: ``type`` of every problem: this prefix and a slug (documented in docs/api.md).
PROBLEM_TYPE = "urn:tlsfleet:problem:"
MEDIA_TYPE = "application/problem+json"

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Content too large",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}
_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "too-large",
    422: "invalid",
    429: "too-many-requests",
    500: "internal",
    503: "unavailable",
}


class ApiError(Exception):
    """An error with its HTTP status; ``detail`` is shown to the client as it is."""

    status = 500
    slug: str | None = None

    def __init__(
        self,
        detail: str,
        *,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class BatchTooLarge(ApiError):
    status = 413
    slug = "batch-too-large"


class Invalid(ApiError):
    status = 422


class TooManyRequests(ApiError):
    status = 429


class Unavailable(ApiError):
    status = 503


def problem_response(
    request_path: str,
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An ``application/problem+json`` response."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + (slug or _SLUGS.get(status, "error")),
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "instance": request_path,
        **(extra or {}),
    }
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return problem_response(
        request.url.path,
        exc.status,
        exc.detail,
        slug=exc.slug,
        extra=exc.extra,
        headers=exc.headers,
    )


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "location": [str(part) for part in error.get("loc", ())],
            "message": str(error.get("msg", "")),
        }
        for error in exc.errors()
    ]
    first = errors[0] if errors else {"location": [], "message": "invalid request"}
    where = ".".join(first["location"]) if isinstance(first["location"], list) else ""
    detail = f"{where}: {first['message']}" if where else str(first["message"])
    if len(errors) > 1:
        detail += f" (and {len(errors) - 1} more)"
    return problem_response(
        request.url.path, 422, detail, slug="validation", extra={"errors": errors}
    )


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # FastAPI's answer to a body it cannot decode (not UTF-8, not JSON): a body that
        # does not match the schema, like any other (422, as documented on every route).
        return _body_problem(request.url.path, "the body is not valid JSON text (UTF-8)")
    detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "")
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no such resource: {request.url.path}"
    return problem_response(
        request.url.path, exc.status_code, detail, headers=getattr(exc, "headers", None)
    )


def _body_problem(path: str, message: str) -> JSONResponse:
    errors = [{"location": ["body"], "message": message}]
    return problem_response(
        path, 422, f"body: {message}", slug="validation", extra={"errors": errors}
    )


async def _data(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DataError)
    # The database refused a value the request carried (an id beyond its integer range,
    # say): the request is invalid, not the server broken. The value stays out of the
    # answer, as for conflicts.
    log.info("database refused a request value: %s", type(exc.orig).__name__)
    return problem_response(
        request.url.path, 422, "a value in the request is out of range or malformed"
    )


async def _integrity(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, IntegrityError)
    # The driver's message names the constraint; the values stay out of the answer.
    constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", None)
    detail = "the change conflicts with existing data"
    if constraint:
        detail += f" ({constraint})"
    return problem_response(request.url.path, 409, detail)


async def _redis(request: Request, exc: Exception) -> JSONResponse:
    log.warning("Redis unavailable: %s", type(exc).__name__)
    return problem_response(request.url.path, 503, "the job queue (Redis) is not reachable")


def install(app: FastAPI) -> None:
    """Install the problem-document handlers on ``app``."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(IntegrityError, _integrity)
    app.add_exception_handler(DataError, _data)
    app.add_exception_handler(RedisError, _redis)
