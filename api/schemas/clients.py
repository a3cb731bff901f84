"""Mail-client telemetry as the API shows it (``/v1/clients``)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ClientKind = Literal["legacy", "plaintext", "any"]

_ACCOUNT: dict[str, Any] = {
    "id": 17,
    "account": "alice@alpha.example",
    "domain": "alpha.example",
    "customer_id": 3,
    "customer": "Alpha GmbH",
    "account_manager_id": 2,
    "findings": ["clients.legacy_tls"],
    "logins": 42,
    "legacy_logins": 40,
    "plaintext_logins": 0,
    "first_seen": "2026-11-01T07:12:03Z",
    "last_seen": "2026-11-28T06:58:41Z",
    "legacy_first": "2026-11-01T07:12:03Z",
    "legacy_last": "2026-11-28T06:58:41Z",
    "plaintext_first": None,
    "plaintext_last": None,
    "protocols": {"TLSv1.0": 40, "TLSv1.3": 2},
    "mechanisms": {"PLAIN": 42},
    "services": {"imap": 30, "submission": 12},
    "ciphers": {"TLSv1.0 ECDHE-RSA-AES256-SHA": 40, "TLSv1.3 TLS_AES_256_GCM_SHA384": 2},
    "client_ips": {"198.51.100.23": 40, "203.0.113.9": 2},
    "client_ips_other": 0,
}


class ClientAccountRead(BaseModel):
    """An account's logins in the window: what it used, since when, from where."""

    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [_ACCOUNT]})

    id: int = Field(description="the account's id (the cursor of the list)")
    account: str = Field(description="the login name as the mail servers logged it")
    domain: str | None = Field(description="its domain (after @, or the account map)")
    customer_id: int | None = Field(description="null: the domain is not in the inventory")
    customer: str | None
    account_manager_id: int | None
    findings: list[str] = Field(
        description="clients.legacy_tls (TLS 1.0/1.1 logins), clients.plaintext_login"
    )
    logins: int
    legacy_logins: int = Field(description="logins over TLS 1.0, TLS 1.1 or SSL")
    plaintext_logins: int = Field(description="logins without TLS")
    first_seen: dt.datetime
    last_seen: dt.datetime
    legacy_first: dt.datetime | None = Field(description="first legacy login in the window")
    legacy_last: dt.datetime | None
    plaintext_first: dt.datetime | None = Field(description="first plaintext login in it")
    plaintext_last: dt.datetime | None
    protocols: dict[str, int] = Field(description="logins per protocol (none: without TLS)")
    mechanisms: dict[str, int] = Field(description="logins per SASL mechanism")
    services: dict[str, int] = Field(description="logins per service (imap, submission, …)")
    ciphers: dict[str, int] = Field(description="logins per protocol and cipher suite")
    client_ips: dict[str, int] = Field(description="the most frequent client addresses")
    client_ips_other: int = Field(description="logins from addresses not listed")


class ImpactCustomerRead(BaseModel):
    """One customer whose accounts would lose mail access."""

    model_config = ConfigDict(from_attributes=True)

    customer_id: int
    customer: str
    account_manager_id: int | None
    accounts: int = Field(description="its affected accounts")
    legacy_accounts: int = Field(description="… with TLS 1.0/1.1 logins")
    plaintext_accounts: int = Field(description="… with logins without TLS")
    only_legacy_accounts: int = Field(
        description="… that used nothing else in the window (every client of theirs breaks)"
    )
    last_seen: dt.datetime


class ImpactRead(BaseModel):
    """If TLS 1.0/1.1 (kind=legacy), plaintext login (plaintext) or both (any) were
    switched off today, these customers and accounts would lose mail access."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "since": "2026-10-30",
                    "days": 30,
                    "kind": "legacy",
                    "customers": 1,
                    "accounts": 3,
                    "only_affected_accounts": 1,
                    "unmapped_accounts": 0,
                    "customer_list": [
                        {
                            "customer_id": 3,
                            "customer": "Alpha GmbH",
                            "account_manager_id": 2,
                            "accounts": 3,
                            "legacy_accounts": 3,
                            "plaintext_accounts": 0,
                            "only_legacy_accounts": 1,
                            "last_seen": "2026-11-28T06:58:41Z",
                        }
                    ],
                }
            ]
        },
    )

    since: dt.date = Field(description="the window's first day")
    days: int
    kind: ClientKind
    customers: int
    accounts: int
    only_affected_accounts: int
    unmapped_accounts: int = Field(
        description="affected accounts whose domain is not in the inventory (0 for an "
        "account manager's key or a customer/manager filter)"
    )
    customer_list: list[ImpactCustomerRead]
