"""The fleet's state in PostgreSQL: inventory, sweeps, endpoints and scan results.

Lifecycle in one paragraph: the inventory (account managers → customers → domains) is
imported or edited through the API. A sweep covers a set of domains; its discovery
step records, per domain, what DNS said (``sweep_domains``) and which endpoints the
domain uses (``domain_endpoints``); every unique endpoint (``endpoints``, one row per
``(ip, port, service)`` for all time) gets exactly one ``scan_results`` row per sweep
(the unique constraint is what makes retried jobs idempotent). Extra certificates,
for endpoints reached under several names, go to ``scan_certificates``. When all
results are in, the sweep is closed and its diff against the previous sweep stored.

Relationships are ``lazy="raise"``: load what you need explicitly in a repository.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

#: Constraint names Alembic can rely on (and `alembic check` compares).
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SWEEP_STATUSES = ("pending", "discovering", "scanning", "closing", "done", "cancelled", "failed")
SWEEP_KINDS = ("nightly", "adhoc")
ENDPOINT_HOW = ("mx", "implicit_mx", "srv", "web", "profile")
RESULT_STATUSES = ("ok", "error")
API_ROLES = ("admin", "operator", "viewer", "account_manager")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    """The SQL of a CHECK that ``column`` holds one of ``values`` (constants above)."""
    return f"{column} IN ({','.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSONB,
        list[str]: ARRAY(Text),
    }


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class AccountManager(Base):
    """A person at the provider who is told about their customers' problems."""

    __tablename__ = "account_managers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    created_at: Mapped[dt.datetime] = _now()

    customers: Mapped[list[Customer]] = relationship(back_populates="account_manager", lazy="raise")


class Customer(Base):
    """A customer of the provider; owns domains; has at most one account manager."""

    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    account_manager_id: Mapped[int | None] = mapped_column(
        ForeignKey("account_managers.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[dt.datetime] = _now()

    account_manager: Mapped[AccountManager | None] = relationship(
        back_populates="customers", lazy="raise"
    )
    domains: Mapped[list[Domain]] = relationship(back_populates="customer", lazy="raise")


class Domain(Base):
    """A hosted domain, by its A-label name (lower case, no trailing dot)."""

    __tablename__ = "domains"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(253), unique=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()

    customer: Mapped[Customer] = relationship(back_populates="domains", lazy="raise")


class Endpoint(Base):
    """One (ip, port, service) for all time; results hang off it per sweep."""

    __tablename__ = "endpoints"
    __table_args__ = (
        UniqueConstraint("ip", "port", "service", name="uq_endpoints_ip_port_service"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ip: Mapped[str] = mapped_column(String(45))
    port: Mapped[int] = mapped_column(Integer)
    service: Mapped[str] = mapped_column(String(20))
    #: The host name (and SNI) the endpoint is scanned under.
    host: Mapped[str] = mapped_column(String(253))
    first_seen: Mapped[dt.datetime] = _now()
    last_seen: Mapped[dt.datetime] = _now()


class Sweep(Base):
    """One scan of (part of) the fleet: discovery, one result per endpoint, a diff."""

    __tablename__ = "sweeps"
    __table_args__ = (
        CheckConstraint(_one_of("status", SWEEP_STATUSES), name="status"),
        CheckConstraint(_one_of("kind", SWEEP_KINDS), name="kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(12), server_default="pending", index=True)
    #: {"all": true} or {"customers": [ids]} or {"domains": [names]}.
    scope: Mapped[dict[str, Any]] = mapped_column(JSONB)
    #: Scan options (quick or full, deep, …) as given when the sweep started.
    options: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))
    total_endpoints: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[dt.datetime] = _now()
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: Against the previous closed sweep: newly legacy, fixed, new and vanished endpoints.
    diff: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    #: A nightly sweep's scheduled time (the cron tick that started it); unique, so that
    #: two schedulers firing the same tick start one sweep. NULL for every other sweep.
    scheduled_for: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), unique=True)


class SweepDomain(Base):
    """A domain in a sweep, with what discovery found for it (the Discovery document)."""

    __tablename__ = "sweep_domains"

    sweep_id: Mapped[int] = mapped_column(
        ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True
    )
    domain_id: Mapped[int] = mapped_column(
        ForeignKey("domains.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    status: Mapped[str] = mapped_column(String(12))
    discovery: Mapped[dict[str, Any]] = mapped_column(JSONB)


class DomainEndpoint(Base):
    """Which endpoints a domain used in a sweep, through which host name, found how."""

    __tablename__ = "domain_endpoints"
    __table_args__ = (
        UniqueConstraint(
            "sweep_id", "domain_id", "endpoint_id", "host", name="uq_domain_endpoints_use"
        ),
        Index("ix_domain_endpoints_endpoint_sweep", "endpoint_id", "sweep_id"),
        # A domain's endpoints across sweeps (its history), and ON DELETE CASCADE from
        # domains, would otherwise scan the whole table.
        Index("ix_domain_endpoints_domain_sweep", "domain_id", "sweep_id"),
        CheckConstraint(_one_of("how", ENDPOINT_HOW), name="how"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"))
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id", ondelete="CASCADE"))
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"))
    host: Mapped[str] = mapped_column(String(253))
    how: Mapped[str] = mapped_column(String(12))


class ScanResult(Base):
    """Exactly one per (sweep, endpoint): the result document plus filterable columns.

    The columns are derived from ``document`` when the row is written (one mapping
    function in the repository); they exist for dashboards and filters only.
    """

    __tablename__ = "scan_results"
    __table_args__ = (
        UniqueConstraint("sweep_id", "endpoint_id", name="uq_scan_results_sweep_endpoint"),
        Index("ix_scan_results_endpoint_scanned", "endpoint_id", "scanned_at"),
        # A sweep's failed results (its progress): without it, counting them reads every
        # result of the sweep from the heap (166 ms at 100,000 endpoints; 15 ms with it).
        Index(
            "ix_scan_results_sweep_errors", "sweep_id", postgresql_where=text("status = 'error'")
        ),
        CheckConstraint(_one_of("status", RESULT_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"))
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(8))
    error_kind: Mapped[str | None] = mapped_column(String(32))
    ssl2: Mapped[bool | None] = mapped_column(Boolean)
    ssl3: Mapped[bool | None] = mapped_column(Boolean)
    tls10: Mapped[bool | None] = mapped_column(Boolean)
    tls11: Mapped[bool | None] = mapped_column(Boolean)
    tls12: Mapped[bool | None] = mapped_column(Boolean)
    tls13: Mapped[bool | None] = mapped_column(Boolean)
    #: Rank of the lowest/highest accepted version: 0 SSLv2 … 5 TLS 1.3; NULL if none.
    lowest_protocol: Mapped[int | None] = mapped_column(SmallInteger)
    highest_protocol: Mapped[int | None] = mapped_column(SmallInteger)
    plaintext_before_tls: Mapped[bool | None] = mapped_column(Boolean)
    starttls_offered: Mapped[bool | None] = mapped_column(Boolean)
    cert_status: Mapped[str | None] = mapped_column(String(20))
    cert_not_after: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    connections: Mapped[int] = mapped_column(Integer, server_default="0")
    duration_ms: Mapped[int] = mapped_column(Integer, server_default="0")
    scanned_at: Mapped[dt.datetime] = _now()
    document: Mapped[dict[str, Any]] = mapped_column(JSONB)


class ScanCertificate(Base):
    """A certificate fetched for one more SNI name of an endpoint in a sweep."""

    __tablename__ = "scan_certificates"

    sweep_id: Mapped[int] = mapped_column(
        ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True
    )
    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), primary_key=True
    )
    sni: Mapped[str] = mapped_column(String(253), primary_key=True)
    #: The CertificateInfo document, or NULL when no handshake succeeded for that name.
    certificate: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class ApiKey(Base):
    """A key for the HTTP API, stored only as the SHA-256 of its secret.

    A key reads ``tlsf_<prefix>_<secret>``: ``prefix`` is public (it finds the row and
    names the key in lists and logs), the digest of the whole key is compared in
    constant time. Created by ``tlsfleet apikey create`` or an admin through the API;
    revoking sets ``revoked_at`` (the row stays, for the record). An ``account_manager``
    key is bound to exactly one account manager; other roles to none.
    """

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint(_one_of("role", API_ROLES), name="role"),
        CheckConstraint(
            "(role = 'account_manager') = (account_manager_id IS NOT NULL)",
            name="account_manager",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    #: Hex SHA-256 of the whole key.
    digest: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200), server_default="")
    role: Mapped[str] = mapped_column(String(20))
    account_manager_id: Mapped[int | None] = mapped_column(
        ForeignKey("account_managers.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[dt.datetime] = _now()
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class DashboardSession(Base):
    """A log-in to the built-in dashboard (``api/dashboard``): the SHA-256 of the random
    session id in the browser's cookie, the API key it was opened with, and the token
    its forms carry against cross-site requests.

    Created when a key is pasted into the log-in page; deleted on log-out. A session
    ends at ``expires_at``, and with its key: a revoked key's sessions are refused (and
    a deleted key's rows go with it). Expired rows are removed at each log-in.
    """

    __tablename__ = "dashboard_sessions"

    #: Hex SHA-256 of the session id (the cookie's value is never stored).
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = _now()
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)


# -- current state: denormalised for filters and statistics (fleet/repositories/reports.py)


class EndpointLatest(Base):
    """The current state of an endpoint: its newest result and copies of its filter columns.

    One row per endpoint that has a result. Written only by
    :func:`fleet.repositories.reports.advance_latest`, which ``record_result(s)`` calls for
    every result stored anew; a row only moves forward, to a result with a later
    ``(scanned_at, result_id)``, so a late-arriving older result never replaces a newer
    one. The columns are those of ``scan_results`` (plus the endpoint's port and
    service, which never change); partial indexes serve the selective filters.
    """

    __tablename__ = "endpoint_latest"
    __table_args__ = (
        Index("ix_endpoint_latest_tls10", "endpoint_id", postgresql_where=text("tls10")),
        Index("ix_endpoint_latest_tls11", "endpoint_id", postgresql_where=text("tls11")),
        Index(
            "ix_endpoint_latest_legacy",
            "endpoint_id",
            postgresql_where=text("lowest_protocol <= 3"),
        ),
        Index(
            "ix_endpoint_latest_plaintext",
            "endpoint_id",
            postgresql_where=text("plaintext_before_tls"),
        ),
        Index(
            "ix_endpoint_latest_starttls_missing",
            "endpoint_id",
            postgresql_where=text("starttls_offered = false"),
        ),
        Index(
            "ix_endpoint_latest_error",
            "error_kind",
            "endpoint_id",
            postgresql_where=text("status = 'error'"),
        ),
        Index("ix_endpoint_latest_cert_not_after", "cert_not_after", "endpoint_id"),
        Index("ix_endpoint_latest_port_service", "port", "service", "endpoint_id"),
    )

    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), primary_key=True
    )
    result_id: Mapped[int] = mapped_column(
        ForeignKey("scan_results.id", ondelete="CASCADE"), index=True
    )
    sweep_id: Mapped[int] = mapped_column(Integer)
    scanned_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    port: Mapped[int] = mapped_column(Integer)
    service: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(8))
    error_kind: Mapped[str | None] = mapped_column(String(32))
    ssl2: Mapped[bool | None] = mapped_column(Boolean)
    ssl3: Mapped[bool | None] = mapped_column(Boolean)
    tls10: Mapped[bool | None] = mapped_column(Boolean)
    tls11: Mapped[bool | None] = mapped_column(Boolean)
    tls12: Mapped[bool | None] = mapped_column(Boolean)
    tls13: Mapped[bool | None] = mapped_column(Boolean)
    lowest_protocol: Mapped[int | None] = mapped_column(SmallInteger)
    highest_protocol: Mapped[int | None] = mapped_column(SmallInteger)
    plaintext_before_tls: Mapped[bool | None] = mapped_column(Boolean)
    starttls_offered: Mapped[bool | None] = mapped_column(Boolean)
    cert_status: Mapped[str | None] = mapped_column(String(20))
    cert_not_after: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class DomainLatest(Base):
    """A domain's current sweep: the newest sweep in which one of its endpoints got a
    result. Moves forward only, together with its ``domain_endpoint_latest`` rows."""

    __tablename__ = "domain_latest"

    domain_id: Mapped[int] = mapped_column(
        ForeignKey("domains.id", ondelete="CASCADE"), primary_key=True
    )
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), index=True)


class DomainEndpointLatest(Base):
    """Which endpoints a domain uses now: its ``domain_endpoints`` of its current sweep
    (``domain_latest``), one row per (domain, endpoint). The path from an endpoint to
    its domains, customers and account managers for filters and statistics."""

    __tablename__ = "domain_endpoint_latest"
    __table_args__ = (Index("ix_domain_endpoint_latest_endpoint", "endpoint_id", "domain_id"),)

    domain_id: Mapped[int] = mapped_column(
        ForeignKey("domains.id", ondelete="CASCADE"), primary_key=True
    )
    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), primary_key=True
    )


class SweepStats(Base):
    """Fleet statistics of one closed sweep (``fleet.repositories.reports.sweep_stats``),
    stored when the sweep closes or when first asked for; the trend reads these."""

    __tablename__ = "sweep_stats"

    sweep_id: Mapped[int] = mapped_column(
        ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True
    )
    computed_at: Mapped[dt.datetime] = _now()
    #: {"all": counts, "account_managers": {id: counts}} (see reports.FleetCounts).
    stats: Mapped[dict[str, Any]] = mapped_column(JSONB)


# -- webhooks (fleet/repositories/webhooks.py, fleet/deliveries.py) -------------------------

WEBHOOK_DELIVERY_STATUSES = ("collecting", "pending", "delivered", "dead")


class WebhookSubscription(Base):
    """Where to send which events: per account manager, or global (no manager).

    ``secret`` is the HMAC key the deliveries are signed with; it has to be kept as it
    is (it signs), is shown once when the subscription is created and never again, and
    is never logged. ``digest``: the events of one sweep go out as one delivery when
    the sweep completes, instead of one delivery each.
    """

    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), server_default="")
    account_manager_id: Mapped[int | None] = mapped_column(
        ForeignKey("account_managers.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(ARRAY(Text))
    digest: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[dt.datetime] = _now()


class WebhookDelivery(Base):
    """One event (or one digest of a sweep's events) for one subscription, and its log.

    ``event_id`` is the idempotency key the receiver sees; (subscription, event) is
    unique, so an event emitted twice is delivered as one. ``status``: ``collecting``
    (a digest still gathering its sweep's events), ``pending`` (to be sent at
    ``next_attempt_at``), ``delivered``, ``dead`` (gave up after the last attempt;
    redelivery through the API sets it pending again).
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("subscription_id", "event_id", name="uq_webhook_deliveries_event"),
        CheckConstraint(_one_of("status", WEBHOOK_DELIVERY_STATUSES), name="status"),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_webhook_deliveries_subscription", "subscription_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE")
    )
    event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(40))
    #: The envelope as sent (docs/webhooks.md); a digest's ``data.events`` grows while
    #: it is collecting.
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    #: The sweep a digest collects (NULL for single events).
    sweep_id: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(12), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[dt.datetime] = _now()
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _now()
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


# -- findings and notices (fleet/findings.py, fleet/notices.py) ----------------------------

NOTICE_STATUSES = ("open", "notified", "acknowledged", "exception", "resolved", "dismissed")
#: Statuses in which a notice covers its problems (no second notice for them).
NOTICE_ACTIVE = ("open", "notified", "acknowledged", "exception")


class Finding(Base):
    """One rule that fired on one endpoint in one closed sweep (``policy.evaluate``).

    Written once per sweep by :func:`fleet.findings.evaluate_sweep` (insert-once per
    ``(sweep, endpoint, code)``: evaluating a sweep again stores the same rows), judged
    at the sweep's ``finished_at`` under the deployment's profile. Domains, customers
    and account managers are reached through the sweep's ``domain_endpoints``
    (``(endpoint_id, sweep_id)`` is indexed there). ``severity_rank`` orders severities
    (0 info … 4 critical) for "at least" filters.
    """

    __tablename__ = "findings"
    __table_args__ = (
        UniqueConstraint("sweep_id", "endpoint_id", "code", name="uq_findings_sweep_endpoint_code"),
        Index("ix_findings_sweep_rank", "sweep_id", "severity_rank"),
        Index("ix_findings_sweep_code", "sweep_id", "code"),
        Index("ix_findings_endpoint_sweep", "endpoint_id", "sweep_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"))
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(40))
    severity: Mapped[str] = mapped_column(String(10))
    severity_rank: Mapped[int] = mapped_column(SmallInteger)
    port_class: Mapped[str] = mapped_column(String(12))
    title: Mapped[str] = mapped_column(Text)
    detail: Mapped[str] = mapped_column(Text)
    evidence: Mapped[list[str]] = mapped_column(JSONB)
    rules_version: Mapped[str] = mapped_column(String(20))
    profile: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = _now()


class FindingRun(Base):
    """That a sweep's findings are stored (and when its notices were brought up to
    date): the marker that makes the evaluation job idempotent and lets the reconciler
    find closed sweeps whose job was lost."""

    __tablename__ = "finding_runs"

    sweep_id: Mapped[int] = mapped_column(
        ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True
    )
    rules_version: Mapped[str] = mapped_column(String(20))
    profile: Mapped[str] = mapped_column(String(100))
    #: When the sweep was judged (its finished_at): cert expiry is relative to it.
    judged_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    findings: Mapped[int] = mapped_column(Integer)
    computed_at: Mapped[dt.datetime] = _now()
    notices_synced_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Notice(Base):
    """One customer's notice about one problem set, and its lifecycle.

    The problem set (``problems``: ``[{"endpoint_id", "code", "step"}]``, sorted) is the
    customer's findings of at least the configured severity plus the certificate-expiry
    steps reached; ``problem_hash`` is its SHA-256, so an unchanged set never opens a
    second notice. Status::

        open ──(re-scan confirms)──▶ notified ──▶ acknowledged
          │  └─(re-scan confirms nothing)──▶ dismissed (never sent)
          └──────────── any active ──(a later sweep shows none)──▶ resolved
        resolved ──(the set shows again)──▶ open (regression: finding.regressed)
        open/notified/acknowledged ──(accepted risk)──▶ exception ──(until passes)──▶ open

    ``generation`` counts (re)openings: each one's ``notice.opened`` is its own event.
    """

    __tablename__ = "notices"
    __table_args__ = (
        CheckConstraint(_one_of("status", NOTICE_STATUSES), name="status"),
        Index("ix_notices_customer_hash", "customer_id", "problem_hash"),
        Index("ix_notices_status", "status", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    account_manager_id: Mapped[int | None] = mapped_column(
        ForeignKey("account_managers.id", ondelete="SET NULL"), index=True
    )
    status: Mapped[str] = mapped_column(String(12), server_default="open")
    problem_hash: Mapped[str] = mapped_column(String(64))
    problems: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    #: What the confirming re-scan showed (the problems it confirmed, per endpoint).
    confirmed: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    #: The sweep that opened (or last reopened) it, and the last sweep that judged it.
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"))
    last_sweep_id: Mapped[int] = mapped_column(Integer)
    generation: Mapped[int] = mapped_column(Integer, server_default="1")
    regressions: Mapped[int] = mapped_column(Integer, server_default="0")
    exception_reason: Mapped[str | None] = mapped_column(Text)
    exception_until: Mapped[dt.date | None] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()
    notified_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class CertificateWarning(Base):
    """A certificate-expiry step (60, 14, 4 days …) warned about once: per customer,
    endpoint, certificate (by its ``not_after``) and step. A renewed certificate has a
    new ``not_after`` and so warns again at each step."""

    __tablename__ = "certificate_warnings"

    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), primary_key=True
    )
    not_after: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    notice_id: Mapped[int | None] = mapped_column(ForeignKey("notices.id", ondelete="SET NULL"))
    sweep_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = _now()


# -- mail-log telemetry (fleet/logs, fleet/repositories/clients.py) -------------------------


class MailAccount(Base):
    """A mailbox or SASL account seen logging in, by its name in lower case.

    ``domain`` is where the account belongs (the part after ``@``, or the deployment's
    account map) as of its last ingest; it joins ``domains.name`` to reach the customer
    and account manager. NULL, or a name the inventory does not have: unmapped.
    """

    __tablename__ = "mail_accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account: Mapped[str] = mapped_column(String(320), unique=True)
    domain: Mapped[str | None] = mapped_column(String(253), index=True)
    created_at: Mapped[dt.datetime] = _now()


class MailClientDay(Base):
    """One account's logins on one (UTC) day, summed over every ingest.

    Written only by :func:`fleet.repositories.clients.add_days`, an upsert that adds
    counts (``ON CONFLICT … DO UPDATE``; the maps merged in Python under an advisory
    lock): the ingest's checkpoints (``log_sources``) and stream deduplication
    (``log_seen_connections``) make sure each connection is added once. The JSONB maps
    count per key (``protocols``: ``TLSv1.0`` …, ``none``, ``secured``, ``unknown``;
    ``ciphers``: ``"TLSv1.0 <cipher>"``; ``mechanisms``; ``services``); ``client_ips``
    keeps the first 20 addresses of the day, logins from others are counted in
    ``client_ips_other``.
    """

    __tablename__ = "mail_client_days"
    __table_args__ = (
        Index("ix_mail_client_days_day", "day", "account_id"),
        Index(
            "ix_mail_client_days_legacy",
            "day",
            "account_id",
            postgresql_where=text("legacy_logins > 0 OR plaintext_logins > 0"),
        ),
    )

    account_id: Mapped[int] = mapped_column(
        ForeignKey("mail_accounts.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    logins: Mapped[int] = mapped_column(Integer)
    legacy_logins: Mapped[int] = mapped_column(Integer)
    plaintext_logins: Mapped[int] = mapped_column(Integer)
    unknown_logins: Mapped[int] = mapped_column(Integer)
    protocols: Mapped[dict[str, Any]] = mapped_column(JSONB)
    ciphers: Mapped[dict[str, Any]] = mapped_column(JSONB)
    mechanisms: Mapped[dict[str, Any]] = mapped_column(JSONB)
    services: Mapped[dict[str, Any]] = mapped_column(JSONB)
    client_ips: Mapped[dict[str, Any]] = mapped_column(JSONB)
    client_ips_other: Mapped[int] = mapped_column(Integer)
    first_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    legacy_first: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    legacy_last: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    plaintext_first: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    plaintext_last: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class LogSource(Base):
    """How far a log file has been ingested: its identity (SHA-256 of its first line),
    the byte offset after the last line counted, and the Postfix connections still open
    there (``state``), all updated in the transaction that adds those lines' counts, so
    ingesting the file again (or after it grew) counts nothing twice."""

    __tablename__ = "log_sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    identity: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(Text)
    offset: Mapped[int] = mapped_column(BigInteger, server_default="0")
    lines: Mapped[int] = mapped_column(BigInteger, server_default="0")
    state: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'"))
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()


class LogSeenConnection(Base):
    """A connection from a stream (standard input) already counted: (its day, a 16-byte
    hash of its identity). Inserted in the transaction that counts it; rows older than
    ``TLSFLEET_LOG_DEDUPE_DAYS`` are pruned."""

    __tablename__ = "log_seen_connections"

    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    key: Mapped[bytes] = mapped_column(LargeBinary(16), primary_key=True)
