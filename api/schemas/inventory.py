"""Account managers, customers and domains as the API reads and writes them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import DbId

#: Rows one bulk import may carry.
MAX_IMPORT_ROWS = 10_000


class AccountManagerCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "Alice Example", "email": "alice@example.net"}]},
    )

    name: str = Field(min_length=1, max_length=200)
    email: str = Field(min_length=3, max_length=320)


class AccountManagerUpdate(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "Alice Smith"}]}
    )

    name: str | None = Field(default=None, min_length=1, max_length=200)
    email: str | None = Field(default=None, min_length=3, max_length=320)


class AccountManagerRead(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": 3,
                    "name": "Alice Example",
                    "email": "alice@example.net",
                    "created_at": "2026-11-28T01:00:00Z",
                }
            ]
        },
    )

    id: int
    name: str
    email: str
    created_at: dt.datetime


class CustomerCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "Example GmbH", "account_manager_id": 3}]},
    )

    name: str = Field(min_length=1, max_length=200)
    account_manager_id: DbId | None = None


class CustomerUpdate(BaseModel):
    """Fields to change; ``account_manager_id: null`` removes the account manager."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"account_manager_id": None}]}
    )

    name: str | None = Field(default=None, min_length=1, max_length=200)
    account_manager_id: DbId | None = None


class CustomerRead(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": 7,
                    "name": "Example GmbH",
                    "account_manager_id": 3,
                    "created_at": "2026-11-28T01:00:00Z",
                }
            ]
        },
    )

    id: int
    name: str
    account_manager_id: int | None
    created_at: dt.datetime


class DomainCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "example.org", "customer_id": 7, "tags": ["mail"]}]
        },
    )

    name: str = Field(min_length=1, max_length=300, description="U-label or A-label")
    customer_id: DbId
    tags: list[str] = Field(default_factory=list)


class DomainUpdate(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"tags": ["mail", "vip"], "active": True}]}
    )

    customer_id: DbId | None = None
    tags: list[str] | None = None
    active: bool | None = None


class DomainRead(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": 11,
                    "name": "example.org",
                    "customer_id": 7,
                    "tags": ["mail"],
                    "active": True,
                    "created_at": "2026-11-28T01:00:00Z",
                    "updated_at": "2026-11-28T01:00:00Z",
                }
            ]
        },
    )

    id: int
    name: str = Field(description="A-label, lower case, no trailing dot")
    customer_id: int
    tags: list[str]
    active: bool
    created_at: dt.datetime
    updated_at: dt.datetime


class DomainImport(BaseModel):
    """Up to 10,000 inventory rows (the fields of ``tlsfleet inventory import``)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "rows": [
                        {
                            "domain": "example.org",
                            "customer": "Example GmbH",
                            "account_manager": "Alice Example",
                            "account_manager_email": "alice@example.net",
                            "tags": ["mail"],
                        },
                        {"domain": "bad..name", "customer": "Example GmbH"},
                    ]
                }
            ]
        },
    )

    rows: list[dict[str, Any]] = Field(
        description=f"at most {MAX_IMPORT_ROWS:,} rows; each: domain, customer, "
        "account_manager, account_manager_email, tags"
    )


class ImportRowError(BaseModel):
    row: int = Field(description="1-based index in 'rows'")
    domain: str | None
    reason: str


class ImportReport(BaseModel):
    """What an import did: good rows are kept, bad rows reported."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "rows": 2,
                    "created": 1,
                    "updated": 0,
                    "unchanged": 0,
                    "rejected": 1,
                    "errors": [{"row": 2, "domain": "bad..name", "reason": "domain: empty label"}],
                }
            ]
        }
    )

    rows: int
    created: int
    updated: int
    unchanged: int
    rejected: int
    errors: list[ImportRowError]
