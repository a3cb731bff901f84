"""Realistic result documents for the policy tests, built with scanner.models.

The builders give *clean* endpoints (nothing for any rule to find) of each port class;
tests change one fact with :func:`dataclasses.replace` and look at what the policy says.
The few tests here check that the builders are what the tests assume.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from policy import default_profile, evaluate
from scanner.models import (
    AuthInfo,
    CertificateInfo,
    DeepChecks,
    EndpointResult,
    ErrorInfo,
    RenegotiationCheck,
    ResumptionCheck,
    ResumptionRate,
    RobotCheck,
    StarttlsInfo,
    SupportCheck,
    Target,
    VulnerabilityCheck,
)

NOW = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)

MODERN_13 = ["TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"]
INTERMEDIATE_12 = [
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
]
#: What a Debian 12 nginx with ``ssl_protocols TLSv1.2 TLSv1.3`` and OpenSSL's default
#: cipher list accepts in TLS 1.2: ECDHE and DHE AEAD suites and the CBC ones.
DEBIAN_DEFAULT_12 = [
    *INTERMEDIATE_12,
    "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
]
LEGACY_10 = [
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
]

SERVICES: dict[str, tuple[int, str]] = {
    "smtp": (25, "starttls"),
    "submission": (587, "starttls"),
    "submissions": (465, "implicit"),
    "imap": (143, "starttls"),
    "imaps": (993, "implicit"),
    "pop3": (110, "starttls"),
    "pop3s": (995, "implicit"),
    "https": (443, "implicit"),
}

#: Clean mechanisms per dialogue: nothing in clear before TLS, the usual set after.
_AFTER_TLS = {
    "smtp": ("PLAIN", "LOGIN"),
    "imap": ("PLAIN", "LOGIN", "IMAP-LOGIN"),
    "pop3": ("PLAIN", "USER"),
}
_DIALOGUE = {
    "smtp": "smtp",
    "submission": "smtp",
    "submissions": "smtp",
    "imap": "imap",
    "imaps": "imap",
    "pop3": "pop3",
    "pop3s": "pop3",
}


def protocols(*accepted: str) -> dict[str, bool | None]:
    versions = ("SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3")
    return {v: v in accepted for v in versions}


def certificate(
    host: str = "mail.example.net",
    *,
    key: str = "RSA 2048",
    signature: str = "sha256WithRSAEncryption",
    not_before: datetime = NOW - timedelta(days=10),
    lifetime_days: int = 90,
    status: str = "valid",
    trusted: bool = True,
    hostname_match: bool = True,
) -> CertificateInfo:
    not_after = not_before + timedelta(days=lifetime_days)
    return CertificateInfo(
        subject=f"CN={host}",
        san=(host,),
        issuer="CN=R11,O=Let's Encrypt,C=US",
        not_before=not_before.strftime("%Y-%m-%dT%H:%M:%SZ"),
        not_after=not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
        days_left=(not_after - NOW).days,
        key=key,
        signature=signature,
        trusted=trusted,
        hostname_match=hostname_match,
        status=status,  # type: ignore[arg-type]
        fingerprint_sha256="ab" * 32,
        chain_length=2,
    )


def clean(service: str = "imaps", host: str = "mail.example.net") -> EndpointResult:
    """A well-run endpoint: TLS 1.2 and 1.3, ECDHE AEAD suites, a valid certificate."""
    port, mode = SERVICES[service]
    dialogue = _DIALOGUE.get(service)
    starttls = (
        StarttlsInfo(offered=True, injection_vulnerable=False) if mode == "starttls" else None
    )
    auth = None
    if dialogue is not None:
        # Port 25 normally offers no AUTH at all; client ports only after TLS.
        after = () if service == "smtp" else _AFTER_TLS[dialogue]
        auth = AuthInfo(before_tls=(), after_tls=after, plaintext_before_tls=False)
    return EndpointResult(
        target=Target(host, "192.0.2.10", port, service, mode, host),  # type: ignore[arg-type]
        status="ok",
        protocols=protocols("TLSv1.2", "TLSv1.3"),
        cipher_suites={"TLSv1.2": list(INTERMEDIATE_12), "TLSv1.3": list(MODERN_13)},
        server_preference=False,
        tls13_groups=["x25519", "secp256r1", "secp384r1"],
        starttls=starttls,
        auth=auth,
        certificate=certificate(host),
        connections=12,
        duration_ms=140,
        scanned_at="2026-11-28T02:00:13Z",
    )


def clean_deep() -> DeepChecks:
    """sslyze's deep checks of a well-run endpoint: nothing vulnerable."""
    rate = ResumptionRate("FULLY_SUPPORTED", 5, 5)
    return DeepChecks(
        heartbleed=VulnerabilityCheck(vulnerable=False),
        ccs_injection=VulnerabilityCheck(vulnerable=False),
        robot=RobotCheck(result="NOT_VULNERABLE_RSA_NOT_SUPPORTED"),
        renegotiation=RenegotiationCheck(
            secure_renegotiation=True,
            client_renegotiation_dos=False,
            client_renegotiations_accepted=0,
        ),
        compression=SupportCheck(supported=False),
        fallback_scsv=SupportCheck(supported=True),
        session_resumption=ResumptionCheck(session_id=rate, tls_ticket=rate),
        sslyze_version="6.3.1",
        duration_ms=2100,
    )


def failed(service: str, kind: str, phase: str, **changes: Any) -> EndpointResult:
    """An error document as the engine writes it: versions undecided, no certificate."""
    port, mode = SERVICES[service]
    result = EndpointResult(
        target=Target("mail.example.net", "192.0.2.10", port, service, mode, "mail.example.net"),  # type: ignore[arg-type]
        status="error",
        error=ErrorInfo(kind, phase, f"{kind} during {phase}"),
        protocols=dict.fromkeys(protocols()),
        scanned_at="2026-11-28T02:00:13Z",
    )
    return replace(result, **changes)


def doc(result: EndpointResult) -> dict[str, Any]:
    return result.to_dict()


# -- the builders are what the tests assume ------------------------------------------------


def test_clean_endpoints_of_every_service_have_no_findings() -> None:
    # Given the clean endpoint of every service, with deep checks
    for service in SERVICES:
        result = replace(clean(service), deep=clean_deep())
        # Then the default profile finds nothing at all
        assert evaluate(doc(result), default_profile(), NOW) == [], service


def test_failed_document_is_an_error_with_undecided_versions() -> None:
    document = doc(failed("imap", "timeout", "greeting"))
    assert document["status"] == "error"
    assert set(document["protocols"].values()) == {None}
    assert document["certificate"] is None
