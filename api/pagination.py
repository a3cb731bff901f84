"""Cursor pagination: opaque cursors, a ``limit`` with a maximum, a ``next`` link.

A cursor is URL-safe base64 of a small JSON object (the last id seen); clients must
treat it as opaque. A cursor that does not decode is a 422 problem.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any

from fastapi import Query, Request

from api.errors import Invalid
from api.schemas.common import MAX_ID

DEFAULT_LIMIT = 50
MAX_LIMIT = 500

LimitQuery = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description=f"items per page (at most {MAX_LIMIT})")
]
CursorQuery = Annotated[
    str | None, Query(max_length=200, description="from the previous page's 'next' link")
]


def encode_cursor(last_id: int) -> str:
    raw = json.dumps({"id": last_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """The last id a cursor stands for; None for no cursor; Invalid for a bad one."""
    if cursor is None:
        return None
    try:
        data: Any = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        value = data["id"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise Invalid("the cursor is not one this API gave out") from None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_ID:
        raise Invalid("the cursor is not one this API gave out")
    return value


def next_link(request: Request, rows: list[Any], limit: int) -> tuple[list[Any], str | None]:
    """The page's items (rows had up to ``limit + 1``) and the next page's URL."""
    if len(rows) <= limit:
        return rows, None
    items = rows[:limit]
    url = request.url.include_query_params(cursor=encode_cursor(items[-1].id), limit=limit)
    return items, str(url.path) + "?" + url.query
