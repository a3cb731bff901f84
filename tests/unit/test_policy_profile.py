"""Policy profiles: the default, overrides from dicts and TOML files, and clear errors."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from policy import (
    DEFAULT_CUTOFF,
    RULES,
    PortClass,
    Severity,
    default_profile,
    evaluate,
    load_profile,
    profile_from_dict,
    rule,
)
from scanner.models import AuthInfo
from tests.unit.test_policy_documents import LEGACY_10, NOW, clean, doc, protocols


def legacy(service: str) -> dict[str, Any]:
    result = clean(service)
    return doc(
        replace(
            result,
            protocols=protocols("TLSv1.0", "TLSv1.2", "TLSv1.3"),
            cipher_suites={**result.cipher_suites, "TLSv1.0": LEGACY_10},
        )
    )


def test_default_profile_matches_the_announcement() -> None:
    profile = default_profile()
    assert profile.cutoff == DEFAULT_CUTOFF == date(2027, 1, 31)
    assert profile.expiring_days == 30
    assert profile.plaintext_mechanisms_over_tls is False
    # Every rule is on; plaintext mechanisms over TLS do not count
    assert profile.enabled == {r.code for r in RULES}
    assert not profile.is_enabled("auth.plaintext_over_tls")
    # TLS 1.0/1.1 and passwords before TLS are findings on client ports
    assert profile.severity_of(rule("tls.legacy_version"), PortClass.MAIL_CLIENT) is Severity.HIGH
    assert profile.severity_of(rule("tls.only_legacy"), PortClass.MAIL_CLIENT) is Severity.CRITICAL
    assert (
        profile.severity_of(rule("auth.plaintext_before_tls"), PortClass.MAIL_CLIENT)
        is Severity.CRITICAL
    )
    assert profile.severity_of(rule("starttls.not_offered"), PortClass.HTTPS) is None


def test_default_profile_takes_the_fleet_cutoff() -> None:
    assert default_profile(cutoff=date(2027, 6, 1)).cutoff == date(2027, 6, 1)


def test_severity_override_for_every_class_and_for_one() -> None:
    profile = profile_from_dict(
        {
            "severity": {
                "tls.legacy_version": "critical",
                "cert.expiring": {"smtp_relay": "info", "https": "HIGH"},
            }
        }
    )
    legacy_rule, expiring = rule("tls.legacy_version"), rule("cert.expiring")
    for port_class in PortClass:
        assert profile.severity_of(legacy_rule, port_class) is Severity.CRITICAL
    assert profile.severity_of(expiring, PortClass.SMTP_RELAY) is Severity.INFO
    assert profile.severity_of(expiring, PortClass.HTTPS) is Severity.HIGH
    assert profile.severity_of(expiring, PortClass.MAIL_CLIENT) is Severity.MEDIUM  # default
    # And findings carry the overridden severity
    found = {f.code: f.severity for f in evaluate(legacy("smtp"), profile, NOW)}
    assert found["tls.legacy_version"] is Severity.CRITICAL


def test_disabled_rules_do_not_fire() -> None:
    profile = profile_from_dict({"disable": ["tls.legacy_version"]})
    found = [f.code for f in evaluate(legacy("imaps"), profile, NOW)]
    assert "tls.legacy_version" not in found
    assert "tls.legacy_version" in [
        f.code for f in evaluate(legacy("imaps"), default_profile(), NOW)
    ]


def test_plaintext_mechanisms_flag_switches_the_rule_on() -> None:
    document = doc(replace(clean("submission"), auth=AuthInfo((), ("PLAIN", "LOGIN"), False)))
    strict = profile_from_dict({"plaintext_mechanisms_over_tls": True})
    assert [f.code for f in evaluate(document, strict, NOW)] == ["auth.plaintext_over_tls"]
    # Disabling the rule wins over the flag
    off = profile_from_dict(
        {"plaintext_mechanisms_over_tls": True, "disable": ["auth.plaintext_over_tls"]}
    )
    assert evaluate(document, off, NOW) == []


def test_toml_file(tmp_path: Path) -> None:
    # Given the documented example profile
    path = tmp_path / "policy.toml"
    path.write_text(
        """
name = "provider-2027"
cutoff = 2027-03-31
expiring_days = 21
plaintext_mechanisms_over_tls = true
disable = ["tls.no_tls13", "auth.on_relay"]
enable = []

[severity]
"tls.legacy_version" = "critical"
"cert.expiring" = { smtp_relay = "info", https = "high" }
""",
        encoding="utf-8",
    )
    profile = load_profile(path)
    assert profile.name == "provider-2027"
    assert profile.cutoff == date(2027, 3, 31)
    assert profile.expiring_days == 21
    assert profile.is_enabled("auth.plaintext_over_tls")
    assert not profile.is_enabled("tls.no_tls13")
    assert not profile.is_enabled("auth.on_relay")
    assert profile.severity_of(rule("cert.expiring"), PortClass.HTTPS) is Severity.HIGH
    # And it writes back in the same shape
    assert profile_from_dict(profile.to_dict()) == profile


def test_profile_round_trips_through_to_dict() -> None:
    assert profile_from_dict(default_profile().to_dict()) == default_profile()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"cutof": "2027-01-01"}, r"unknown profile keys \['cutof'\]"),
        ({"disable": ["tls.sslv3"]}, r"disable: unknown rule code 'tls.sslv3' \(known: "),
        ({"enable": "tls.legacy_version"}, "enable: must be a list of rule codes"),
        (
            {"severity": {"tls.legacy_version": "urgent"}},
            r"severity.tls.legacy_version: bad severity 'urgent' \(allowed: info, low, medium, "
            r"high, critical\)",
        ),
        ({"severity": {"no.such": "low"}}, "severity: unknown rule code 'no.such'"),
        (
            {"severity": {"cert.expired": {"imap": "low"}}},
            r"severity.cert.expired: unknown port class 'imap' \(allowed: smtp_relay, "
            r"mail_client, https\)",
        ),
        (
            {"severity": {"starttls.not_offered": {"https": "low"}}},
            r"severity.starttls.not_offered: rule does not apply to https "
            r"\(only to smtp_relay, mail_client\)",
        ),
        ({"severity": ["low"]}, "severity: must be a table of rule codes"),
        ({"cutoff": "31.01.2027"}, "cutoff: must be a date like 2027-01-31, not '31.01.2027'"),
        ({"cutoff": 20270131}, "cutoff: must be a date like 2027-01-31"),
        ({"cutoff": datetime(2027, 1, 31, 12)}, "cutoff: must be a date"),
        ({"expiring_days": -1}, "expiring_days: must be a whole number of days >= 0"),
        ({"expiring_days": True}, "expiring_days: must be a whole number"),
        ({"plaintext_mechanisms_over_tls": "yes"}, "plaintext_mechanisms_over_tls: must be true"),
        ({"name": ""}, "name: must be a non-empty string"),
        (
            {"enable": ["cert.expired"], "disable": ["cert.expired"]},
            r"rules both enabled and disabled: \['cert.expired'\]",
        ),
    ],
)
def test_bad_profiles_are_refused_with_clear_messages(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        profile_from_dict(data)


def test_not_a_table_is_refused() -> None:
    with pytest.raises(ValueError, match="must be a table"):
        profile_from_dict(["cutoff"])  # type: ignore[arg-type]


def test_bad_toml_file_names_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("cutoff = [", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken.toml: not valid TOML"):
        load_profile(broken)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('[severity]\n"tls.legacy_version" = "urgent"\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"wrong.toml: severity.tls.legacy_version: bad severity"):
        load_profile(wrong)


def test_severity_orders_by_rank() -> None:
    assert Severity.CRITICAL > Severity.HIGH > Severity.MEDIUM > Severity.LOW > Severity.INFO
    assert max([Severity.LOW, Severity.CRITICAL, Severity.MEDIUM]) is Severity.CRITICAL
    assert sorted([Severity.HIGH, Severity.INFO]) == [Severity.INFO, Severity.HIGH]
