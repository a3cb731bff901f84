"""Sweeps and results as the API shows them."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SweepCreate(BaseModel):
    """An ad-hoc sweep: exactly one of ``all``, ``customers`` (ids) or ``domains`` (names)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"all": True},
                {"customers": [7, 8], "quick": True},
                {"domains": ["example.org"]},
            ]
        },
    )

    all: bool = False
    customers: list[int] | None = Field(default=None, min_length=1, max_length=10_000)
    domains: list[str] | None = Field(default=None, min_length=1, max_length=10_000)
    quick: bool = Field(default=False, description="versions, suites, STARTTLS only")

    @model_validator(mode="after")
    def _one_scope(self) -> SweepCreate:
        given = [self.all, self.customers is not None, self.domains is not None]
        if sum(given) != 1:
            raise ValueError("give exactly one of: all (true), customers, domains")
        return self


class SweepProgressRead(BaseModel):
    total: int
    done: int
    failed: int
    remaining: int
    elapsed_seconds: float | None
    rate: float | None = Field(description="results per second")
    eta_seconds: float | None


class SweepRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 5,
                    "kind": "adhoc",
                    "status": "scanning",
                    "scope": {"all": True},
                    "options": {"quick": False},
                    "created_at": "2026-11-28T01:00:00Z",
                    "started_at": "2026-11-28T01:00:01Z",
                    "finished_at": None,
                    "progress": {
                        "total": 300,
                        "done": 120,
                        "failed": 3,
                        "remaining": 180,
                        "elapsed_seconds": 12.5,
                        "rate": 9.6,
                        "eta_seconds": 18.75,
                    },
                }
            ]
        }
    )

    id: int
    kind: str
    status: str
    scope: dict[str, Any]
    options: dict[str, Any]
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    progress: SweepProgressRead | None = None


class EndpointRead(BaseModel):
    id: int
    ip: str
    port: int
    service: str
    host: str


class EndpointResultRead(BaseModel):
    """The latest stored result document of one endpoint the domain uses."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "endpoint": {
                        "id": 1,
                        "ip": "192.0.2.10",
                        "port": 25,
                        "service": "smtp",
                        "host": "mx1.example.net",
                    },
                    "sweep_id": 5,
                    "scanned_at": "2026-11-28T01:00:09Z",
                    "status": "ok",
                    "document": {"target": {"host": "mx1.example.net", "port": 25}},
                }
            ]
        }
    )

    endpoint: EndpointRead
    sweep_id: int
    scanned_at: dt.datetime
    status: str
    document: dict[str, Any] = Field(description="the result document (docs/result-document.md)")


class DomainResults(BaseModel):
    """A domain's endpoints with their latest result documents."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "domain": "example.org",
                    "results": EndpointResultRead.model_config["json_schema_extra"]["examples"],  # type: ignore[index]
                }
            ]
        }
    )

    domain: str
    results: list[EndpointResultRead]


#: The diff's categories (fleet.repositories.diff.CATEGORIES), for ``?category=``.
DiffCategory = Literal[
    "newly_legacy_tls",
    "fixed_legacy_tls",
    "newly_plaintext_login",
    "fixed_plaintext_login",
    "new_endpoints",
    "vanished_endpoints",
]


class DiffEntryRead(BaseModel):
    """One endpoint in one category of a diff, with the domains that use it."""

    category: DiffCategory
    endpoint_id: int
    ip: str
    port: int
    service: str
    host: str
    domains: list[str] = Field(
        description="every domain that used the endpoint (in the sweep that had it)"
    )
    legacy_tls: bool | None = Field(
        description="accepts a version older than TLS 1.2 in this sweep (null: no ok result)"
    )
    plaintext_login: bool | None = Field(
        description="takes a password before TLS in this sweep (null: unknown)"
    )


_DIFF_ENTRY_EXAMPLE: dict[str, Any] = {
    "category": "newly_legacy_tls",
    "endpoint_id": 17,
    "ip": "192.0.2.10",
    "port": 993,
    "service": "imaps",
    "host": "mail.example.net",
    "domains": ["example.org", "example.com"],
    "legacy_tls": True,
    "plaintext_login": False,
}


class SweepDiffPage(BaseModel):
    """A page of a diff's entries, with every category's count."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "sweep_id": 12,
                    "previous_sweep_id": 9,
                    "stored": True,
                    "counts": {
                        "newly_legacy_tls": 1,
                        "fixed_legacy_tls": 0,
                        "newly_plaintext_login": 0,
                        "fixed_plaintext_login": 3,
                        "new_endpoints": 2,
                        "vanished_endpoints": 0,
                    },
                    "items": [_DIFF_ENTRY_EXAMPLE],
                    "next": "/v1/sweeps/12/diff?limit=1&cursor=eyJpZCI6MTd9",
                }
            ]
        }
    )

    sweep_id: int
    previous_sweep_id: int | None = Field(
        description="the baseline (null: none, every endpoint is new)"
    )
    stored: bool = Field(
        description="true: the diff stored when the sweep closed; false: computed now"
    )
    counts: dict[str, int] = Field(description="entries per category, the whole diff")
    items: list[DiffEntryRead]
    next: str | None = Field(
        default=None, description="the URL of the next page; null on the last page"
    )


class EndpointUseRead(BaseModel):
    domain_id: int
    domain: str
    host: str = Field(description="the name the domain reaches the endpoint by")
    how: str = Field(description="how discovery found it: mx, srv, web, …")


class EndpointDetailRead(BaseModel):
    """An endpoint, and the domains that used it in its latest sweep."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 17,
                    "ip": "192.0.2.10",
                    "port": 993,
                    "service": "imaps",
                    "host": "mail.example.net",
                    "first_seen": "2026-10-01T02:00:05Z",
                    "last_seen": "2026-11-28T02:00:04Z",
                    "latest_sweep_id": 12,
                    "domains": [
                        {
                            "domain_id": 3,
                            "domain": "example.org",
                            "host": "mail.example.net",
                            "how": "srv",
                        }
                    ],
                }
            ]
        }
    )

    id: int
    ip: str
    port: int
    service: str
    host: str
    first_seen: dt.datetime
    last_seen: dt.datetime
    latest_sweep_id: int | None = Field(
        description="the latest sweep that used the endpoint (for account managers: "
        "through one of their domains)"
    )
    domains: list[EndpointUseRead]


class EndpointHistoryRead(BaseModel):
    """One result of an endpoint, in one sweep."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 5012,
                    "sweep_id": 12,
                    "scanned_at": "2026-11-28T02:00:09Z",
                    "status": "ok",
                    "error_kind": None,
                    "document": {"target": {"host": "mail.example.net", "port": 993}},
                }
            ]
        }
    )

    id: int = Field(description="the result's id")
    sweep_id: int
    scanned_at: dt.datetime
    status: str
    error_kind: str | None
    document: dict[str, Any] | None = Field(
        description="the result document (docs/result-document.md); null with documents=false"
    )
