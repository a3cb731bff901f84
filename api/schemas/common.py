"""Shapes every part of the API shares: problem documents and pages."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

#: Largest row id (ids are PostgreSQL ``integer``).
MAX_ID = 2**31 - 1

#: A row id in a request body: positive and within the database's integer range.
DbId = Annotated[int, Field(ge=1, le=MAX_ID)]
#: A row id in a path (``/v1/apikeys/{key_id}``), with the same range.
IdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="the row's id")]


class Problem(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:tlsfleet:problem:not-found",
                    "title": "Not found",
                    "status": 404,
                    "detail": "no customer 42",
                    "instance": "/v1/customers/42",
                }
            ]
        },
    )

    type: str = Field(description="a URI naming the kind of problem")
    title: str = Field(description="the HTTP status in words")
    status: int = Field(description="the HTTP status code")
    detail: str = Field(description="what went wrong, for a person")
    instance: str = Field(description="the request path")


def _page_example(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    """An example page built from the item model's first example."""
    args = cls.__pydantic_generic_metadata__["args"]
    item = args[0] if args else None
    extra = getattr(item, "model_config", {}).get("json_schema_extra")
    examples = extra.get("examples", []) if isinstance(extra, dict) else []
    schema["examples"] = [
        {
            "items": examples[:1],
            "next": "/v1/items?limit=1&cursor=eyJpZCI6MX0",
        }
    ]


class Page(BaseModel, Generic[T]):
    """One page of a list. Follow ``next`` (or pass ``cursor``) until it is null."""

    model_config = ConfigDict(json_schema_extra=_page_example)

    items: list[T]
    next: str | None = Field(
        default=None,
        description="the URL of the next page; null on the last page",
        examples=["/v1/domains?limit=100&cursor=eyJpZCI6MTAwfQ"],
    )


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these problem statuses."""
    words = {
        401: "no API key, or an unknown or revoked one",
        403: "the key's role may not do this",
        404: "no such resource (or not visible to this key)",
        409: "conflicts with existing data",
        413: "request body or batch too large",
        422: "the request is invalid",
        429: "too many failed API keys from this address (see Retry-After)",
        503: "a service the API needs is not reachable",
    }
    return {
        status: {
            "model": Problem,
            "description": words.get(status, "problem"),
            "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            },
        }
        for status in statuses
    }
