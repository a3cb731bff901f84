"""Mozilla Server Side TLS compliance of result documents (guidelines 6.0, and 5.7's old)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policy import MOZILLA_CURRENT, MOZILLA_GUIDELINES, mozilla_compliance
from scanner.ciphers import by_name
from scanner.models import EndpointResult, ErrorInfo, SupportCheck, VulnerabilityCheck
from tests.unit.test_policy_documents import (
    INTERMEDIATE_12,
    LEGACY_10,
    MODERN_13,
    NOW,
    certificate,
    clean,
    clean_deep,
    doc,
    failed,
    protocols,
)

OLD_12 = [
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
]


def modern_nginx() -> EndpointResult:
    """nginx with ``ssl_protocols TLSv1.3`` and an ECDSA P-256 Let's Encrypt certificate."""
    return replace(
        clean("https", "www.example.net"),
        protocols=protocols("TLSv1.3"),
        cipher_suites={"TLSv1.3": list(MODERN_13)},
        tls13_groups=["x25519", "secp256r1", "secp384r1"],
        certificate=certificate(
            "www.example.net", key="EC secp256r1", signature="ecdsa-with-SHA384"
        ),
        deep=clean_deep(),
    )


def intermediate_server() -> EndpointResult:
    """TLS 1.2 and 1.3, ECDHE AEAD suites, RSA 2048 (Mozilla's intermediate nginx)."""
    return replace(clean("imaps"), deep=clean_deep())


def old_server() -> EndpointResult:
    """Mozilla's old configuration on OpenSSL with TLS 1.0-1.3 and the server's order."""
    return replace(
        clean("https"),
        protocols=protocols("TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
        cipher_suites={
            "TLSv1.0": [s for s in LEGACY_10 if s != "TLS_RSA_WITH_AES_256_CBC_SHA"]
            + ["TLS_RSA_WITH_3DES_EDE_CBC_SHA"],
            "TLSv1.1": list(LEGACY_10),
            "TLSv1.2": list(OLD_12),
            "TLSv1.3": list(MODERN_13),
        },
        server_preference=True,
    )


def verdicts(result: EndpointResult | dict[str, Any], version: str | None = None) -> dict[str, Any]:
    document = result if isinstance(result, dict) else doc(result)
    report = mozilla_compliance(document, version)
    return {c.profile: c.compliant for c in report.checks}


def test_current_guidelines_are_named_in_the_output() -> None:
    report = mozilla_compliance(doc(intermediate_server()))
    named = {(c.profile, c.version, c.href) for c in report.checks}
    assert named == {
        ("modern", "6.0", "https://ssl-config.mozilla.org/guidelines/6.0.json"),
        ("intermediate", "6.0", "https://ssl-config.mozilla.org/guidelines/6.0.json"),
        ("old", "5.7", "https://ssl-config.mozilla.org/guidelines/5.7.json"),
    }
    as_dict = report.to_dict()
    assert as_dict["best"] == "intermediate"
    assert {c["version"] for c in as_dict["checks"]} == {"6.0", "5.7"}


def test_tls13_only_nginx_is_modern() -> None:
    report = mozilla_compliance(doc(modern_nginx()))
    assert report.best == "modern"
    modern = report.check("modern")
    assert modern.compliant is True
    assert modern.issues == ()
    # HSTS and the rest are said to be unchecked, not silently passed
    assert "HSTS max-age" in modern.not_checked
    # An ECDSA certificate is not what old (RSA only) asks for
    old = report.check("old")
    assert old.compliant is False
    assert any("ECDSA certificate" in issue for issue in old.issues)


def test_intermediate_server_is_intermediate_not_modern() -> None:
    report = mozilla_compliance(doc(intermediate_server()))
    assert report.best == "intermediate"
    modern = report.check("modern")
    assert modern.compliant is False
    assert "accepts TLSv1.2; modern allows only TLSv1.3" in modern.issues
    assert any("an RSA certificate" in issue for issue in modern.issues)
    assert any("cipher suites not in modern" in issue for issue in modern.issues)
    # Old wants the server's order enforced; this server lets the client choose
    assert report.check("old").issues == (
        "old wants the server's cipher order enforced; it is not",
    )


def test_old_configuration_server_is_old_only() -> None:
    report = mozilla_compliance(doc(old_server()))
    assert report.best == "old"
    assert verdicts(old_server()) == {"modern": False, "intermediate": False, "old": True}
    intermediate = report.check("intermediate")
    assert "accepts TLSv1.0, TLSv1.1; intermediate allows only TLSv1.2, TLSv1.3" in (
        intermediate.issues
    )
    assert any("TLS_RSA_WITH_3DES_EDE_CBC_SHA" in i for i in intermediate.issues)


def test_non_compliant_endpoint_gets_every_reason() -> None:
    # Given an old mail server: SSLv3 and TLS 1.0, RC4, a 1024-bit SHA-1 self-signed
    # certificate valid for ten years, and TLS compression
    result = replace(
        clean("pop3s"),
        protocols=protocols("SSLv3", "TLSv1.0"),
        cipher_suites={
            "SSLv3": ["TLS_RSA_WITH_RC4_128_SHA"],
            "TLSv1.0": ["TLS_RSA_WITH_RC4_128_SHA", "TLS_RSA_WITH_AES_128_CBC_SHA"],
        },
        tls13_groups=None,
        certificate=certificate(
            key="RSA 1024",
            signature="sha1WithRSAEncryption",
            lifetime_days=3650,
            status="self_signed",
            trusted=False,
        ),
        deep=replace(
            clean_deep(),
            compression=SupportCheck(supported=True),
            heartbleed=VulnerabilityCheck(vulnerable=True),
        ),
    )
    report = mozilla_compliance(doc(result))
    assert report.best is None
    old = report.check("old")
    assert old.compliant is False
    assert set(old.issues) == {
        "accepts SSLv3; old allows only TLSv1.0, TLSv1.1, TLSv1.2, TLSv1.3",
        "cipher suites not in old: TLS_RSA_WITH_RC4_128_SHA",
        "old wants the server's cipher order enforced; it is not",
        "RSA key of 1024 bits; old wants 2048",
        "certificate signed with sha1WithRSAEncryption; old wants sha256WithRSAEncryption",
        "certificate lifespan 3650 days; old allows 366",
        "the certificate does not verify against the trust store",
        "TLS compression accepted (CRIME)",
        "vulnerable to Heartbleed",
    }


def test_intermediate_of_60_drops_dhe_that_57_allowed() -> None:
    # Given an intermediate server of 5.7 that also accepts the DHE AEAD suites
    result = replace(
        intermediate_server(),
        cipher_suites={
            "TLSv1.2": [*INTERMEDIATE_12, "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256"],
            "TLSv1.3": list(MODERN_13),
        },
    )
    # Then it meets 5.7's intermediate but not 6.0's
    assert verdicts(result, "5.7")["intermediate"] is True
    current = mozilla_compliance(doc(result)).check("intermediate")
    assert current.compliant is False
    assert current.issues == (
        "cipher suites not in intermediate: TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
    )


def test_post_quantum_group_is_in_60_but_not_in_57() -> None:
    result = replace(modern_nginx(), tls13_groups=["X25519MLKEM768", "x25519", "secp256r1"])
    assert verdicts(result)["modern"] is True
    old_modern = mozilla_compliance(doc(result), "5.7").check("modern")
    assert old_modern.issues == ("TLS 1.3 groups not in modern: X25519MLKEM768",)


def test_other_groups_and_tls13_suites_are_issues() -> None:
    result = replace(
        modern_nginx(),
        tls13_groups=["x25519", "secp521r1", "ffdhe2048"],
        cipher_suites={"TLSv1.3": [*MODERN_13, "TLS_AES_128_CCM_SHA256"]},
    )
    issues = mozilla_compliance(doc(result)).check("modern").issues
    assert issues == (
        "TLS 1.3 suites not in modern: TLS_AES_128_CCM_SHA256",
        "TLS 1.3 groups not in modern: secp521r1, ffdhe2048",
    )


def test_certificate_requirements() -> None:
    long_lived = replace(intermediate_server(), certificate=certificate(lifetime_days=398))
    issues = mozilla_compliance(doc(long_lived)).check("intermediate").issues
    assert issues == ("certificate lifespan 398 days; intermediate allows 366",)
    p521 = replace(
        modern_nginx(), certificate=certificate(key="EC secp521r1", signature="ecdsa-with-SHA512")
    )
    assert mozilla_compliance(doc(p521)).check("modern").issues == (
        "certificate curve secp521r1; modern wants prime256v1, secp384r1",
    )
    ed25519 = replace(modern_nginx(), certificate=certificate(key="Ed25519", signature="ED25519"))
    modern = mozilla_compliance(doc(ed25519)).check("modern")
    assert "a Ed25519 certificate; modern wants ecdsa" in modern.issues
    # Without a certificate (a --quick scan) the rest still counts
    quick = replace(modern_nginx(), certificate=None)
    modern = mozilla_compliance(doc(quick)).check("modern")
    assert modern.compliant is True
    assert "certificate (not fetched)" in modern.not_checked


def test_failed_scan_is_undecided_everywhere() -> None:
    report = mozilla_compliance(doc(failed("imaps", "timeout", "tls_hello")))
    assert {c.compliant for c in report.checks} == {None}
    assert report.best is None
    assert all("the scan failed" in c.not_checked for c in report.checks)


def test_undecided_versions_and_missing_suites_leave_compliance_open() -> None:
    # TLS 1.1 undecided: intermediate cannot be confirmed (nor denied)
    undecided = replace(
        intermediate_server(),
        protocols={**intermediate_server().protocols, "TLSv1.1": None},
        partial_errors=[ErrorInfo("timeout", "tls_hello", "TLSv1.1")],
    )
    check = mozilla_compliance(doc(undecided)).check("intermediate")
    assert check.compliant is None
    assert "support for TLSv1.1 undecided" in check.not_checked
    # A suite list missing for an accepted version: the same
    no_suites = replace(intermediate_server(), cipher_suites={"TLSv1.3": list(MODERN_13)})
    check = mozilla_compliance(doc(no_suites)).check("intermediate")
    assert check.compliant is None
    assert "cipher suites of TLSv1.2 not enumerated" in check.not_checked
    # But an established violation decides it anyway
    assert verdicts(undecided)["modern"] is False


def test_deep_checks_absent_or_undecided_are_listed_not_passed() -> None:
    no_deep = replace(intermediate_server(), deep=None)
    check = mozilla_compliance(doc(no_deep)).check("intermediate")
    assert check.compliant is True
    assert "vulnerabilities (no deep checks)" in check.not_checked
    undecided = replace(
        intermediate_server(),
        deep=replace(clean_deep(), heartbleed=VulnerabilityCheck(vulnerable=None)),
    )
    check = mozilla_compliance(doc(undecided)).check("intermediate")
    assert "heartbleed (not decided)" in check.not_checked


def test_unknown_guideline_version() -> None:
    with pytest.raises(
        ValueError, match=r"unknown Mozilla guideline version '4.0' \(known: 5.7, 6.0\)"
    ):
        mozilla_compliance(doc(modern_nginx()), "4.0")


def test_guideline_data_uses_names_the_scanner_knows() -> None:
    # Every suite name in the data is in the scanner's registry, in the right family
    for configs in MOZILLA_GUIDELINES.values():
        for config in configs.values():
            for name in config.ciphers:
                suite = by_name(name)
                assert suite is not None, name
                assert not suite.tls13, name
            for name in config.ciphersuites:
                suite = by_name(name)
                assert suite is not None, name
                assert suite.tls13, name
            assert config.tls_versions <= {"TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"}
            assert config.href.endswith(f"/{config.version}.json")
    assert [c.name for c in MOZILLA_CURRENT] == ["modern", "intermediate", "old"]


def test_old_cipher_list_of_57_is_a_superset_of_intermediate() -> None:
    v57 = MOZILLA_GUIDELINES["5.7"]
    assert set(v57["intermediate"].ciphers) <= set(v57["old"].ciphers)
    assert set(MOZILLA_GUIDELINES["6.0"]["intermediate"].ciphers) < set(v57["intermediate"].ciphers)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "status",
                "protocols",
                "cipher_suites",
                "tls13_groups",
                "certificate",
                "deep",
                "server_preference",
                "partial_errors",
            ]
        ),
        st.none()
        | st.booleans()
        | st.text(max_size=8)
        | st.lists(st.text(max_size=8), max_size=3)
        | st.dictionaries(
            st.text(max_size=8), st.none() | st.booleans() | st.text(max_size=8), max_size=3
        ),
        max_size=8,
    )
)
def test_mozilla_compliance_never_raises(junk: dict[str, Any]) -> None:
    document = doc(modern_nginx())
    document.update(junk)
    report = mozilla_compliance(document)
    assert len(report.checks) == 3
    report.to_dict()


def test_expired_dates_do_not_matter_to_mozilla_but_lifespan_does() -> None:
    # Mozilla judges configuration, not expiry: an expired 90-day cert is still in spec
    expired = replace(
        modern_nginx(),
        certificate=certificate(
            key="EC secp256r1",
            signature="ecdsa-with-SHA256",
            not_before=NOW - timedelta(days=120),
        ),
    )
    assert verdicts(expired)["modern"] is True
