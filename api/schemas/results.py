"""Filtered result lists, fleet statistics and trends as the API shows them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.sweeps import EndpointRead
from fleet.repositories.reports import FleetCounts, LatestRow, ManagerCounts, SweepCounts

_LATEST_EXAMPLE: dict[str, Any] = {
    "endpoint": {
        "id": 17,
        "ip": "192.0.2.25",
        "port": 587,
        "service": "submission",
        "host": "mail.example.net",
    },
    "result_id": 90211,
    "sweep_id": 31,
    "scanned_at": "2026-11-28T02:00:13Z",
    "status": "ok",
    "error_kind": None,
    "protocols": {
        "SSLv2": False,
        "SSLv3": False,
        "TLSv1.0": True,
        "TLSv1.1": True,
        "TLSv1.2": True,
        "TLSv1.3": True,
    },
    "lowest_protocol": "TLSv1.0",
    "highest_protocol": "TLSv1.3",
    "plaintext_before_tls": True,
    "starttls_offered": True,
    "cert_status": "valid",
    "cert_not_after": "2026-12-30T00:00:00Z",
    "domains": ["example.org", "example.com"],
    "domains_total": 2,
}


class LatestResultRead(BaseModel):
    """An endpoint with a summary of its latest result and the domains that use it."""

    model_config = ConfigDict(json_schema_extra={"examples": [_LATEST_EXAMPLE]})

    endpoint: EndpointRead
    result_id: int = Field(description="the scan_results row of the latest result")
    sweep_id: int
    scanned_at: dt.datetime
    status: str = Field(description="ok or error")
    error_kind: str | None
    protocols: dict[str, bool | None] = Field(
        description="per version: accepted, refused, or null (undecided)"
    )
    lowest_protocol: str | None = Field(description="lowest accepted version; null if none")
    highest_protocol: str | None
    plaintext_before_tls: bool | None = Field(description="a password can be sent in clear")
    starttls_offered: bool | None = Field(description="null for implicit-TLS services")
    cert_status: str | None
    cert_not_after: dt.datetime | None
    domains: list[str] = Field(
        description="up to 10 of the domains (visible to the key, and selected by the "
        "filter) that use the endpoint now, by domain id"
    )
    domains_total: int = Field(
        description="how many such domains there are, counted up to 100 (100: at least that many)"
    )

    @classmethod
    def of(cls, row: LatestRow) -> LatestResultRead:
        return cls(
            endpoint=EndpointRead(
                id=row.endpoint_id, ip=row.ip, port=row.port, service=row.service, host=row.host
            ),
            result_id=row.result_id,
            sweep_id=row.sweep_id,
            scanned_at=row.scanned_at,
            status=row.status,
            error_kind=row.error_kind,
            protocols=row.protocols,
            lowest_protocol=row.lowest_protocol,
            highest_protocol=row.highest_protocol,
            plaintext_before_tls=row.plaintext_before_tls,
            starttls_offered=row.starttls_offered,
            cert_status=row.cert_status,
            cert_not_after=row.cert_not_after,
            domains=list(row.domains),
            domains_total=row.domains_total,
        )


_VERSIONS = ("SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_COUNTS_EXAMPLE: dict[str, Any] = {
    "endpoints": 412,
    "protocols": dict(zip(_VERSIONS, (0, 3, 57, 60, 398, 301), strict=True)),
    "lowest_protocol": dict(zip(_VERSIONS, (0, 3, 54, 3, 97, 4), strict=True)),
    "highest_protocol": dict(zip(_VERSIONS, (0, 0, 2, 3, 96, 301), strict=True)),
    "findings": {
        "legacy_tls": 60,
        "tls10": 57,
        "tls11": 60,
        "ssl": 3,
        "no_modern_tls": 5,
        "plaintext_before_tls": 22,
        "starttls_missing": 4,
        "cert_expired": 2,
        "cert_expiring": 9,
        "cert_untrusted": 6,
        "cert_hostname_mismatch": 3,
        "errors": 14,
    },
    "cert_status": {
        "valid": 380,
        "expired": 2,
        "not_yet_valid": 0,
        "self_signed": 4,
        "untrusted": 2,
        "hostname_mismatch": 3,
    },
    "errors": {"timeout": 9, "refused": 1, "starttls_not_offered": 4},
}


class CountsRead(BaseModel):
    """Endpoint counts (each endpoint once, however many domains use it)."""

    model_config = ConfigDict(json_schema_extra={"examples": [_COUNTS_EXAMPLE]})

    endpoints: int
    protocols: dict[str, int] = Field(description="endpoints accepting each version")
    lowest_protocol: dict[str, int] = Field(description="endpoints by lowest accepted version")
    highest_protocol: dict[str, int] = Field(description="endpoints by highest accepted version")
    findings: dict[str, int] = Field(
        description="endpoints with each finding (docs/results-api.md)"
    )
    cert_status: dict[str, int] = Field(description="endpoints by certificate status at scan time")
    errors: dict[str, int] = Field(description="failed scans by error kind (kinds that occur)")

    @classmethod
    def of(cls, counts: FleetCounts) -> CountsRead:
        return cls.model_validate(counts.to_dict())


class ManagerCountsRead(BaseModel):
    account_manager_id: int
    name: str
    counts: CountsRead

    @classmethod
    def of(cls, counts: ManagerCounts) -> ManagerCountsRead:
        return cls(
            account_manager_id=counts.account_manager_id,
            name=counts.name,
            counts=CountsRead.of(counts.counts),
        )


class StatsRead(BaseModel):
    """The fleet's current state in numbers: over every endpoint's latest result."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "as_of": "2026-11-28T09:00:00Z",
                    "expiring_days": 30,
                    "counts": _COUNTS_EXAMPLE,
                    "account_managers": [
                        {"account_manager_id": 3, "name": "Alice", "counts": _COUNTS_EXAMPLE}
                    ],
                }
            ]
        }
    )

    as_of: dt.datetime = Field(description="expiry is counted relative to this time")
    expiring_days: int
    counts: CountsRead
    account_managers: list[ManagerCountsRead] = Field(
        description="with by_account_manager=true: the same counts per account manager "
        "(an account manager's key: its own); else empty"
    )


class TrendPoint(BaseModel):
    sweep_id: int
    kind: str
    finished_at: dt.datetime | None
    counts: CountsRead

    @classmethod
    def of(cls, point: SweepCounts) -> TrendPoint:
        return cls(
            sweep_id=point.sweep_id,
            kind=point.kind,
            finished_at=point.finished_at,
            counts=CountsRead.of(point.counts),
        )


class TrendRead(BaseModel):
    """The counts of the last closed full-fleet sweeps, oldest first."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "sweeps": [
                        {
                            "sweep_id": 30,
                            "kind": "nightly",
                            "finished_at": "2026-11-27T02:14:00Z",
                            "counts": _COUNTS_EXAMPLE,
                        }
                    ]
                }
            ]
        }
    )

    sweeps: list[TrendPoint]


# -- the cut-off view ---------------------------------------------------------------------------


class ImpactRead(BaseModel):
    """What one finding means on the cut-off day."""

    code: str = Field(description="the rule (docs/findings.md)")
    scope: str = Field(description="all_clients, some_clients or degraded")
    message: str


class EndpointCutoffRead(BaseModel):
    """One endpoint of the customer on the cut-off day, if nothing changes."""

    endpoint_id: int
    ip: str
    port: int
    service: str
    port_class: str = Field(description="smtp_relay, mail_client or https")
    domains: list[str] = Field(description="the customer's domains that use it now")
    outcome: str = Field(
        description="breaks, partly_breaks, degraded, unaffected, or unknown (scan failed "
        "or left the deciding facts open)"
    )
    impacts: list[ImpactRead]
    undecided: list[str]
    findings: list[str] = Field(description="rule codes that fire now")


class CutoffRead(BaseModel):
    """A customer's future: what breaks on the cut-off date if nothing changes."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_id": 7,
                    "customer": "Example GmbH",
                    "cutoff": "2027-01-31",
                    "profile": "default",
                    "rules_version": "2026.11.1",
                    "summary": "1 of 3 endpoints break on 2027-01-31, 1 partly break",
                    "outcomes": {
                        "breaks": 1,
                        "partly_breaks": 1,
                        "degraded": 0,
                        "unaffected": 1,
                        "unknown": 0,
                    },
                    "worst": "critical",
                    "endpoints": [
                        {
                            "endpoint_id": 17,
                            "ip": "192.0.2.10",
                            "port": 995,
                            "service": "pop3s",
                            "port_class": "mail_client",
                            "domains": ["example.org"],
                            "outcome": "breaks",
                            "impacts": [
                                {
                                    "code": "tls.only_legacy",
                                    "scope": "all_clients",
                                    "message": "from 2027-01-31 no client can connect: "
                                    "the server offers only TLS 1.0/1.1",
                                }
                            ],
                            "undecided": [],
                            "findings": ["tls.legacy_version", "tls.only_legacy"],
                        }
                    ],
                }
            ]
        }
    )

    customer_id: int
    customer: str
    cutoff: dt.date
    profile: str
    rules_version: str
    summary: str
    outcomes: dict[str, int]
    worst: str | None
    endpoints: list[EndpointCutoffRead]
