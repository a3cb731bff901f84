"""Typed scan results and their JSON form (the documented scan result document).

Every class is a frozen dataclass; ``to_dict()`` gives the JSON-ready form described in
``docs/result-document.md``. ``SCHEMA_VERSION`` changes whenever a field changes meaning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from scanner.services import TlsMode

SCHEMA_VERSION = "1.0"

#: Protocol versions in the order the document lists them.
PROTOCOLS: tuple[str, ...] = ("SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3")

CertStatus = Literal[
    "valid", "expired", "not_yet_valid", "self_signed", "untrusted", "hostname_mismatch"
]


@dataclass(frozen=True, slots=True)
class Target:
    """What was scanned: the name we were asked for, the address we connected to."""

    host: str
    ip: str
    port: int
    service: str
    tls_mode: TlsMode
    sni: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "ip": self.ip,
            "port": self.port,
            "service": self.service,
            "tls_mode": self.tls_mode,
            "sni": self.sni,
        }


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why an endpoint scan (or one part of it) failed: a documented kind and the phase."""

    kind: str
    phase: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "phase": self.phase, "message": self.message}


@dataclass(frozen=True, slots=True)
class StarttlsInfo:
    """Whether a STARTTLS service advertises the upgrade, and whether it is injectable."""

    offered: bool
    #: True when plaintext sent in the same packet as STARTTLS was answered after the
    #: upgrade (CVE-2011-0411 class); None when not checked.
    injection_vulnerable: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"offered": self.offered, "injection_vulnerable": self.injection_vulnerable}


@dataclass(frozen=True, slots=True)
class AuthInfo:
    """Authentication offered before and after TLS.

    ``plaintext_before_tls`` is True where a password can travel in clear: PLAIN/LOGIN
    (SMTP, IMAP AUTH=), IMAP LOGIN without LOGINDISABLED, POP3 USER, before the upgrade.
    ``active_check`` records the opt-in login attempt with made-up credentials:
    ``accepted`` (the server took the password in clear and judged it), ``refused``
    (e.g. ``538 Encryption required``), or None when not run.
    """

    before_tls: tuple[str, ...] = ()
    after_tls: tuple[str, ...] = ()
    plaintext_before_tls: bool = False
    active_check: Literal["accepted", "refused"] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "before_tls": list(self.before_tls),
            "after_tls": list(self.after_tls),
            "plaintext_before_tls": self.plaintext_before_tls,
            "active_check": self.active_check,
        }


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """The leaf certificate the server sent for our SNI, and how it validates."""

    subject: str
    san: tuple[str, ...]
    issuer: str
    not_before: str  # ISO 8601, UTC
    not_after: str
    days_left: int
    key: str  # e.g. "RSA 2048", "EC secp256r1"
    signature: str  # e.g. "sha256WithRSAEncryption"
    trusted: bool
    hostname_match: bool
    status: CertStatus
    fingerprint_sha256: str
    chain_length: int
    verify_message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "san": list(self.san),
            "issuer": self.issuer,
            "not_before": self.not_before,
            "not_after": self.not_after,
            "days_left": self.days_left,
            "key": self.key,
            "signature": self.signature,
            "trusted": self.trusted,
            "hostname_match": self.hostname_match,
            "status": self.status,
            "fingerprint_sha256": self.fingerprint_sha256,
            "chain_length": self.chain_length,
            "verify_message": self.verify_message,
        }


@dataclass(frozen=True, slots=True)
class EndpointResult:
    """The scan result document of one endpoint."""

    target: Target
    status: Literal["ok", "error"]
    error: ErrorInfo | None = None
    #: None for a version the scan could not decide (e.g. the endpoint failed first).
    protocols: dict[str, bool | None] = field(default_factory=dict)
    cipher_suites: dict[str, list[str]] = field(default_factory=dict)
    server_preference: bool | None = None
    #: TLS 1.3 key-exchange groups the server accepts, in its preference order.
    tls13_groups: list[str] | None = None
    starttls: StarttlsInfo | None = None
    auth: AuthInfo | None = None
    certificate: CertificateInfo | None = None
    #: Errors of parts that failed while the rest of the scan succeeded.
    partial_errors: list[ErrorInfo] = field(default_factory=list)
    connections: int = 0
    duration_ms: int = 0
    scanned_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "target": self.target.to_dict(),
            "status": self.status,
            "error": self.error.to_dict() if self.error else None,
            "protocols": {p: self.protocols.get(p) for p in PROTOCOLS},
            "cipher_suites": {k: list(v) for k, v in self.cipher_suites.items()},
            "server_preference": self.server_preference,
            "tls13_groups": self.tls13_groups,
            "starttls": self.starttls.to_dict() if self.starttls else None,
            "auth": self.auth.to_dict() if self.auth else None,
            "certificate": self.certificate.to_dict() if self.certificate else None,
            "partial_errors": [e.to_dict() for e in self.partial_errors],
            "connections": self.connections,
            "duration_ms": self.duration_ms,
            "scanned_at": self.scanned_at,
        }


# -- domains: discovery and the per-domain document --------------------------------------

HostStatus = Literal["ok", "nxdomain", "no_address", "cname", "error"]


@dataclass(frozen=True, slots=True)
class HostAddresses:
    """A host name and what it resolved to.

    ``status`` is ``ok`` with at least one address; ``nxdomain`` (the name does not
    exist), ``no_address`` (it exists but has no A/AAAA), ``cname`` (an MX or SRV target
    that is an alias, which RFC 5321/2782 forbid; its addresses are still followed and
    listed) or ``error`` (the resolver failed: ``note`` says how).
    """

    host: str
    addresses: tuple[str, ...]
    status: HostStatus = "ok"
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "addresses": list(self.addresses),
            "status": self.status,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class MxRecord:
    """One MX record with its resolved target."""

    preference: int
    target: HostAddresses

    def to_dict(self) -> dict[str, Any]:
        return {"preference": self.preference, **self.target.to_dict()}


@dataclass(frozen=True, slots=True)
class SrvRecord:
    """One RFC 6186/8314 SRV record (``_imaps._tcp`` …); target "." means not offered."""

    service: str  # submission, submissions, imap, imaps, pop3, pop3s
    priority: int
    weight: int
    port: int
    target: HostAddresses | None  # None for the "." target

    @property
    def offered(self) -> bool:
        return self.target is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "priority": self.priority,
            "weight": self.weight,
            "port": self.port,
            "offered": self.offered,
            "target": self.target.to_dict() if self.target else None,
        }


DiscoveryStatus = Literal["ok", "null_mx", "nxdomain", "no_mail", "error"]


@dataclass(frozen=True, slots=True)
class Discovery:
    """What DNS says serves a domain's mail and web.

    ``status``: ``ok``; ``null_mx`` (``MX 0 .``, RFC 7505: the domain accepts no mail —
    not an error); ``nxdomain``; ``no_mail`` (no MX and no address for implicit MX);
    ``error`` (the resolver failed; ``errors`` says how).
    """

    domain: str
    status: DiscoveryStatus
    mx: tuple[MxRecord, ...] = ()
    implicit_mx: bool = False
    null_mx: bool = False
    srv: tuple[SrvRecord, ...] = ()
    web: tuple[HostAddresses, ...] = ()
    errors: tuple[ErrorInfo, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "status": self.status,
            "mx": [m.to_dict() for m in self.mx],
            "implicit_mx": self.implicit_mx,
            "null_mx": self.null_mx,
            "srv": [s.to_dict() for s in self.srv],
            "web": [w.to_dict() for w in self.web],
            "errors": [e.to_dict() for e in self.errors],
        }


@dataclass(frozen=True, slots=True)
class DomainResult:
    """The per-domain document: discovery and the results of every endpoint it uses."""

    domain: str
    discovery: Discovery
    endpoints: tuple[EndpointResult, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "domain": self.domain,
            "discovery": self.discovery.to_dict(),
            "endpoints": [e.to_dict() for e in self.endpoints],
        }
