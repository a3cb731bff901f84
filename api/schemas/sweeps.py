"""Sweeps and results as the API shows them."""

from __future__ import annotations

import datetime as dt
from typing import Any

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
