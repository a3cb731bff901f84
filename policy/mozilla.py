"""Compliance of one result document with Mozilla's Server Side TLS configurations.

:func:`mozilla_compliance` checks an endpoint against ``modern``, ``intermediate`` and
``old`` (by default :data:`~policy.mozilla_data.CURRENT`: 6.0's modern and intermediate,
5.7's old) and says, per configuration, whether the endpoint meets it and why not. Each
result names the guideline version it was judged by.

What is checked, from the result document:

* protocol versions: every accepted version is one the configuration lists;
* cipher suites: every accepted SSLv3-TLS 1.2 suite (in any version, allowed or not) is
  in the configuration's list, every TLS 1.3 suite in its TLS 1.3 list;
* TLS 1.3 groups: every accepted group is one of its ``tls_curves`` (when scanned);
* server cipher order: ``old`` wants the server's order enforced;
* the certificate (when fetched): key type, RSA size, curve, signature algorithm,
  lifespan, and that it verifies;
* deep-check vulnerabilities (with ``--deep``): compression, CCS injection, Heartbleed,
  ROBOT strong oracle, insecure renegotiation, no TLS_FALLBACK_SCSV.

Never checked, because no scan records them: HSTS max-age, DH and ECDH parameter sizes
and OCSP stapling; they are listed in ``not_checked``. ``compliant`` is None when the
document leaves a checked requirement undecided (a failed scan, an undecided version,
a missing suite list) and no violation was found.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from policy import _doc
from policy.mozilla_data import CURRENT, GUIDELINES, MozillaConfig

__all__ = ["MozillaCheck", "MozillaReport", "mozilla_compliance"]

# Scanner group and curve names (IANA / cryptography) → Mozilla's OpenSSL names.
_GROUP_NAMES = {"x25519": "X25519", "secp256r1": "prime256v1", "x448": "X448"}
_NEVER_CHECKED = ("HSTS max-age", "DH parameter size", "ECDH parameter size", "OCSP stapling")
_ORDER = ("modern", "intermediate", "old")


@dataclass(frozen=True, slots=True)
class MozillaCheck:
    """The verdict for one configuration: met, not met (``issues``) or undecided."""

    profile: str
    version: str
    href: str
    compliant: bool | None
    issues: tuple[str, ...] = ()
    not_checked: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "version": self.version,
            "href": self.href,
            "compliant": self.compliant,
            "issues": list(self.issues),
            "not_checked": list(self.not_checked),
        }


@dataclass(frozen=True, slots=True)
class MozillaReport:
    """The verdicts for every configuration; ``best`` is the strictest one met."""

    checks: tuple[MozillaCheck, ...]

    @property
    def best(self) -> str | None:
        met = [c.profile for c in self.checks if c.compliant is True]
        for name in _ORDER:
            if name in met:
                return name
        return None

    def check(self, profile: str) -> MozillaCheck:
        for item in self.checks:
            if item.profile == profile:
                return item
        raise KeyError(profile)

    def to_dict(self) -> dict[str, Any]:
        return {"best": self.best, "checks": [c.to_dict() for c in self.checks]}


def mozilla_compliance(document: Mapping[str, Any], version: str | None = None) -> MozillaReport:
    """Check a result document against Mozilla's configurations.

    ``version`` None checks :data:`~policy.mozilla_data.CURRENT`; ``"5.7"`` or ``"6.0"``
    check every configuration of that guideline version. Never raises for what is in
    the document; an unknown version raises ValueError.
    """
    if version is None:
        configs: Iterable[MozillaConfig] = CURRENT
    else:
        try:
            configs = GUIDELINES[version].values()
        except KeyError:
            known = ", ".join(sorted(GUIDELINES))
            raise ValueError(
                f"unknown Mozilla guideline version {version!r} (known: {known})"
            ) from None
    doc = _doc.mapping(document)
    return MozillaReport(tuple(_check(doc, config) for config in configs))


def _check(doc: Mapping[str, Any] | None, config: MozillaConfig) -> MozillaCheck:
    issues: list[str] = []
    open_points: list[str] = []  # checked requirements the document leaves undecided
    not_checked: list[str] = list(_NEVER_CHECKED)
    if doc is None or not _doc.is_ok(doc):
        open_points.append("the scan failed")
    else:
        _versions(doc, config, issues, open_points)
        _suites(doc, config, issues, open_points)
        _groups(doc, config, issues, not_checked)
        _order(doc, config, issues, not_checked)
        _certificate(doc, config, issues, not_checked)
        _vulnerabilities(doc, issues, not_checked)
    compliant = False if issues else (None if open_points else True)
    return MozillaCheck(
        profile=config.name,
        version=config.version,
        href=config.href,
        compliant=compliant,
        issues=tuple(issues),
        not_checked=tuple(open_points + not_checked),
    )


def _versions(
    doc: Mapping[str, Any], config: MozillaConfig, issues: list[str], open_points: list[str]
) -> None:
    protocols = _doc.protocols(doc)
    extra = [v for v, on in protocols.items() if on is True and v not in config.tls_versions]
    if extra:
        issues.append(
            f"accepts {', '.join(extra)}; {config.name} allows only {_list(config.tls_versions)}"
        )
    undecided = [v for v, on in protocols.items() if on is None and v not in config.tls_versions]
    if undecided:
        open_points.append(f"support for {', '.join(undecided)} undecided")
    if not any(protocols[v] is True for v in config.tls_versions) and not any(
        protocols[v] is None for v in config.tls_versions
    ):
        issues.append(f"accepts none of {_list(config.tls_versions)}")


def _suites(
    doc: Mapping[str, Any], config: MozillaConfig, issues: list[str], open_points: list[str]
) -> None:
    protocols = _doc.protocols(doc)
    suites = _doc.suites(doc)
    for version in config.tls_versions:
        if protocols[version] is True and not suites.get(version):
            open_points.append(f"cipher suites of {version} not enumerated")
    tls13 = set(config.ciphersuites)
    older = set(config.ciphers)
    bad13 = sorted({s for s in suites.get("TLSv1.3", ()) if s not in tls13})
    bad = sorted(
        {
            s
            for version, names in suites.items()
            if version not in ("SSLv2", "TLSv1.3")  # SSLv2 specs are not suites
            for s in names
            if s not in older
        }
    )
    if bad13:
        issues.append(f"TLS 1.3 suites not in {config.name}: {', '.join(bad13)}")
    if bad:
        issues.append(f"cipher suites not in {config.name}: {', '.join(bad)}")


def _groups(
    doc: Mapping[str, Any], config: MozillaConfig, issues: list[str], not_checked: list[str]
) -> None:
    groups = _doc.strings(doc.get("tls13_groups"))
    if groups is None:
        if _doc.protocols(doc)["TLSv1.3"] is True:
            not_checked.append("TLS 1.3 groups (not scanned)")
        not_checked.append("TLS 1.2 ECDHE curves")
        return
    allowed = set(config.tls_curves)
    bad = [g for g in groups if _GROUP_NAMES.get(g, g) not in allowed]
    if bad:
        issues.append(f"TLS 1.3 groups not in {config.name}: {', '.join(bad)}")
    not_checked.append("TLS 1.2 ECDHE curves")


def _order(
    doc: Mapping[str, Any], config: MozillaConfig, issues: list[str], not_checked: list[str]
) -> None:
    if not config.server_preferred_order:
        return  # "let the client choose" is a recommendation, not a requirement
    preference = _doc.flag(doc, "server_preference")
    if preference is False:
        issues.append(f"{config.name} wants the server's cipher order enforced; it is not")
    elif preference is None:
        not_checked.append("server cipher order (undecided)")


def _certificate(
    doc: Mapping[str, Any], config: MozillaConfig, issues: list[str], not_checked: list[str]
) -> None:
    cert = _doc.sub(doc, "certificate")
    if cert is None:
        not_checked.append("certificate (not fetched)")
        return
    key = _doc.text(cert, "key") or ""
    kind, _, detail = key.partition(" ")
    if kind == "RSA":
        if "rsa" not in config.certificate_types:
            issues.append(
                f"an RSA certificate; {config.name} wants {_list(config.certificate_types)}"
            )
        elif config.rsa_key_size and detail.isdigit() and int(detail) < config.rsa_key_size:
            issues.append(f"RSA key of {detail} bits; {config.name} wants {config.rsa_key_size}")
    elif kind == "EC":
        curve = _GROUP_NAMES.get(detail, detail)
        if "ecdsa" not in config.certificate_types:
            issues.append(
                f"an ECDSA certificate; {config.name} wants {_list(config.certificate_types)}"
            )
        elif curve not in config.certificate_curves:
            issues.append(
                f"certificate curve {detail}; "
                f"{config.name} wants {_list(config.certificate_curves)}"
            )
    elif key:
        issues.append(f"a {key} certificate; {config.name} wants {_list(config.certificate_types)}")
    else:
        not_checked.append("certificate key (unknown)")
    signature = _doc.text(cert, "signature")
    if signature is not None and signature not in config.certificate_signatures:
        issues.append(
            f"certificate signed with {signature}; {config.name} wants "
            f"{_list(config.certificate_signatures)}"
        )
    not_before = _doc.timestamp(cert.get("not_before"))
    not_after = _doc.timestamp(cert.get("not_after"))
    if not_before is not None and not_after is not None:
        days = (not_after - not_before).days
        if days > config.maximum_certificate_lifespan:
            issues.append(
                f"certificate lifespan {days} days; {config.name} allows "
                f"{config.maximum_certificate_lifespan}"
            )
    if _doc.flag(cert, "trusted") is False:
        issues.append("the certificate does not verify against the trust store")


def _vulnerabilities(doc: Mapping[str, Any], issues: list[str], not_checked: list[str]) -> None:
    deep = _doc.sub(doc, "deep")
    if deep is None:
        not_checked.append("vulnerabilities (no deep checks)")
        return
    tests = (
        ("compression", "supported", True, "TLS compression accepted (CRIME)"),
        ("ccs_injection", "vulnerable", True, "vulnerable to OpenSSL CCS injection"),
        ("heartbleed", "vulnerable", True, "vulnerable to Heartbleed"),
        ("fallback_scsv", "supported", False, "no TLS_FALLBACK_SCSV downgrade protection"),
        ("renegotiation", "secure_renegotiation", False, "insecure renegotiation"),
    )
    for check, key, bad, message in tests:
        value = _doc.flag(_doc.sub(deep, check), key)
        if value is bad:
            issues.append(message)
        elif value is None:
            not_checked.append(f"{check} (not decided)")
    robot = _doc.text(_doc.sub(deep, "robot"), "result")
    if robot == "VULNERABLE_STRONG_ORACLE":
        issues.append("vulnerable to ROBOT (strong oracle)")
    elif robot is None:
        not_checked.append("robot (not decided)")


def _list(items: Iterable[str]) -> str:
    return ", ".join(sorted(items))
