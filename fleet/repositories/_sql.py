"""Small SQL building blocks shared by the repositories."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, Integer, Table, Text, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import DeclarativeBase, QueryableAttribute

__all__ = ["any_int", "any_text", "table_of"]


def any_text(
    column: QueryableAttribute[str] | ColumnElement[str], values: Iterable[str]
) -> ColumnElement[bool]:
    """``column = ANY(:array)``: one array parameter instead of an ``IN`` list with a
    parameter per value (a statement that compiles once, however many values)."""
    return column == any_(bindparam(None, list(values), type_=ARRAY(Text)))


def any_int(
    column: QueryableAttribute[int] | ColumnElement[int], values: Iterable[int]
) -> ColumnElement[bool]:
    """:func:`any_text` for integer columns."""
    return column == any_(bindparam(None, list(values), type_=ARRAY(Integer)))


def table_of(model: type[DeclarativeBase] | Any) -> Table:
    """The Core table of a mapped class: bulk statements on it skip the ORM's per-row
    work and run as one cached executemany (psycopg pipelines it)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table
