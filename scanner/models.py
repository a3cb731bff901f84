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


# -- deep checks (sslyze) -------------------------------------------------------------------

#: sslyze's ROBOT verdicts (``RobotScanResultEnum`` names), kept verbatim.
RobotResult = Literal[
    "VULNERABLE_WEAK_ORACLE",
    "VULNERABLE_STRONG_ORACLE",
    "NOT_VULNERABLE_NO_ORACLE",
    "NOT_VULNERABLE_RSA_NOT_SUPPORTED",
    "UNKNOWN_INCONSISTENT_RESULTS",
]
#: sslyze's session-resumption verdicts (``TlsResumptionSupportEnum`` names).
ResumptionSupport = Literal[
    "FULLY_SUPPORTED", "PARTIALLY_SUPPORTED", "NOT_SUPPORTED", "SERVER_IS_TLS_1_3_ONLY"
]
DeepStatus = Literal["ok", "partial", "error"]


@dataclass(frozen=True, slots=True)
class VulnerabilityCheck:
    """A yes/no vulnerability test (Heartbleed, OpenSSL CCS injection).

    ``vulnerable`` is None when the test did not run to the end: ``error`` says why.
    A failed test is never "not vulnerable".
    """

    vulnerable: bool | None
    error: ErrorInfo | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"vulnerable": self.vulnerable, "error": _error_dict(self.error)}


@dataclass(frozen=True, slots=True)
class SupportCheck:
    """Whether the server supports a feature (TLS compression, TLS_FALLBACK_SCSV)."""

    supported: bool | None
    error: ErrorInfo | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"supported": self.supported, "error": _error_dict(self.error)}


@dataclass(frozen=True, slots=True)
class RobotCheck:
    """ROBOT (Bleichenbacher oracle on RSA key exchange): sslyze's verdict, verbatim.

    ``vulnerable`` condenses it: True for ``VULNERABLE_*``, False for
    ``NOT_VULNERABLE_*``, None for ``UNKNOWN_INCONSISTENT_RESULTS`` or a failed test.
    """

    result: RobotResult | None
    error: ErrorInfo | None = None

    @property
    def vulnerable(self) -> bool | None:
        if self.result is None or self.result == "UNKNOWN_INCONSISTENT_RESULTS":
            return None
        return self.result.startswith("VULNERABLE")

    def to_dict(self) -> dict[str, Any]:
        return {
            "result": self.result,
            "vulnerable": self.vulnerable,
            "error": _error_dict(self.error),
        }


@dataclass(frozen=True, slots=True)
class RenegotiationCheck:
    """Renegotiation: RFC 5746 secure renegotiation, and client-initiated renegotiation.

    ``secure_renegotiation`` False means insecure (pre-RFC 5746) renegotiation.
    ``client_renegotiations_accepted`` counts the client-initiated renegotiations the
    server honoured out of sslyze's attempts; ``client_renegotiation_dos`` is sslyze's
    verdict that it honoured them all (a CPU-exhaustion vector).
    """

    secure_renegotiation: bool | None
    client_renegotiation_dos: bool | None
    client_renegotiations_accepted: int | None
    error: ErrorInfo | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "secure_renegotiation": self.secure_renegotiation,
            "client_renegotiation_dos": self.client_renegotiation_dos,
            "client_renegotiations_accepted": self.client_renegotiations_accepted,
            "error": _error_dict(self.error),
        }


@dataclass(frozen=True, slots=True)
class ResumptionRate:
    """How one TLS 1.2 resumption method fared: sslyze's verdict and its counts."""

    result: ResumptionSupport
    attempted: int
    successful: int

    def to_dict(self) -> dict[str, Any]:
        return {"result": self.result, "attempted": self.attempted, "successful": self.successful}


@dataclass(frozen=True, slots=True)
class ResumptionCheck:
    """TLS 1.2 session resumption with session IDs and with session tickets."""

    session_id: ResumptionRate | None
    tls_ticket: ResumptionRate | None
    error: ErrorInfo | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id.to_dict() if self.session_id else None,
            "tls_ticket": self.tls_ticket.to_dict() if self.tls_ticket else None,
            "error": _error_dict(self.error),
        }


@dataclass(frozen=True, slots=True)
class TrustStoreVerdict:
    """Whether one trust store (Mozilla, Apple, Microsoft, Android, Java, custom) trusts a chain.

    ``store`` is our stable key: ``mozilla``, ``apple``, ``microsoft``, ``android``,
    ``java`` or ``custom`` (the extra CA file); ``error`` is the verifier's reason when
    the chain is not trusted.
    """

    store: str
    version: str
    trusted: bool
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "trusted": self.trusted, "error": self.error}


@dataclass(frozen=True, slots=True)
class CertificateDeployment:
    """One certificate chain the server sends, as sslyze analysed it.

    Optional facts are None where sslyze could not decide them (e.g. no verified chain
    for ``chain_has_sha1_signature``; no stapled OCSP response for
    ``ocsp_response_trusted``).
    """

    subject: str
    fingerprint_sha256: str
    chain_length: int
    trust: tuple[TrustStoreVerdict, ...]
    extended_validation: bool
    ocsp_must_staple: bool
    sct_count: int | None
    ocsp_stapled: bool
    ocsp_response_trusted: bool | None
    chain_order_valid: bool | None
    chain_contains_anchor: bool | None
    chain_has_sha1_signature: bool | None
    legacy_symantec_anchor: bool | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "fingerprint_sha256": self.fingerprint_sha256,
            "chain_length": self.chain_length,
            "trust": {v.store: v.to_dict() for v in self.trust},
            "extended_validation": self.extended_validation,
            "ocsp_must_staple": self.ocsp_must_staple,
            "sct_count": self.sct_count,
            "ocsp_stapled": self.ocsp_stapled,
            "ocsp_response_trusted": self.ocsp_response_trusted,
            "chain_order_valid": self.chain_order_valid,
            "chain_contains_anchor": self.chain_contains_anchor,
            "chain_has_sha1_signature": self.chain_has_sha1_signature,
            "legacy_symantec_anchor": self.legacy_symantec_anchor,
        }


@dataclass(frozen=True, slots=True)
class CertificateChecks:
    """sslyze's certificate checks against its five trust stores (plus the extra CA file).

    ``deployments``: the distinct chains sent with our SNI (a server may send an RSA and
    an ECDSA chain to different clients); ``without_sni``: the chain sent to clients that
    send no SNI (None when that handshake failed).
    """

    sni: str | None
    deployments: tuple[CertificateDeployment, ...] = ()
    without_sni: CertificateDeployment | None = None
    error: ErrorInfo | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "sni": self.sni,
            "deployments": [d.to_dict() for d in self.deployments],
            "without_sni": self.without_sni.to_dict() if self.without_sni else None,
            "error": _error_dict(self.error),
        }


@dataclass(frozen=True, slots=True)
class DeepChecks:
    """The deep checks of one endpoint (sslyze), one field per check.

    A check that was not requested is None. A check that failed is present with its
    ``error`` set and its verdict fields None. ``error`` here is a failure of the whole
    run (no connectivity, timeout, the worker died): every requested check then carries
    it too. ``status``: ``ok`` (every requested check ran), ``partial`` (some failed) or
    ``error``.
    """

    heartbleed: VulnerabilityCheck | None = None
    ccs_injection: VulnerabilityCheck | None = None
    robot: RobotCheck | None = None
    renegotiation: RenegotiationCheck | None = None
    compression: SupportCheck | None = None
    fallback_scsv: SupportCheck | None = None
    session_resumption: ResumptionCheck | None = None
    certificate: CertificateChecks | None = None
    error: ErrorInfo | None = None
    sslyze_version: str | None = None
    duration_ms: int = 0

    @property
    def status(self) -> DeepStatus:
        if self.error is not None:
            return "error"
        checks = (
            self.heartbleed,
            self.ccs_injection,
            self.robot,
            self.renegotiation,
            self.compression,
            self.fallback_scsv,
            self.session_resumption,
            self.certificate,
        )
        return "partial" if any(c is not None and c.error for c in checks) else "ok"

    def to_dict(self) -> dict[str, Any]:
        def opt(check: _Check | None) -> dict[str, Any] | None:
            return check.to_dict() if check is not None else None

        return {
            "status": self.status,
            "error": _error_dict(self.error),
            "heartbleed": opt(self.heartbleed),
            "ccs_injection": opt(self.ccs_injection),
            "robot": opt(self.robot),
            "renegotiation": opt(self.renegotiation),
            "compression": opt(self.compression),
            "fallback_scsv": opt(self.fallback_scsv),
            "session_resumption": opt(self.session_resumption),
            "certificate": opt(self.certificate),
            "sslyze_version": self.sslyze_version,
            "duration_ms": self.duration_ms,
        }


def _error_dict(error: ErrorInfo | None) -> dict[str, Any] | None:
    return error.to_dict() if error is not None else None


_Check = (
    VulnerabilityCheck
    | SupportCheck
    | RobotCheck
    | RenegotiationCheck
    | ResumptionCheck
    | CertificateChecks
)


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
    #: sslyze's deep checks; None unless requested (``--deep``).
    deep: DeepChecks | None = None
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
            "deep": self.deep.to_dict() if self.deep else None,
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
