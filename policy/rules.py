"""The rule table: what counts as deprecated, weak or broken, and how severe, per port class.

Rules are data. Each has a stable ``code`` (stored with findings, used in profiles and
notices), a title, an explanation, a remedy, the source it rests on, and a default
severity per *port class*: the same fact weighs differently on a server-to-server relay
(port 25, opportunistic TLS), on the ports mail clients log in to, and on HTTPS. A rule
without a severity for a class does not apply to it (there is no STARTTLS on 443).

Port classes:

* ``smtp_relay``: SMTP on 25. TLS is opportunistic (RFC 3207): a sender that cannot
  negotiate TLS delivers in plaintext, so weak TLS is better than none and its findings
  weigh less; AUTH has no business there.
* ``mail_client``: submission (465, 587), IMAP (143, 993), POP3 (110, 995): people type
  passwords here, so anything that exposes them is critical.
* ``https``: 443, and any other TLS service the scanner learns about.

``RULES_VERSION`` changes whenever a rule's meaning, condition or default severity
changes, so that stored assessments say which table judged them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from typing import Any

__all__ = [
    "RULES",
    "RULES_VERSION",
    "PortClass",
    "Rule",
    "Severity",
    "port_class_of",
    "rule",
]

RULES_VERSION = "2026.11.1"


class Severity(StrEnum):
    """How bad a finding is; compares by rank (``Severity.HIGH > Severity.LOW``)."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank >= other.rank


_SEVERITY_RANK = {s: i for i, s in enumerate(Severity)}


class PortClass(StrEnum):
    """Which rule set judges an endpoint (see the module docstring)."""

    SMTP_RELAY = "smtp_relay"
    MAIL_CLIENT = "mail_client"
    HTTPS = "https"


_SERVICE_CLASS: dict[str, PortClass] = {
    "smtp": PortClass.SMTP_RELAY,
    "submission": PortClass.MAIL_CLIENT,
    "submissions": PortClass.MAIL_CLIENT,
    "imap": PortClass.MAIL_CLIENT,
    "imaps": PortClass.MAIL_CLIENT,
    "pop3": PortClass.MAIL_CLIENT,
    "pop3s": PortClass.MAIL_CLIENT,
    "https": PortClass.HTTPS,
}
_PORT_CLASS: dict[int, PortClass] = {
    25: PortClass.SMTP_RELAY,
    465: PortClass.MAIL_CLIENT,
    587: PortClass.MAIL_CLIENT,
    143: PortClass.MAIL_CLIENT,
    993: PortClass.MAIL_CLIENT,
    110: PortClass.MAIL_CLIENT,
    995: PortClass.MAIL_CLIENT,
    443: PortClass.HTTPS,
}


def port_class_of(target: Mapping[str, Any] | None) -> PortClass:
    """The port class of a result document's ``target``.

    The service decides (``smtp`` on port 2525 is still a relay); a target without a
    known service falls back to its port, and anything else is judged like HTTPS.
    """
    if not isinstance(target, Mapping):
        return PortClass.HTTPS
    service = target.get("service")
    if isinstance(service, str) and service.lower() in _SERVICE_CLASS:
        return _SERVICE_CLASS[service.lower()]
    port = target.get("port")
    if isinstance(port, int) and not isinstance(port, bool) and port in _PORT_CLASS:
        return _PORT_CLASS[port]
    return PortClass.HTTPS


@dataclass(frozen=True, slots=True)
class Rule:
    """One check: what it means, what to do, and how severe it is per port class.

    ``severity`` lists the port classes the rule applies to. ``notes`` add a sentence
    for one class (why a relay differs, say). ``default_enabled`` False means a profile
    must switch the rule on.
    """

    code: str
    title: str
    explanation: str
    remedy: str
    source: str
    severity: Mapping[PortClass, Severity]
    notes: Mapping[PortClass, str] = field(default_factory=dict)
    default_enabled: bool = True

    def applies_to(self, port_class: PortClass) -> bool:
        return port_class in self.severity

    def explain(self, port_class: PortClass) -> str:
        """The explanation, with the note for ``port_class`` if there is one."""
        note = self.notes.get(port_class)
        return f"{self.explanation} {note}" if note else self.explanation


R, C, H = PortClass.SMTP_RELAY, PortClass.MAIL_CLIENT, PortClass.HTTPS
INFO, LOW, MEDIUM, HIGH, CRITICAL = (
    Severity.INFO,
    Severity.LOW,
    Severity.MEDIUM,
    Severity.HIGH,
    Severity.CRITICAL,
)

_RELAY_OPPORTUNISTIC = (
    "On port 25 TLS is opportunistic: a sender that cannot negotiate TLS delivers in "
    "plaintext instead, so this weighs less here than on the ports clients log in to."
)
_RELAY_CERTS = (
    "Most sending servers do not verify certificates on port 25, but those enforcing "
    "MTA-STS (RFC 8461) or DANE (RFC 7672) refuse to deliver."
)

RULES: tuple[Rule, ...] = (
    # -- protocol versions ----------------------------------------------------------
    Rule(
        code="tls.ssl_version",
        title="SSLv2 or SSLv3 accepted",
        explanation=(
            "The endpoint accepts SSL 2.0 or SSL 3.0. Both are broken (DROWN, POODLE) and "
            "prohibited; no current client needs them."
        ),
        remedy="Disable SSLv2 and SSLv3 (e.g. OpenSSL MinProtocol = TLSv1.2).",
        source="RFC 6176 (SSLv2), RFC 7568 (SSLv3)",
        severity={R: HIGH, C: CRITICAL, H: CRITICAL},
        notes={R: _RELAY_OPPORTUNISTIC},
    ),
    Rule(
        code="tls.legacy_version",
        title="TLS 1.0 or TLS 1.1 accepted",
        explanation=(
            "The endpoint accepts TLS 1.0 or TLS 1.1, which are deprecated and are being "
            "switched off at the cut-off date. Clients that still negotiate them stop "
            "working then."
        ),
        remedy="Accept TLS 1.2 and TLS 1.3 only (e.g. ssl_protocols TLSv1.2 TLSv1.3).",
        source="RFC 8996",
        severity={R: LOW, C: HIGH, H: HIGH},
        notes={R: _RELAY_OPPORTUNISTIC},
    ),
    Rule(
        code="tls.only_legacy",
        title="No TLS 1.2 or TLS 1.3: breaks at the cut-off",
        explanation=(
            "The endpoint accepts neither TLS 1.2 nor TLS 1.3, only older versions. Once "
            "TLS 1.0/1.1 are switched off, no client can connect to it with TLS at all."
        ),
        remedy=(
            "Upgrade the TLS stack (OpenSSL 1.0.1 or newer) and enable TLS 1.2 and 1.3 "
            "before the cut-off date."
        ),
        source="RFC 8996; RFC 9325 section 3.1.1",
        severity={R: HIGH, C: CRITICAL, H: CRITICAL},
        notes={
            R: (
                "Sending servers that require TLS 1.2 deliver in plaintext instead, or "
                "not at all under MTA-STS or DANE."
            )
        },
    ),
    Rule(
        code="tls.no_tls13",
        title="TLS 1.3 not accepted",
        explanation=(
            "The endpoint accepts TLS 1.2 but not TLS 1.3. This is not deprecated, but "
            "TLS 1.3 is faster and removes legacy algorithms by design."
        ),
        remedy="Enable TLS 1.3 (OpenSSL 1.1.1 or newer).",
        source="RFC 8446; RFC 9325 section 3.1.1",
        severity={R: INFO, C: INFO, H: INFO},
    ),
    # -- cipher suites ----------------------------------------------------------------
    Rule(
        code="cipher.null",
        title="NULL cipher suites accepted (no encryption)",
        explanation=(
            "The endpoint accepts cipher suites that do not encrypt at all: traffic, "
            "passwords included, travels in clear inside 'TLS'."
        ),
        remedy="Remove eNULL suites from the cipher list (e.g. add !eNULL).",
        source="RFC 9325 section 4.1",
        severity={R: HIGH, C: CRITICAL, H: CRITICAL},
    ),
    Rule(
        code="cipher.anonymous",
        title="Anonymous cipher suites accepted (no authentication)",
        explanation=(
            "The endpoint accepts anonymous (DH_anon, ECDH_anon) suites that send no "
            "certificate, so a man in the middle can impersonate it."
        ),
        remedy="Remove aNULL suites from the cipher list (e.g. add !aNULL).",
        source="RFC 9325 section 4.1",
        severity={R: LOW, C: CRITICAL, H: CRITICAL},
        notes={
            R: (
                "On port 25 senders rarely authenticate the server anyway, and Postfix "
                "enables anonymous suites for opportunistic TLS by default; they still "
                "defeat MTA-STS and DANE."
            )
        },
    ),
    Rule(
        code="cipher.export",
        title="EXPORT cipher suites accepted",
        explanation=(
            "The endpoint accepts 1990s export-grade suites (40/56-bit keys, 512-bit key "
            "exchange), which can be broken in hours (FREAK, Logjam)."
        ),
        remedy="Remove EXPORT suites from the cipher list (e.g. add !EXP).",
        source="RFC 4346 appendix A.5; RFC 9325 section 4.1; CVE-2015-0204 (FREAK)",
        severity={R: HIGH, C: CRITICAL, H: CRITICAL},
        notes={R: _RELAY_OPPORTUNISTIC},
    ),
    Rule(
        code="cipher.rc4",
        title="RC4 cipher suites accepted",
        explanation="The endpoint accepts RC4, whose keystream biases leak plaintext.",
        remedy="Remove RC4 suites from the cipher list (e.g. add !RC4).",
        source="RFC 7465",
        severity={R: MEDIUM, C: HIGH, H: HIGH},
        notes={R: _RELAY_OPPORTUNISTIC},
    ),
    Rule(
        code="cipher.des",
        title="DES, 3DES or another 64-bit block cipher accepted",
        explanation=(
            "The endpoint accepts DES, 3DES, IDEA, RC2 or GOST 28147-89: single DES is "
            "brute-forceable and every 64-bit block cipher is open to Sweet32 birthday "
            "attacks on long connections."
        ),
        remedy="Remove DES and 3DES suites from the cipher list (e.g. add !DES:!3DES).",
        source="CVE-2016-2183 (Sweet32); RFC 5469; NIST SP 800-131A Rev. 2",
        severity={R: LOW, C: MEDIUM, H: MEDIUM},
        notes={R: _RELAY_OPPORTUNISTIC},
    ),
    Rule(
        code="cipher.no_forward_secrecy",
        title="No forward-secret cipher suite",
        explanation=(
            "None of the accepted suites uses an ephemeral key exchange (ECDHE, DHE or "
            "TLS 1.3): whoever obtains the private key later can decrypt recorded traffic."
        ),
        remedy="Enable ECDHE suites and TLS 1.3.",
        source="RFC 9325 section 4.2",
        severity={R: LOW, C: MEDIUM, H: MEDIUM},
        notes={R: _RELAY_OPPORTUNISTIC},
    ),
    Rule(
        code="cipher.no_aead",
        title="No AEAD cipher suite",
        explanation=(
            "None of the accepted suites is an AEAD suite (AES-GCM, ChaCha20-Poly1305, "
            "TLS 1.3): every connection uses CBC with MAC-then-encrypt (Lucky13, "
            "padding oracles) or a stream cipher."
        ),
        remedy="Enable TLS 1.2 AES-GCM/ChaCha20-Poly1305 suites and TLS 1.3.",
        source="RFC 9325 section 4.2",
        severity={R: INFO, C: LOW, H: LOW},
    ),
    # -- STARTTLS and passwords -------------------------------------------------------
    Rule(
        code="starttls.not_offered",
        title="STARTTLS not offered",
        explanation=(
            "The service does not offer STARTTLS (STLS on POP3), so every session on this "
            "port runs in plaintext."
        ),
        remedy="Configure a certificate and enable STARTTLS on this port.",
        source="RFC 3207 (SMTP), RFC 2595 (IMAP/POP3), RFC 8314",
        severity={R: MEDIUM, C: HIGH},
        notes={
            R: "Mail to this server travels unencrypted; senders do not fail, so nobody notices.",
            C: (
                "Clients can only log in with a password in clear, and once passwords "
                "before TLS are refused nobody can log in on this port."
            ),
        },
    ),
    Rule(
        code="starttls.injection",
        title="STARTTLS command injection",
        explanation=(
            "Plaintext sent in the same packet as STARTTLS was answered after the TLS "
            "upgrade: an attacker can inject commands into the encrypted session."
        ),
        remedy="Update the mail server; it must discard buffered input at STARTTLS.",
        source="CVE-2011-0411; RFC 3207 section 4.2",
        severity={R: MEDIUM, C: HIGH},
    ),
    Rule(
        code="auth.plaintext_before_tls",
        title="Password accepted before TLS",
        explanation=(
            "The server offers password login (PLAIN, LOGIN, IMAP LOGIN, POP3 USER) "
            "before TLS, so a client configured without encryption sends the password "
            "in clear."
        ),
        remedy=(
            "Refuse passwords before TLS (Dovecot: disable_plaintext_auth = yes; "
            "Postfix: smtpd_tls_auth_only = yes) and move clients to 993/995/465."
        ),
        source="RFC 8314 section 3; RFC 4954 section 4; RFC 3501 (LOGINDISABLED)",
        severity={R: HIGH, C: CRITICAL},
        notes={R: "AUTH on port 25 is unusual in itself; see auth.on_relay."},
    ),
    Rule(
        code="auth.on_relay",
        title="AUTH offered on port 25",
        explanation=(
            "The relay port advertises SMTP AUTH. Clients should submit on 465/587; "
            "AUTH on 25 invites password guessing against the MX."
        ),
        remedy="Offer AUTH only on submission (465/587).",
        source="RFC 6409; RFC 8314",
        severity={R: INFO},
    ),
    Rule(
        code="auth.plaintext_over_tls",
        title="Plaintext password mechanisms offered over TLS",
        explanation=(
            "After TLS the server still offers mechanisms that send the password itself "
            "(PLAIN, LOGIN, IMAP LOGIN, POP3 USER) rather than a challenge-response "
            "('encrypted password': CRAM-MD5, SCRAM, APOP). Counted only where the "
            "profile says so (plaintext_mechanisms_over_tls)."
        ),
        remedy="Offer challenge-response mechanisms only (e.g. SCRAM-SHA-256).",
        source="RFC 5802 (SCRAM); provider policy",
        severity={R: LOW, C: MEDIUM},
    ),
    # -- certificates -----------------------------------------------------------------
    Rule(
        code="cert.expired",
        title="Certificate expired",
        explanation="The certificate's validity ended; clients refuse the connection.",
        remedy="Renew the certificate (and automate renewal, e.g. ACME).",
        source="RFC 5280 section 4.1.2.5",
        severity={R: MEDIUM, C: CRITICAL, H: CRITICAL},
        notes={R: _RELAY_CERTS},
    ),
    Rule(
        code="cert.expiring",
        title="Certificate expiring soon",
        explanation="The certificate expires within the profile's warning window.",
        remedy="Renew the certificate now (and automate renewal, e.g. ACME).",
        source="RFC 5280 section 4.1.2.5",
        severity={R: LOW, C: MEDIUM, H: MEDIUM},
        notes={R: _RELAY_CERTS},
    ),
    Rule(
        code="cert.not_yet_valid",
        title="Certificate not yet valid",
        explanation="The certificate's validity has not started (or the server clock is wrong).",
        remedy="Check the server clock and the certificate's notBefore date.",
        source="RFC 5280 section 4.1.2.5",
        severity={R: MEDIUM, C: HIGH, H: HIGH},
        notes={R: _RELAY_CERTS},
    ),
    Rule(
        code="cert.untrusted",
        title="Certificate not trusted",
        explanation=(
            "The chain does not lead to a trusted root (unknown CA, missing intermediate, "
            "revoked or distrusted issuer): clients warn or refuse."
        ),
        remedy="Install a certificate from a public CA and send the full chain.",
        source="RFC 5280 section 6",
        severity={R: LOW, C: HIGH, H: HIGH},
        notes={R: _RELAY_CERTS},
    ),
    Rule(
        code="cert.self_signed",
        title="Self-signed certificate",
        explanation="The certificate signs itself, so no client can verify it.",
        remedy="Install a certificate from a public CA (e.g. Let's Encrypt).",
        source="RFC 5280 section 6",
        severity={R: LOW, C: HIGH, H: HIGH},
        notes={R: _RELAY_CERTS},
    ),
    Rule(
        code="cert.hostname_mismatch",
        title="Certificate not valid for the name",
        explanation=(
            "The certificate does not name the host the client connects to (RFC 6125), so "
            "clients warn or refuse."
        ),
        remedy=(
            "Use a certificate whose subjectAltName covers every name the service is reached by."
        ),
        source="RFC 6125; RFC 8314 section 4.1",
        severity={R: LOW, C: HIGH, H: HIGH},
        notes={R: _RELAY_CERTS},
    ),
    Rule(
        code="cert.weak_key",
        title="Weak certificate key",
        explanation="The certificate's RSA or DSA key is shorter than 2048 bits.",
        remedy="Reissue the certificate with an RSA 2048+ or ECDSA P-256 key.",
        source="CA/Browser Forum Baseline Requirements 6.1.5; NIST SP 800-131A Rev. 2",
        severity={R: LOW, C: MEDIUM, H: MEDIUM},
    ),
    Rule(
        code="cert.weak_signature",
        title="Certificate signed with MD5 or SHA-1",
        explanation=(
            "The certificate's signature uses MD5 or SHA-1, for which collisions are practical."
        ),
        remedy="Reissue the certificate with a SHA-256 signature.",
        source="RFC 6151; CA/Browser Forum Baseline Requirements 7.1.3",
        severity={R: LOW, C: MEDIUM, H: MEDIUM},
    ),
    # -- deep checks (sslyze) ---------------------------------------------------------
    Rule(
        code="vuln.heartbleed",
        title="Heartbleed",
        explanation=(
            "The server leaks process memory, private keys and passwords included, to "
            "anyone who asks (CVE-2014-0160)."
        ),
        remedy="Update OpenSSL, then replace the key and certificate and reset passwords.",
        source="CVE-2014-0160",
        severity={R: CRITICAL, C: CRITICAL, H: CRITICAL},
    ),
    Rule(
        code="vuln.ccs_injection",
        title="OpenSSL CCS injection",
        explanation="A man in the middle can force weak keys on the session (CVE-2014-0224).",
        remedy="Update OpenSSL.",
        source="CVE-2014-0224",
        severity={R: MEDIUM, C: HIGH, H: HIGH},
    ),
    Rule(
        code="vuln.robot",
        title="ROBOT (Bleichenbacher oracle)",
        explanation=(
            "The RSA key exchange is an oracle that lets an attacker decrypt recorded "
            "sessions or sign with the server's key."
        ),
        remedy="Update the TLS stack or disable RSA key-exchange suites (TLS_RSA_*).",
        source="CVE-2017-13099 and related; https://robotattack.org",
        severity={R: MEDIUM, C: HIGH, H: HIGH},
    ),
    Rule(
        code="vuln.insecure_renegotiation",
        title="Insecure renegotiation",
        explanation=(
            "The server does not support secure renegotiation (RFC 5746): an attacker can "
            "prefix data to a client's session."
        ),
        remedy="Update the TLS stack; enable RFC 5746 secure renegotiation.",
        source="RFC 5746; CVE-2009-3555",
        severity={R: LOW, C: MEDIUM, H: MEDIUM},
    ),
    Rule(
        code="vuln.client_renegotiation_dos",
        title="Client-initiated renegotiation accepted",
        explanation=(
            "The server honours every client-initiated renegotiation, which lets one "
            "client burn server CPU."
        ),
        remedy="Disable client-initiated renegotiation.",
        source="RFC 9325 section 3.5",
        severity={R: LOW, C: LOW, H: LOW},
    ),
    Rule(
        code="vuln.compression",
        title="TLS compression (CRIME)",
        explanation=(
            "TLS-level compression lets an attacker recover secrets such as cookies (CRIME)."
        ),
        remedy="Disable TLS compression.",
        source="RFC 7457 section 2.6; CVE-2012-4929",
        severity={R: LOW, C: MEDIUM, H: HIGH},
    ),
    Rule(
        code="vuln.no_fallback_scsv",
        title="No downgrade protection (TLS_FALLBACK_SCSV)",
        explanation=(
            "The server accepts legacy versions but not TLS_FALLBACK_SCSV, so an attacker "
            "can push clients down to them."
        ),
        remedy="Update the TLS stack, or disable the legacy versions.",
        source="RFC 7507",
        severity={R: INFO, C: LOW, H: LOW},
    ),
    # -- the scan itself --------------------------------------------------------------
    Rule(
        code="scan.error",
        title="Endpoint could not be scanned",
        explanation=(
            "The scan failed, so nothing is known about the endpoint's TLS: it is neither "
            "compliant nor known to break."
        ),
        remedy="Check that the endpoint is reachable and answers; rescan.",
        source="tlsfleet result document (status: error)",
        severity={R: INFO, C: INFO, H: INFO},
    ),
)


@cache
def _by_code() -> dict[str, Rule]:
    table: dict[str, Rule] = {}
    for entry in RULES:
        if entry.code in table:
            raise ValueError(f"rule {entry.code} listed twice")
        table[entry.code] = entry
    return table


def rule(code: str) -> Rule:
    """The rule with this code; an unknown code raises ValueError naming the known ones."""
    try:
        return _by_code()[code]
    except KeyError:
        known = ", ".join(sorted(_by_code()))
        raise ValueError(f"unknown rule code {code!r} (known: {known})") from None
