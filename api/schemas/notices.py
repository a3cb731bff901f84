"""Notices and findings as the API shows them."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

NoticeStatus = Literal["open", "notified", "acknowledged", "exception", "resolved", "dismissed"]
SeverityName = Literal["info", "low", "medium", "high", "critical"]
RenderFormat = Literal["text", "html", "markdown"]
Language = Literal["en", "de"]

_PROBLEM: dict[str, Any] = {"endpoint_id": 12, "code": "tls.legacy_version", "step": None}
_NOTICE: dict[str, Any] = {
    "id": 7,
    "customer_id": 3,
    "account_manager_id": 2,
    "status": "notified",
    "problem_hash": "3f0c…",
    "problems": [_PROBLEM, {"endpoint_id": 12, "code": "cert.expiry_step", "step": 14}],
    "sweep_id": 41,
    "last_sweep_id": 41,
    "generation": 1,
    "regressions": 0,
    "exception_reason": None,
    "exception_until": None,
    "created_at": "2026-11-28T03:00:00Z",
    "updated_at": "2026-11-28T03:02:00Z",
    "notified_at": "2026-11-28T03:02:00Z",
    "acknowledged_at": None,
    "resolved_at": None,
}
_FINDING: dict[str, Any] = {
    "id": 901,
    "sweep_id": 41,
    "endpoint_id": 12,
    "endpoint": {"host": "mail.example.net", "ip": "192.0.2.10", "port": 143, "service": "imap"},
    "code": "tls.legacy_version",
    "severity": "high",
    "port_class": "mail_client",
    "title": "TLS 1.0 or TLS 1.1 accepted",
    "detail": "accepts TLSv1.0, TLSv1.1",
    "evidence": ["TLSv1.0", "TLSv1.1"],
    "rules_version": "2026.11.1",
    "profile": "default",
}


class Problem(BaseModel):
    """One problem of a notice: a rule code on an endpoint, a certificate-expiry step
    (``code`` ``cert.expiry_step``, ``step`` in days), or a mailbox's finding from the
    mail-server logs (``account``, ``code`` ``clients.legacy_tls`` or
    ``clients.plaintext_login``; no ``endpoint_id``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [_PROBLEM, {"account": "info@example.org", "code": "clients.legacy_tls"}]
        }
    )

    endpoint_id: int | None = None
    account: str | None = None
    code: str
    step: int | None = None


class NoticeRead(BaseModel):
    """A notice and where it is in its lifecycle."""

    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [_NOTICE]})

    id: int
    customer_id: int
    account_manager_id: int | None
    status: NoticeStatus
    problem_hash: str = Field(description="SHA-256 of the problem set")
    problems: list[Problem] = Field(description="the problem set the sweep showed")
    sweep_id: int = Field(description="the sweep that opened (or reopened) it")
    last_sweep_id: int
    generation: int = Field(description="how often it was opened (regressions reopen it)")
    regressions: int
    exception_reason: str | None
    exception_until: dt.date | None
    created_at: dt.datetime
    updated_at: dt.datetime
    notified_at: dt.datetime | None
    acknowledged_at: dt.datetime | None
    resolved_at: dt.datetime | None


class EndpointRef(BaseModel):
    host: str
    ip: str
    port: int
    service: str


class FindingRead(BaseModel):
    """One stored finding of a sweep, with its endpoint."""

    model_config = ConfigDict(json_schema_extra={"examples": [_FINDING]})

    id: int
    sweep_id: int
    endpoint_id: int
    endpoint: EndpointRef
    code: str
    severity: SeverityName
    port_class: str
    title: str
    detail: str
    evidence: list[str]
    rules_version: str
    profile: str


class NoticeDetail(NoticeRead):
    """A notice with what the confirming re-scan showed and the findings of its sweep
    behind its problems."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{**_NOTICE, "confirmed": [_PROBLEM], "findings": [_FINDING]}]
        }
    )

    confirmed: list[dict[str, Any]] | None = Field(
        description="the problems the re-scan confirmed (with when it scanned)"
    )
    findings: list[FindingRead]


class ExceptionCreate(BaseModel):
    """Accepted risk: the notice stays quiet until ``until``, then opens again."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"reason": "legacy scanners until the new MFP arrives", "until": "2027-03-31"}
            ]
        },
    )

    reason: str = Field(min_length=1, max_length=2000)
    until: dt.date = Field(description="the last day of the exception (after today)")
