"""CSV export of any list: ``?format=csv`` or ``Accept: text/csv`` on a list route.

The export streams the *whole* filtered list, not one page: it walks the same keyset
pages the JSON list serves, a batch at a time, each batch in a short session of its
own (a slow download never holds a connection or a transaction open), and writes
each batch as CSV while the next is fetched. A header row names the columns. Cells
that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``,
tab or carriage return) are prefixed with ``'`` (OWASP "CSV injection").

Wiring a list route takes a few lines. Given a repository page function with the
usual keyset shape, ``fetch(session, after=…, limit=…)`` returning up to ``limit + 1``
rows that have an ``id``::

    COLUMNS = (
        Column("id", "the domain's id", lambda d: d.id),
        Column("name", "A-label name", lambda d: d.name),
    )

    @router.get("/domains", responses=csv_responses(COLUMNS, "id,name\\r\\n7,example.org\\r\\n"))
    async def list_domains(request, session, runtime: RuntimeDep, caller: ScopedReader,
                           limit: LimitQuery = 50, cursor: CursorQuery = None,
                           format_: FormatQuery = None) -> Any:
        def fetch(s: AsyncSession, after: int | None, n: int) -> Awaitable[list[Domain]]:
            return repo.list_domains(s, after=after, limit=n, manager=caller.scope)

        if wants_csv(request, format_):
            return csv_response(keyset_rows(runtime.sessions, fetch), COLUMNS, "domains.csv")
        ...  # the JSON page as before

(``response_model=Page[DomainRead]`` on the decorator, since the route may return
either; ``FormatQuery`` is the ``format`` parameter, named ``format_`` in Python.)
Validate everything before returning the stream: once it has started, the status is
200 and an error can only cut the download short.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Literal, Protocol, TypeVar

from fastapi import Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.pagination import next_link

__all__ = [
    "CSV_MEDIA_TYPE",
    "EXPORT_BATCH",
    "Column",
    "FormatQuery",
    "csv_cell",
    "csv_response",
    "csv_responses",
    "csv_rows",
    "keyset_rows",
    "page_or_csv",
    "schema_columns",
    "wants_csv",
]

CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
#: Rows per keyset batch of an export.
EXPORT_BATCH = 1000
#: First characters that make a spreadsheet read a cell as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)

FormatQuery = Annotated[
    Literal["json", "csv"] | None,
    Query(
        alias="format",
        description="`csv`: the whole list (every page) as CSV, streamed; "
        "`Accept: text/csv` does the same. Default: a JSON page.",
    ),
]


@dataclass(frozen=True, slots=True)
class Column(Generic[T_contra]):
    """One CSV column: its header, what it holds (for the docs), and its value."""

    name: str
    description: str
    value: Callable[[T_contra], object]


def csv_cell(value: object) -> str:
    """A value as CSV cell text: empty for None, ``true``/``false``, ISO 8601 times,
    lists joined by spaces; text a spreadsheet would run as a formula gets a ``'``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple | set | frozenset):
        text = " ".join(csv_cell(v).removeprefix("'") for v in value)
    elif isinstance(value, dict | BaseModel):
        data = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        text = json.dumps(data, separators=(",", ":"), sort_keys=True, default=str)
    else:
        text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


async def csv_rows(
    rows: AsyncIterable[T], columns: Sequence[Column[T]], *, chunk: int = 200
) -> AsyncIterator[str]:
    """CSV text: the header row, then one line per row, yielded ``chunk`` rows at a time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([c.name for c in columns])
    pending = 0
    async for row in rows:
        writer.writerow([csv_cell(c.value(row)) for c in columns])
        pending += 1
        if pending >= chunk:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue()


class _HasId(Protocol):
    @property
    def id(self) -> int: ...


R = TypeVar("R", bound=_HasId)


async def keyset_rows(
    sessions: async_sessionmaker[AsyncSession],
    fetch: Callable[[AsyncSession, int | None, int], Awaitable[Sequence[R]]],
    *,
    batch: int = EXPORT_BATCH,
) -> AsyncIterator[R]:
    """Every row of a keyset-paged list: ``fetch(session, after, limit)`` returns up to
    ``limit + 1`` rows after id ``after`` (the list routes' page functions); each batch
    runs in a session of its own."""
    after: int | None = None
    while True:
        async with sessions() as session:
            rows = list(await fetch(session, after, batch))
        for row in rows[:batch]:
            yield row
        if len(rows) <= batch:
            return
        after = rows[batch - 1].id


def wants_csv(request: Request, format_: str | None) -> bool:
    """Whether the caller asked for CSV: ``format=csv``, or ``Accept: text/csv`` without
    ``format=json``."""
    if format_ is not None:
        return format_ == "csv"
    return "text/csv" in request.headers.get("accept", "")


def csv_response(
    rows: AsyncIterable[T], columns: Sequence[Column[T]], filename: str
) -> StreamingResponse:
    """A streamed ``text/csv`` download of ``rows`` (``Content-Disposition: attachment``)."""
    return StreamingResponse(
        csv_rows(rows, columns),
        media_type=CSV_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def csv_responses(columns: Sequence[Column[Any]], example: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entry of a route's CSV form: the columns described, an example."""
    described = "; ".join(f"`{c.name}`: {c.description}" for c in columns)
    return {
        200: {
            "description": "a JSON page, or with `format=csv` (or `Accept: text/csv`) the "
            f"whole list as CSV with a header row. CSV columns: {described}.",
            "content": {"text/csv": {"schema": {"type": "string"}, "example": example}},
        }
    }


M = TypeVar("M", bound=BaseModel)


def schema_columns(schema: type[BaseModel]) -> tuple[Column[Any], ...]:
    """CSV columns for a response schema: one per field, in the schema's order, read
    from the schema's objects (nested objects as compact JSON)."""

    def getter(name: str) -> Callable[[Any], object]:
        return lambda item: getattr(item, name)

    return tuple(
        Column(name, field.description or name.replace("_", " "), getter(name))
        for name, field in schema.model_fields.items()
    )


async def _converted(rows: AsyncIterable[Any], convert: Callable[[Any], M]) -> AsyncIterator[M]:
    async for row in rows:
        yield convert(row)


async def page_or_csv(
    request: Request,
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    fetch: Callable[[AsyncSession, int | None, int], Awaitable[Sequence[Any]]],
    schema: type[M],
    *,
    after: int | None,
    limit: int,
    format_: str | None,
    filename: str,
    convert: Callable[[Any], M] | None = None,
) -> Any:
    """The common body of a list route: a JSON page (``{"items", "next"}``) of
    ``fetch``'s rows after ``after``, or — ``format=csv`` / ``Accept: text/csv`` — the
    whole list streamed as CSV with :func:`schema_columns`. ``convert`` turns a row into
    the schema (default: ``schema.model_validate``)."""
    to_item: Callable[[Any], M] = convert or schema.model_validate
    if wants_csv(request, format_):
        rows = _converted(keyset_rows(sessions, fetch), to_item)
        return csv_response(rows, schema_columns(schema), filename)
    items, link = next_link(request, list(await fetch(session, after, limit)), limit)
    return {"items": [to_item(row) for row in items], "next": link}
