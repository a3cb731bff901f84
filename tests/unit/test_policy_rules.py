"""The rule table and evaluate(): each rule fires on what it names and on nothing else.

Documents are built with scanner.models (see test_policy_documents) and judged as the
fleet stores them: the dict of ``EndpointResult.to_dict()``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy import (
    RULES,
    PortClass,
    Profile,
    Severity,
    assess,
    customer_rollup,
    default_profile,
    endpoint_future,
    evaluate,
    port_class_of,
    profile_from_dict,
    rule,
)
from policy.doctable import rules_details_markdown, rules_markdown
from policy.evaluate import _CHECKS, PLAINTEXT_MECHANISMS
from scanner.ciphers import all_suites, by_name
from scanner.models import (
    AuthInfo,
    EndpointResult,
    ErrorInfo,
    RenegotiationCheck,
    RobotCheck,
    StarttlsInfo,
    SupportCheck,
    VulnerabilityCheck,
)
from tests.unit.test_policy_documents import (
    DEBIAN_DEFAULT_12,
    LEGACY_10,
    NOW,
    certificate,
    clean,
    clean_deep,
    doc,
    failed,
    protocols,
)

Mutation = Callable[[EndpointResult], EndpointResult]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "findings.md"


def codes(result: EndpointResult | dict[str, Any], profile: Profile | None = None) -> list[str]:
    document = result if isinstance(result, dict) else doc(result)
    return [f.code for f in evaluate(document, profile or default_profile(), NOW)]


def with_suites(result: EndpointResult, version: str, *names: str) -> EndpointResult:
    suites = {k: list(v) for k, v in result.cipher_suites.items()}
    suites[version] = [*suites.get(version, []), *names]
    accepted = dict(result.protocols)
    accepted[version] = True
    return replace(result, cipher_suites=suites, protocols=accepted)


def with_deep(**checks: Any) -> Mutation:
    return lambda r: replace(r, deep=replace(clean_deep(), **checks))


def with_cert(**changes: Any) -> Mutation:
    return lambda r: replace(r, certificate=certificate(**changes))


# Each rule: the service it is shown on and the one fact that makes it fire.
FIRES: dict[str, tuple[str, Mutation]] = {
    "tls.ssl_version": (
        "https",
        lambda r: with_suites(r, "SSLv3", "TLS_RSA_WITH_AES_128_CBC_SHA"),
    ),
    "tls.legacy_version": ("imaps", lambda r: with_suites(r, "TLSv1.0", *LEGACY_10)),
    "tls.only_legacy": (
        "imaps",
        lambda r: replace(
            r,
            protocols=protocols("TLSv1.0", "TLSv1.1"),
            cipher_suites={"TLSv1.0": LEGACY_10, "TLSv1.1": LEGACY_10},
            tls13_groups=None,
        ),
    ),
    "tls.no_tls13": (
        "https",
        lambda r: replace(
            r,
            protocols=protocols("TLSv1.2"),
            cipher_suites={"TLSv1.2": r.cipher_suites["TLSv1.2"]},
            tls13_groups=None,
        ),
    ),
    "cipher.null": ("https", lambda r: with_suites(r, "TLSv1.2", "TLS_RSA_WITH_NULL_SHA256")),
    "cipher.anonymous": (
        "imaps",
        lambda r: with_suites(r, "TLSv1.2", "TLS_DH_anon_WITH_AES_128_GCM_SHA256"),
    ),
    "cipher.export": (
        "https",
        lambda r: with_suites(r, "TLSv1.0", "TLS_RSA_EXPORT_WITH_RC4_40_MD5"),
    ),
    "cipher.rc4": ("imaps", lambda r: with_suites(r, "TLSv1.2", "TLS_RSA_WITH_RC4_128_SHA")),
    "cipher.des": (
        "imaps",
        lambda r: with_suites(r, "TLSv1.2", "TLS_RSA_WITH_3DES_EDE_CBC_SHA"),
    ),
    "cipher.no_forward_secrecy": (
        "https",
        lambda r: replace(
            r,
            protocols=protocols("TLSv1.2"),
            cipher_suites={
                "TLSv1.2": ["TLS_RSA_WITH_AES_256_GCM_SHA384", "TLS_RSA_WITH_AES_128_CBC_SHA"]
            },
            tls13_groups=None,
        ),
    ),
    "cipher.no_aead": (
        "https",
        lambda r: replace(
            r,
            protocols=protocols("TLSv1.2"),
            cipher_suites={"TLSv1.2": ["TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256"]},
            tls13_groups=None,
        ),
    ),
    "starttls.not_offered": (
        "imap",
        lambda r: replace(r, starttls=StarttlsInfo(offered=False)),
    ),
    "starttls.injection": (
        "submission",
        lambda r: replace(r, starttls=StarttlsInfo(offered=True, injection_vulnerable=True)),
    ),
    "auth.plaintext_before_tls": (
        "imap",
        lambda r: replace(
            r,
            auth=AuthInfo(("PLAIN", "LOGIN", "IMAP-LOGIN"), ("PLAIN", "LOGIN"), True),
        ),
    ),
    "auth.on_relay": ("smtp", lambda r: replace(r, auth=AuthInfo((), ("PLAIN", "LOGIN"), False))),
    "cert.expired": (
        "https",
        with_cert(not_before=NOW - timedelta(days=100), status="expired", trusted=False),
    ),
    "cert.expiring": ("imaps", with_cert(not_before=NOW - timedelta(days=80))),
    "cert.not_yet_valid": (
        "https",
        with_cert(not_before=NOW + timedelta(days=2), status="not_yet_valid"),
    ),
    "cert.untrusted": ("imaps", with_cert(status="untrusted", trusted=False)),
    "cert.self_signed": ("pop3s", with_cert(status="self_signed", trusted=False)),
    "cert.hostname_mismatch": (
        "https",
        with_cert(host="other.example.org", status="hostname_mismatch", hostname_match=False),
    ),
    "cert.weak_key": ("https", with_cert(key="RSA 1024")),
    "cert.weak_signature": ("https", with_cert(signature="sha1WithRSAEncryption")),
    "vuln.heartbleed": ("https", with_deep(heartbleed=VulnerabilityCheck(vulnerable=True))),
    "vuln.ccs_injection": ("imaps", with_deep(ccs_injection=VulnerabilityCheck(vulnerable=True))),
    "vuln.robot": ("https", with_deep(robot=RobotCheck(result="VULNERABLE_STRONG_ORACLE"))),
    "vuln.insecure_renegotiation": (
        "https",
        with_deep(renegotiation=RenegotiationCheck(False, False, 0)),
    ),
    "vuln.client_renegotiation_dos": (
        "https",
        with_deep(renegotiation=RenegotiationCheck(True, True, 10)),
    ),
    "vuln.compression": ("https", with_deep(compression=SupportCheck(supported=True))),
    "vuln.no_fallback_scsv": (
        "https",
        lambda r: with_deep(fallback_scsv=SupportCheck(supported=False))(
            with_suites(r, "TLSv1.0", *LEGACY_10)
        ),
    ),
    "scan.error": ("imaps", lambda _r: failed("imaps", "timeout", "tls_hello")),
}

PLAINTEXT_OVER_TLS = profile_from_dict({"plaintext_mechanisms_over_tls": True})


def test_every_rule_has_a_check_and_a_firing_test() -> None:
    table = {r.code for r in RULES}
    assert set(_CHECKS) == table
    assert set(FIRES) | {"auth.plaintext_over_tls"} == table


def test_rule_table_is_well_formed() -> None:
    for entry in RULES:
        assert entry.code.count(".") == 1, entry.code
        assert entry.code == entry.code.lower(), entry.code
        for text in (entry.title, entry.explanation, entry.remedy, entry.source):
            assert text, entry.code
        assert entry.severity, entry.code
        assert set(entry.notes) <= set(entry.severity), entry.code
    assert len({r.code for r in RULES}) == len(RULES)


@pytest.mark.parametrize("code", sorted(FIRES))
def test_rule_fires_on_its_fact_and_not_on_a_clean_endpoint(code: str) -> None:
    service, mutate = FIRES[code]
    # Given a clean endpoint of the service (with deep checks), and the same with one fact
    healthy = replace(clean(service), deep=clean_deep())
    broken = mutate(healthy)
    # Then the rule fires on the broken one only, at its default severity for the class
    assert code not in codes(healthy)
    findings = {f.code: f for f in evaluate(doc(broken), default_profile(), NOW)}
    assert code in findings, sorted(findings)
    finding = findings[code]
    port_class = port_class_of(doc(broken)["target"])
    assert finding.severity == rule(code).severity[port_class]
    assert finding.detail
    assert finding.endpoint.service == service
    assert finding.to_dict()["code"] == code


def test_plaintext_over_tls_counts_only_when_the_profile_says_so() -> None:
    # Given an IMAPS endpoint offering PLAIN and LOGIN after TLS (normal for Dovecot)
    imaps = clean("imaps")
    # Then the default profile does not mind; a challenge-response-only profile does
    assert "auth.plaintext_over_tls" not in codes(imaps)
    findings = evaluate(doc(imaps), PLAINTEXT_OVER_TLS, NOW)
    over = [f for f in findings if f.code == "auth.plaintext_over_tls"]
    assert len(over) == 1
    assert over[0].severity is Severity.MEDIUM
    assert set(over[0].evidence) == {"PLAIN", "LOGIN", "IMAP-LOGIN"}
    # And an endpoint offering only challenge-response mechanisms is fine under it too
    scram = replace(imaps, auth=AuthInfo((), ("SCRAM-SHA-256", "CRAM-MD5"), False))
    assert "auth.plaintext_over_tls" not in codes(scram, PLAINTEXT_OVER_TLS)


def test_every_weak_suite_of_the_registry_is_caught_by_a_cipher_rule() -> None:
    # The cipher rules name weaknesses (NULL, anon, EXPORT, RC4, 64-bit blocks); a weak
    # suite that none of them catches would pass silently.
    base = replace(clean("https"), cipher_suites={"TLSv1.2": []}, protocols=protocols("TLSv1.2"))
    cipher_rules = {"cipher.null", "cipher.anonymous", "cipher.export", "cipher.rc4", "cipher.des"}
    for suite in all_suites():
        if not suite.weak or suite.tls13:
            continue
        found = set(codes(with_suites(base, "TLSv1.2", suite.name)))
        assert found & cipher_rules, suite.name


# -- undecided values and error documents -------------------------------------------------


def test_undecided_versions_never_claim_anything() -> None:
    # Given TLS 1.2 and 1.3 undecided (their probes failed) and TLS 1.0/1.1 refused
    result = replace(
        clean("imaps"),
        protocols={**protocols(), "TLSv1.2": None, "TLSv1.3": None},
        cipher_suites={},
    )
    found = codes(result)
    # Then nothing about versions or suites: not "only legacy", not "no TLS 1.3"
    assert not [c for c in found if c.startswith(("tls.", "cipher."))]
    # And the cut-off view says it does not know
    future = endpoint_future(doc(result), default_profile(), NOW)
    assert future.outcome == "unknown"


def test_only_legacy_needs_both_modern_versions_seen_refused() -> None:
    legacy_only = FIRES["tls.only_legacy"][1](clean("imaps"))
    assert "tls.only_legacy" in codes(legacy_only)
    undecided_13 = replace(legacy_only, protocols={**legacy_only.protocols, "TLSv1.3": None})
    found = codes(undecided_13)
    assert "tls.only_legacy" not in found
    assert "tls.legacy_version" in found  # TLS 1.0 *was* seen accepted


def test_absence_rules_need_complete_suite_lists() -> None:
    # Given a TLS 1.2-only endpoint with static-RSA suites: no forward secrecy ...
    no_fs = FIRES["cipher.no_forward_secrecy"][1](clean("https"))
    assert "cipher.no_forward_secrecy" in codes(no_fs)
    # ... but when TLS 1.1 is undecided, or a hello probe failed, or a suite is unknown,
    # an FS suite might have gone unseen: no finding
    undecided = replace(no_fs, protocols={**no_fs.protocols, "TLSv1.1": None})
    probe_failed = replace(
        no_fs, partial_errors=[ErrorInfo("timeout", "tls_hello", "TLSv1.2 elimination")]
    )
    unknown = with_suites(no_fs, "TLSv1.2", "UNKNOWN_0xFEFE")
    no_list = replace(no_fs, cipher_suites={})
    for variant in (undecided, probe_failed, unknown, no_list):
        assert "cipher.no_forward_secrecy" not in codes(variant)
        assert "cipher.no_aead" not in codes(variant)


def test_null_deep_verdicts_are_not_read_as_anything() -> None:
    # A failed sslyze check has null verdicts: never "vulnerable", never "fine"
    result = replace(
        clean("https"),
        deep=replace(
            clean_deep(),
            heartbleed=VulnerabilityCheck(vulnerable=None),
            robot=RobotCheck(result="UNKNOWN_INCONSISTENT_RESULTS"),
            renegotiation=RenegotiationCheck(None, None, None),
            compression=SupportCheck(supported=None),
            fallback_scsv=SupportCheck(supported=None),
        ),
    )
    assert codes(result) == []


def test_error_document_has_no_protocol_findings() -> None:
    # Given a scan that timed out in the TLS hello
    result = failed("imaps", "timeout", "tls_hello")
    # Then it is reported as not scanned, and nothing about versions, suites or certs
    assert codes(result) == ["scan.error"]
    finding = evaluate(doc(result), default_profile(), NOW)[0]
    assert finding.severity is Severity.INFO
    assert "timeout" in finding.detail


def test_error_document_ignores_stray_protocol_values() -> None:
    # Given an error document that nonetheless carries versions and a bad certificate
    result = replace(
        failed("imaps", "handshake", "certificate"),
        protocols=protocols("TLSv1.0"),
        cipher_suites={"TLSv1.0": ["TLS_RSA_WITH_RC4_128_SHA"]},
        certificate=certificate(status="self_signed", trusted=False),
    )
    # Then the failure is all it says
    assert codes(result) == ["scan.error"]


def test_starttls_not_offered_error_keeps_what_the_dialogue_established() -> None:
    # Given IMAP on 143 without STARTTLS but with LOGIN allowed: the engine writes an
    # error document (starttls_not_offered) with the plaintext dialogue's facts
    result = failed(
        "imap",
        "starttls_not_offered",
        "starttls",
        starttls=StarttlsInfo(offered=False),
        auth=AuthInfo(("IMAP-LOGIN",), (), True),
    )
    found = codes(result)
    # Then: no STARTTLS and a password in clear; not "scan.error", no TLS findings
    assert found == ["starttls.not_offered", "auth.plaintext_before_tls"]
    # And even without the starttls block, the error kind says it
    bare = replace(result, starttls=None, auth=None)
    assert codes(bare) == ["starttls.not_offered"]


def test_garbage_is_not_a_document() -> None:
    profile = default_profile()
    assert evaluate([], profile, NOW) == []  # type: ignore[arg-type]
    assert evaluate({}, profile, NOW) == []
    assert evaluate({"status": "ok"}, profile, NOW) == []


# -- port classes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ({"service": "smtp", "port": 25}, PortClass.SMTP_RELAY),
        ({"service": "smtp", "port": 2525}, PortClass.SMTP_RELAY),
        ({"service": "submission", "port": 587}, PortClass.MAIL_CLIENT),
        ({"service": "imap", "port": 143}, PortClass.MAIL_CLIENT),
        ({"service": "pop3s", "port": 995}, PortClass.MAIL_CLIENT),
        ({"service": "https", "port": 443}, PortClass.HTTPS),
        ({"service": "ldaps", "port": 993}, PortClass.MAIL_CLIENT),
        ({"service": "ldaps", "port": 636}, PortClass.HTTPS),
        ({}, PortClass.HTTPS),
    ],
)
def test_port_class_of(target: dict[str, Any], expected: PortClass) -> None:
    assert port_class_of(target) is expected


def severities(result: EndpointResult) -> dict[str, Severity]:
    return {f.code: f.severity for f in evaluate(doc(result), default_profile(), NOW)}


def test_legacy_tls_weighs_less_on_the_relay_port() -> None:
    # Given the same TLS 1.0-accepting stack on 25, 143 and 443
    found = {
        service: severities(with_suites(clean(service), "TLSv1.0", *LEGACY_10))
        for service in ("smtp", "imap", "https")
    }
    # Then the relay gets a low finding, the client and web ports a high one
    assert found["smtp"]["tls.legacy_version"] is Severity.LOW
    assert found["imap"]["tls.legacy_version"] is Severity.HIGH
    assert found["https"]["tls.legacy_version"] is Severity.HIGH
    # And the relay's explanation says why
    relay = evaluate(doc(with_suites(clean("smtp"), "TLSv1.0", *LEGACY_10)), default_profile(), NOW)
    assert "opportunistic" in relay[0].explanation


def test_missing_starttls_on_25_is_not_a_password_problem_on_143() -> None:
    no_starttls = {
        service: severities(
            failed(
                service,
                "starttls_not_offered",
                "starttls",
                starttls=StarttlsInfo(offered=False),
                auth=AuthInfo((), (), False),
            )
        )
        for service in ("smtp", "imap")
    }
    assert no_starttls["smtp"] == {"starttls.not_offered": Severity.MEDIUM}
    assert no_starttls["imap"] == {"starttls.not_offered": Severity.HIGH}
    # A password before TLS is critical on a client port, high (and unusual) on 25
    on_143 = FIRES["auth.plaintext_before_tls"][1](clean("imap"))
    on_25 = replace(clean("smtp"), auth=AuthInfo(("PLAIN", "LOGIN"), ("PLAIN", "LOGIN"), True))
    assert severities(on_143)["auth.plaintext_before_tls"] is Severity.CRITICAL
    relay = severities(on_25)
    assert relay["auth.plaintext_before_tls"] is Severity.HIGH
    assert relay["auth.on_relay"] is Severity.INFO


def test_rules_that_do_not_apply_to_a_class_stay_silent() -> None:
    # STARTTLS and AUTH facts on an HTTPS document (hand-made): no STARTTLS/AUTH findings
    odd = replace(
        clean("https"),
        starttls=StarttlsInfo(offered=False),
        auth=AuthInfo(("PLAIN",), ("PLAIN",), True),
    )
    assert codes(odd) == []
    # AUTH on a client port is not "AUTH on the relay"
    assert "auth.on_relay" not in codes(clean("submission"))


def test_anonymous_suites_are_low_on_the_relay_but_critical_for_clients() -> None:
    anon = "TLS_ECDH_anon_WITH_AES_256_CBC_SHA"
    assert severities(with_suites(clean("smtp"), "TLSv1.2", anon))["cipher.anonymous"] == "low"
    assert severities(with_suites(clean("imaps"), "TLSv1.2", anon))["cipher.anonymous"] == (
        "critical"
    )


# -- details -----------------------------------------------------------------------------


def test_cipher_findings_name_the_suites_and_versions() -> None:
    result = with_suites(clean("https"), "TLSv1.0", "TLS_RSA_WITH_RC4_128_MD5")
    result = with_suites(result, "TLSv1.2", "TLS_ECDHE_RSA_WITH_RC4_128_SHA")
    rc4 = next(f for f in evaluate(doc(result), default_profile(), NOW) if f.code == "cipher.rc4")
    assert rc4.evidence == (
        "TLSv1.0 TLS_RSA_WITH_RC4_128_MD5",
        "TLSv1.2 TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    )
    assert "TLS_RSA_WITH_RC4_128_MD5" in rc4.detail


def test_a_typical_debian_stack_has_forward_secrecy_and_aead() -> None:
    debian = replace(clean("https"), cipher_suites={"TLSv1.2": DEBIAN_DEFAULT_12})
    assert codes(debian) == []
    assert all(by_name(name) is not None for name in DEBIAN_DEFAULT_12)


def test_certificate_expiry_is_judged_at_now_not_at_scan_time() -> None:
    # Given a certificate with 40 days left at scan time (outside the 30-day window)
    result = replace(clean("imaps"), certificate=certificate(not_before=NOW - timedelta(days=50)))
    assert "cert.expiring" not in codes(result)
    # When judged 15 days later, it is expiring; 45 days later, expired
    later = evaluate(doc(result), default_profile(), NOW + timedelta(days=15))
    assert [f.code for f in later] == ["cert.expiring"]
    assert "in 25 days" in later[0].detail
    expired = evaluate(doc(result), default_profile(), NOW + timedelta(days=45))
    assert [f.code for f in expired] == ["cert.expired"]
    # And a 60-day window catches it today
    wide = profile_from_dict({"expiring_days": 60})
    assert codes(result, wide) == ["cert.expiring"]


def test_certificate_with_unreadable_dates_falls_back_to_the_scan_verdict() -> None:
    document = doc(clean("https"))
    document["certificate"].update(not_after="someday", not_before=None, status="expired")
    assert codes(document) == ["cert.expired"]
    document["certificate"].update(status="valid", days_left=3)
    assert codes(document) == ["cert.expiring"]


def test_plaintext_mechanisms_constant_covers_the_documented_pseudo_mechanisms() -> None:
    assert {"PLAIN", "LOGIN", "IMAP-LOGIN", "USER"} == PLAINTEXT_MECHANISMS


# -- the cut-off view and the customer roll-up ---------------------------------------------


def test_future_of_a_legacy_only_endpoint_is_that_every_client_breaks() -> None:
    legacy_only = FIRES["tls.only_legacy"][1](clean("imaps"))
    future = endpoint_future(doc(legacy_only), default_profile(), NOW)
    assert future.outcome == "breaks"
    assert future.cutoff == date(2027, 1, 31)
    assert [i.code for i in future.impacts] == ["tls.only_legacy"]
    assert "Every client breaks on 2027-01-31" in future.impacts[0].message


def test_future_of_an_endpoint_with_passwords_before_tls_names_those_clients() -> None:
    result = FIRES["auth.plaintext_before_tls"][1](clean("imap"))
    profile = profile_from_dict({"cutoff": "2027-02-10"})
    future = endpoint_future(doc(result), profile, NOW)
    assert future.outcome == "partly_breaks"
    (impact,) = future.impacts
    assert impact.scope == "some_clients"
    assert "password before TLS" in impact.message
    assert "2027-02-10" in impact.message


def test_future_of_the_relay_is_degraded_not_broken() -> None:
    legacy_relay = FIRES["tls.only_legacy"][1](clean("smtp"))
    future = endpoint_future(doc(legacy_relay), default_profile(), NOW)
    assert future.outcome == "degraded"
    assert "plaintext" in future.impacts[0].message


def test_future_of_a_client_port_without_starttls_is_that_nobody_logs_in() -> None:
    result = failed(
        "pop3",
        "starttls_not_offered",
        "starttls",
        starttls=StarttlsInfo(offered=False),
        auth=AuthInfo(("USER",), (), True),
    )
    future = endpoint_future(doc(result), default_profile(), NOW)
    assert future.outcome == "breaks"
    assert {i.code for i in future.impacts} == {"starttls.not_offered", "auth.plaintext_before_tls"}


def test_future_counts_a_certificate_that_expires_before_the_cutoff() -> None:
    # 60 days left now: no finding today, but the cut-off is 64 days away
    result = replace(clean("https"), certificate=certificate(not_before=NOW - timedelta(days=30)))
    assert codes(result) == []
    future = endpoint_future(doc(result), default_profile(), NOW)
    assert future.outcome == "breaks"
    assert "before the cut-off" in future.impacts[0].message
    # With a cut-off before its expiry, it is unaffected
    early = profile_from_dict({"cutoff": "2027-01-01"})
    assert endpoint_future(doc(result), early, NOW).outcome == "unaffected"


def test_future_of_a_failed_scan_is_unknown() -> None:
    future = endpoint_future(doc(failed("imaps", "refused", "connect")), default_profile(), NOW)
    assert future.outcome == "unknown"
    assert future.undecided


def test_customer_rollup_counts_each_endpoint_once() -> None:
    profile = profile_from_dict({"cutoff": "2027-01-01"})
    # Given a customer whose two domains share one legacy MX, plus its IMAP and web
    mx = FIRES["tls.only_legacy"][1](clean("smtp", "mx.provider.net"))
    imap = FIRES["auth.plaintext_before_tls"][1](clean("imap"))
    web = clean("https", "www.customer.example")
    down = failed("imaps", "timeout", "connect")
    assessments = [assess(doc(r), profile, NOW) for r in (mx, mx, imap, web, down)]
    # When rolled up
    rollup = customer_rollup(assessments, profile)
    # Then four endpoints, one each of degraded, partly broken, unaffected, unknown
    assert rollup.endpoints == 4
    assert dict(rollup.outcomes) == {
        "breaks": 0,
        "partly_breaks": 1,
        "degraded": 1,
        "unknown": 1,
        "unaffected": 1,
    }
    assert rollup.worst is Severity.CRITICAL
    assert rollup.rules["tls.only_legacy"] == 1
    assert rollup.rules["scan.error"] == 1
    assert rollup.summary == (
        "0 of 4 endpoints break on 2027-01-01, 1 partly break, 1 lose protection, "
        "1 could not be judged"
    )
    assert rollup.to_dict()["worst"] == "critical"


def test_customer_rollup_refuses_assessments_of_another_cutoff() -> None:
    other = profile_from_dict({"cutoff": "2028-01-01"})
    item = assess(doc(clean()), other, NOW)
    with pytest.raises(ValueError, match="cut-off"):
        customer_rollup([item], default_profile())


def test_customer_rollup_of_nothing() -> None:
    rollup = customer_rollup([], default_profile())
    assert rollup.endpoints == 0
    assert rollup.worst is None
    assert rollup.breaking == ()


# -- robustness --------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5000) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
_BASES = [
    doc(mutate(replace(clean(service), deep=clean_deep())))
    for service, mutate in (FIRES[code] for code in sorted(FIRES))
]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from(_BASES),
    picks=st.lists(st.tuples(st.integers(0, 10_000), st.booleans(), _json), max_size=6),
)
def test_evaluate_never_raises_on_mutated_documents(
    base: dict[str, Any], picks: list[tuple[int, bool, Any]]
) -> None:
    # Given a realistic document with random fields replaced by junk or deleted
    document = copy.deepcopy(base)
    for index, delete, junk in picks:
        paths = [p for p in _paths(document) if p]
        if not paths:
            break
        path = paths[index % len(paths)]
        parent: Any = document
        for key in path[:-1]:
            parent = parent[key]
        if delete and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = junk
    # Then judging it never raises, and everything it returns is well-formed
    for profile in (default_profile(), PLAINTEXT_OVER_TLS):
        findings = evaluate(document, profile, NOW)
        assert all(f.code in _CHECKS and isinstance(f.severity, Severity) for f in findings)
        result = assess(document, profile, NOW)
        assert result.future.outcome in (
            "breaks",
            "partly_breaks",
            "degraded",
            "unaffected",
            "unknown",
        )
        result.to_dict()


@given(_json)
def test_evaluate_never_raises_on_arbitrary_json(value: Any) -> None:
    evaluate(value, default_profile(), NOW)
    assess(value, default_profile(), NOW)


# -- the documentation ---------------------------------------------------------------------


def test_docs_list_every_rule_with_the_generated_table() -> None:
    text = DOCS.read_text(encoding="utf-8")
    # The generated table appears verbatim, so severities and titles cannot drift
    assert rules_markdown() in text
    assert rules_details_markdown() in text
    for entry in RULES:
        assert f"`{entry.code}`" in text, entry.code
