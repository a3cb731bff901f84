"""Judging result documents: findings per endpoint, the cut-off view, the customer roll-up.

Everything here is a pure function of a result document (the dict of
``EndpointResult.to_dict()``, as stored), a :class:`~policy.profile.Profile` and the time
of judgement. Two promises hold for every document, however partial or odd:

* An error document yields no protocol, cipher, certificate or deep-check findings: a
  failed scan says neither "TLS 1.0 enabled" nor "disabled". What the dialogue did
  establish before the failure (no STARTTLS, a password offered in clear) still counts,
  and the failure itself is the ``scan.error`` finding.
* An undecided value (null, missing, mistyped) never produces a finding that claims
  something: "no forward secrecy" needs every version decided and every suite list
  complete; "TLS 1.2 missing" needs TLS 1.2 and 1.3 both seen refused.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from policy import _doc
from policy._doc import EndpointRef
from policy.profile import Profile
from policy.rules import RULES, RULES_VERSION, PortClass, Rule, Severity, port_class_of
from scanner.ciphers import CipherSuite, by_name

__all__ = [
    "Assessment",
    "CustomerRollup",
    "CutoffImpact",
    "EndpointFuture",
    "Finding",
    "assess",
    "customer_rollup",
    "endpoint_future",
    "evaluate",
]

#: Mechanisms that carry the password itself ("normal password"), SASL and pseudo.
PLAINTEXT_MECHANISMS = frozenset({"PLAIN", "LOGIN", "IMAP-LOGIN", "USER"})

# Rules judged on error documents too: facts the plaintext dialogue establishes before
# any TLS probe, and the error itself.
_ON_ERROR = frozenset(
    {
        "starttls.not_offered",
        "auth.plaintext_before_tls",
        "auth.on_relay",
        "auth.plaintext_over_tls",
        "scan.error",
    }
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule that fired on one endpoint, with what the scan showed.

    ``detail`` says what exactly was seen ("accepts TLSv1.0, TLSv1.1"); ``evidence``
    lists the items (versions, suites, mechanisms, dates) behind it.
    """

    code: str
    severity: Severity
    port_class: PortClass
    title: str
    detail: str
    explanation: str
    remedy: str
    endpoint: EndpointRef
    evidence: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity.value,
            "port_class": self.port_class.value,
            "title": self.title,
            "detail": self.detail,
            "explanation": self.explanation,
            "remedy": self.remedy,
            "endpoint": self.endpoint.to_dict(),
            "evidence": list(self.evidence),
        }


@dataclass(frozen=True, slots=True)
class _Hit:
    detail: str
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Facts:
    """What the document establishes, read once (tolerantly) for every rule."""

    doc: Mapping[str, Any]
    ok: bool
    port_class: PortClass
    protocols: dict[str, bool | None]
    suites: dict[str, tuple[str, ...]]
    certificate: Mapping[str, Any] | None
    starttls: Mapping[str, Any] | None
    auth: Mapping[str, Any] | None
    deep: Mapping[str, Any] | None
    error_kind: str | None
    now: datetime
    profile: Profile

    def accepted(self, versions: Iterable[str]) -> list[str]:
        return [v for v in versions if self.protocols.get(v) is True]

    def known_suites(self) -> list[tuple[str, CipherSuite]]:
        """(version, suite) for every accepted suite the registry knows (SSLv2 aside)."""
        found = []
        for version, names in self.suites.items():
            if version == "SSLv2":
                continue
            for name in names:
                suite = by_name(name)
                if suite is not None:
                    found.append((version, suite))
        return found

    def suite_lists_complete(self) -> bool:
        """Whether the suite lists show everything the endpoint accepts (SSLv2 aside).

        Needs every version decided, a non-empty list for each accepted one, every name
        known to the registry, and no failed hello probe along the way.
        """
        if any(value is None for value in self.protocols.values()):
            return False
        for version in self.accepted(_doc.VERSIONS[1:]):
            names = self.suites.get(version)
            if not names or any(by_name(n) is None for n in names):
                return False
        partial = self.doc.get("partial_errors")
        if not isinstance(partial, list):
            return False
        return not any(
            isinstance(e, Mapping) and e.get("phase") in ("tls_hello", None) for e in partial
        )


def evaluate(document: Mapping[str, Any], profile: Profile, now: datetime) -> list[Finding]:
    """The findings for one result document under ``profile``, judged at ``now``.

    Never raises for what is in the document: anything missing or mistyped counts as
    undecided. Findings come in rule-table order.
    """
    facts = _facts(document, profile, now)
    if facts is None:
        return []
    findings = []
    for entry in RULES:
        severity = profile.severity_of(entry, facts.port_class)
        if severity is None or not profile.is_enabled(entry.code):
            continue
        if not facts.ok and entry.code not in _ON_ERROR:
            continue
        hit = _CHECKS[entry.code](facts)
        if hit is not None:
            findings.append(_finding(entry, severity, facts, hit))
    return findings


def _facts(document: object, profile: Profile, now: datetime) -> _Facts | None:
    doc = _doc.mapping(document)
    if doc is None:
        return None
    moment = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    ok = _doc.is_ok(doc)
    return _Facts(
        doc=doc,
        ok=ok,
        port_class=port_class_of(_doc.sub(doc, "target")),
        protocols=_doc.protocols(doc),
        suites=_doc.suites(doc),
        certificate=_doc.sub(doc, "certificate"),
        starttls=_doc.sub(doc, "starttls"),
        auth=_doc.sub(doc, "auth"),
        deep=_doc.sub(doc, "deep"),
        error_kind=_doc.text(_doc.sub(doc, "error"), "kind"),
        now=moment,
        profile=profile,
    )


def _finding(entry: Rule, severity: Severity, facts: _Facts, hit: _Hit) -> Finding:
    return Finding(
        code=entry.code,
        severity=severity,
        port_class=facts.port_class,
        title=entry.title,
        detail=hit.detail,
        explanation=entry.explain(facts.port_class),
        remedy=entry.remedy,
        endpoint=_doc.endpoint_ref(facts.doc),
        evidence=hit.evidence,
    )


# -- checks, one per rule code ------------------------------------------------------------


def _ssl_version(f: _Facts) -> _Hit | None:
    seen = f.accepted(_doc.SSL)
    return _Hit(f"accepts {', '.join(seen)}", tuple(seen)) if seen else None


def _legacy_version(f: _Facts) -> _Hit | None:
    seen = f.accepted(_doc.LEGACY_TLS)
    return _Hit(f"accepts {', '.join(seen)}", tuple(seen)) if seen else None


def _only_legacy(f: _Facts) -> _Hit | None:
    if any(f.protocols[v] is not False for v in _doc.MODERN_TLS):
        return None
    seen = f.accepted(_doc.SSL + _doc.LEGACY_TLS)
    if not seen:
        return None
    return _Hit(f"accepts only {', '.join(seen)}; refuses TLSv1.2 and TLSv1.3", tuple(seen))


def _no_tls13(f: _Facts) -> _Hit | None:
    if f.protocols["TLSv1.3"] is False and f.protocols["TLSv1.2"] is True:
        return _Hit("accepts TLSv1.2 but refuses TLSv1.3", ("TLSv1.2",))
    return None


def _suites_where(f: _Facts, test: Callable[[CipherSuite], bool], what: str) -> _Hit | None:
    seen = [f"{version} {suite.name}" for version, suite in f.known_suites() if test(suite)]
    if not seen:
        return None
    names = sorted({item.split(" ", 1)[1] for item in seen})
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return _Hit(f"accepts {what}: {', '.join(names[:3])}{more}", tuple(seen))


_SIXTY_FOUR_BIT = ("DES", "3DES", "IDEA", "RC2", "GOST28147")


def _is_des(suite: CipherSuite) -> bool:
    return suite.encryption.startswith(_SIXTY_FOUR_BIT)


def _all_suites_lack(f: _Facts, test: Callable[[CipherSuite], bool], what: str) -> _Hit | None:
    if f.protocols["TLSv1.3"] is True:
        return None  # every TLS 1.3 suite is forward-secret and AEAD
    if not f.suite_lists_complete():
        return None
    suites = f.known_suites()
    if not suites or any(test(suite) for _, suite in suites):
        return None
    versions = sorted({version for version, _ in suites}, key=_doc.VERSIONS.index)
    count = len({s.name for _, s in suites})
    return _Hit(
        f"none of the {count} accepted suites ({', '.join(versions)}) {what}",
        tuple(f"{version} {suite.name}" for version, suite in suites),
    )


def _starttls_not_offered(f: _Facts) -> _Hit | None:
    offered = _doc.flag(f.starttls, "offered")
    if offered is False or (offered is None and f.error_kind == "starttls_not_offered"):
        return _Hit("the service does not advertise STARTTLS")
    return None


def _starttls_injection(f: _Facts) -> _Hit | None:
    if _doc.flag(f.starttls, "injection_vulnerable") is True:
        return _Hit("plaintext pipelined with STARTTLS was answered after the upgrade")
    return None


def _plaintext_before_tls(f: _Facts) -> _Hit | None:
    if _doc.flag(f.auth, "plaintext_before_tls") is not True:
        return None
    before = _doc.strings(f.auth.get("before_tls") if f.auth else None) or ()
    shown = [m for m in before if m.upper() in PLAINTEXT_MECHANISMS] or list(before)
    detail = "password login offered before TLS"
    if shown:
        detail += f": {', '.join(shown)}"
    if _doc.text(f.auth, "active_check") == "accepted":
        detail += " (a test login in clear was taken and judged)"
    return _Hit(detail, tuple(shown))


def _auth_on_relay(f: _Facts) -> _Hit | None:
    before = _doc.strings(f.auth.get("before_tls") if f.auth else None) or ()
    after = _doc.strings(f.auth.get("after_tls") if f.auth else None) or ()
    mechanisms = list(dict.fromkeys((*before, *after)))
    if not mechanisms:
        return None
    return _Hit(f"AUTH offered: {', '.join(mechanisms)}", tuple(mechanisms))


def _plaintext_over_tls(f: _Facts) -> _Hit | None:
    after = _doc.strings(f.auth.get("after_tls") if f.auth else None) or ()
    plain = [m for m in after if m.upper() in PLAINTEXT_MECHANISMS]
    if not plain:
        return None
    return _Hit(f"offers {', '.join(plain)} after TLS", tuple(plain))


def _cert_dates(f: _Facts) -> tuple[datetime | None, datetime | None]:
    return (
        _doc.timestamp(f.certificate.get("not_before")) if f.certificate else None,
        _doc.timestamp(f.certificate.get("not_after")) if f.certificate else None,
    )


def _cert_expired(f: _Facts) -> _Hit | None:
    if f.certificate is None:
        return None
    _, not_after = _cert_dates(f)
    if not_after is not None:
        if f.now > not_after:
            return _Hit(f"expired on {not_after:%Y-%m-%d}", (not_after.isoformat(),))
        return None
    if _doc.text(f.certificate, "status") == "expired":
        return _Hit("expired (at scan time)")
    return None


def _cert_expiring(f: _Facts) -> _Hit | None:
    if f.certificate is None:
        return None
    _, not_after = _cert_dates(f)
    window = f.profile.expiring_days
    if not_after is not None:
        if f.now > not_after:
            return None  # cert.expired says it
        days = (not_after - f.now) // timedelta(days=1)
        if days <= window:
            return _Hit(
                f"expires on {not_after:%Y-%m-%d}, in {days} days (window: {window})",
                (not_after.isoformat(),),
            )
        return None
    days_left = _doc.integer(f.certificate, "days_left")
    status = _doc.text(f.certificate, "status")
    if days_left is not None and 0 <= days_left <= window and status != "expired":
        return _Hit(f"{days_left} days left at scan time (window: {window})")
    return None


def _cert_not_yet_valid(f: _Facts) -> _Hit | None:
    if f.certificate is None:
        return None
    not_before, _ = _cert_dates(f)
    if not_before is not None:
        if f.now < not_before:
            return _Hit(f"valid only from {not_before:%Y-%m-%d}", (not_before.isoformat(),))
        return None
    if _doc.text(f.certificate, "status") == "not_yet_valid":
        return _Hit("not yet valid (at scan time)")
    return None


def _cert_status(status: str, detail: str) -> Callable[[_Facts], _Hit | None]:
    def check(f: _Facts) -> _Hit | None:
        if _doc.text(f.certificate, "status") != status:
            return None
        message = _doc.text(f.certificate, "verify_message")
        issuer = _doc.text(f.certificate, "issuer")
        evidence = tuple(x for x in (issuer, message) if x)
        return _Hit(f"{detail}: {message}" if message else detail, evidence)

    return check


def _hostname_mismatch(f: _Facts) -> _Hit | None:
    if _doc.flag(f.certificate, "hostname_match") is not False:
        return None
    sni = _doc.text(_doc.sub(f.doc, "target"), "sni")
    names = _doc.strings(f.certificate.get("san") if f.certificate else None) or ()
    shown = ", ".join(names[:5]) or "no subjectAltName"
    return _Hit(f"{sni or 'the name'} is not among {shown}", tuple(names))


def _weak_key(f: _Facts) -> _Hit | None:
    key = _doc.text(f.certificate, "key")
    if key is None:
        return None
    kind, _, size = key.partition(" ")
    if kind in ("RSA", "DSA") and size.isdigit() and int(size) < 2048:
        return _Hit(f"{kind} key of {size} bits", (key,))
    return None


def _weak_signature(f: _Facts) -> _Hit | None:
    signature = _doc.text(f.certificate, "signature")
    if signature is not None and ("md5" in signature.lower() or "sha1" in signature.lower()):
        return _Hit(f"signed with {signature}", (signature,))
    return None


def _deep_flag(check: str, key: str, want: bool, detail: str) -> Callable[[_Facts], _Hit | None]:
    def test(f: _Facts) -> _Hit | None:
        if _doc.flag(_doc.sub(f.deep, check), key) is want:
            return _Hit(detail)
        return None

    return test


def _robot(f: _Facts) -> _Hit | None:
    robot = _doc.sub(f.deep, "robot")
    result = _doc.text(robot, "result")
    if _doc.flag(robot, "vulnerable") is True or (result or "").startswith("VULNERABLE"):
        return _Hit(f"sslyze: {result or 'vulnerable'}", (result,) if result else ())
    return None


def _no_fallback_scsv(f: _Facts) -> _Hit | None:
    if _doc.flag(_doc.sub(f.deep, "fallback_scsv"), "supported") is not False:
        return None
    legacy = f.accepted(("SSLv3", *_doc.LEGACY_TLS))
    if not legacy:
        return None  # nothing weaker to fall back to (TLS 1.3 has its own protection)
    return _Hit(f"no TLS_FALLBACK_SCSV while accepting {', '.join(legacy)}", tuple(legacy))


def _scan_error(f: _Facts) -> _Hit | None:
    if _doc.text(f.doc, "status") != "error" or f.error_kind == "starttls_not_offered":
        return None
    error = _doc.sub(f.doc, "error")
    kind = f.error_kind or "unknown"
    phase = _doc.text(error, "phase") or "?"
    message = _doc.text(error, "message") or ""
    return _Hit(f"{kind} in phase {phase}: {message}".rstrip(": "), (kind, phase))


_CHECKS: dict[str, Callable[[_Facts], _Hit | None]] = {
    "tls.ssl_version": _ssl_version,
    "tls.legacy_version": _legacy_version,
    "tls.only_legacy": _only_legacy,
    "tls.no_tls13": _no_tls13,
    "cipher.null": lambda f: _suites_where(f, lambda s: s.null, "NULL suites"),
    "cipher.anonymous": lambda f: _suites_where(f, lambda s: s.anon, "anonymous suites"),
    "cipher.export": lambda f: _suites_where(f, lambda s: s.export, "EXPORT suites"),
    "cipher.rc4": lambda f: _suites_where(
        f, lambda s: s.encryption.startswith("RC4"), "RC4 suites"
    ),
    "cipher.des": lambda f: _suites_where(f, _is_des, "64-bit block cipher suites"),
    "cipher.no_forward_secrecy": lambda f: _all_suites_lack(
        f, lambda s: s.forward_secrecy, "is forward-secret"
    ),
    "cipher.no_aead": lambda f: _all_suites_lack(f, lambda s: s.aead, "is AEAD"),
    "starttls.not_offered": _starttls_not_offered,
    "starttls.injection": _starttls_injection,
    "auth.plaintext_before_tls": _plaintext_before_tls,
    "auth.on_relay": _auth_on_relay,
    "auth.plaintext_over_tls": _plaintext_over_tls,
    "cert.expired": _cert_expired,
    "cert.expiring": _cert_expiring,
    "cert.not_yet_valid": _cert_not_yet_valid,
    "cert.untrusted": _cert_status("untrusted", "the chain does not verify"),
    "cert.self_signed": _cert_status("self_signed", "the certificate is self-signed"),
    "cert.hostname_mismatch": _hostname_mismatch,
    "cert.weak_key": _weak_key,
    "cert.weak_signature": _weak_signature,
    "vuln.heartbleed": _deep_flag("heartbleed", "vulnerable", True, "vulnerable (sslyze)"),
    "vuln.ccs_injection": _deep_flag("ccs_injection", "vulnerable", True, "vulnerable (sslyze)"),
    "vuln.robot": _robot,
    "vuln.insecure_renegotiation": _deep_flag(
        "renegotiation", "secure_renegotiation", False, "no RFC 5746 secure renegotiation"
    ),
    "vuln.client_renegotiation_dos": _deep_flag(
        "renegotiation",
        "client_renegotiation_dos",
        True,
        "honoured every client-initiated renegotiation",
    ),
    "vuln.compression": _deep_flag("compression", "supported", True, "TLS compression accepted"),
    "vuln.no_fallback_scsv": _no_fallback_scsv,
    "scan.error": _scan_error,
}


# -- the cut-off view ---------------------------------------------------------------------

Scope = Literal["all_clients", "some_clients", "degraded"]
Outcome = Literal["breaks", "partly_breaks", "degraded", "unaffected", "unknown"]


@dataclass(frozen=True, slots=True)
class CutoffImpact:
    """What one finding means on the cut-off day.

    ``scope``: ``all_clients`` (nobody can connect or log in any more),
    ``some_clients`` (the clients named in ``message`` fail), ``degraded`` (nothing
    fails, but traffic loses its protection, e.g. mail falls back to plaintext).
    """

    code: str
    scope: Scope
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "scope": self.scope, "message": self.message}


@dataclass(frozen=True, slots=True)
class EndpointFuture:
    """What happens to one endpoint on the cut-off date if nothing changes.

    ``outcome``: ``breaks`` (some impact hits all clients), ``partly_breaks``,
    ``degraded``, ``unaffected``, or ``unknown`` when the scan failed or left the
    deciding facts open (``undecided`` says which).
    """

    endpoint: EndpointRef
    port_class: PortClass
    cutoff: date
    outcome: Outcome
    impacts: tuple[CutoffImpact, ...] = ()
    undecided: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint.to_dict(),
            "port_class": self.port_class.value,
            "cutoff": self.cutoff.isoformat(),
            "outcome": self.outcome,
            "impacts": [i.to_dict() for i in self.impacts],
            "undecided": list(self.undecided),
        }


def _impact(finding: Finding, cutoff: date) -> CutoffImpact | None:
    day = cutoff.isoformat()
    relay = finding.port_class is PortClass.SMTP_RELAY
    code = finding.code
    if code == "tls.only_legacy":
        if relay:
            return CutoffImpact(
                code,
                "degraded",
                f"From {day} senders that require TLS 1.2 deliver in plaintext "
                "(or not at all under MTA-STS/DANE): the server offers nothing newer than "
                f"{finding.evidence[-1] if finding.evidence else 'TLS 1.1'}.",
            )
        return CutoffImpact(
            code,
            "all_clients",
            f"Every client breaks on {day}: the endpoint accepts only "
            f"{', '.join(finding.evidence)}, which are switched off.",
        )
    if code in ("tls.legacy_version", "tls.ssl_version"):
        versions = ", ".join(finding.evidence)
        if relay:
            return CutoffImpact(
                code,
                "degraded",
                f"From {day} senders limited to {versions} deliver in plaintext instead.",
            )
        return CutoffImpact(
            code,
            "some_clients",
            f"Clients that can only use {versions} (old Outlook, Android < 4.4, Java 6/7 "
            f"and similar) stop connecting on {day}; clients with TLS 1.2 or 1.3 keep working.",
        )
    if code == "auth.plaintext_before_tls":
        if relay:
            return CutoffImpact(
                code,
                "some_clients",
                f"From {day} clients that send AUTH on port 25 without STARTTLS are refused.",
            )
        return CutoffImpact(
            code,
            "some_clients",
            f"Clients that log in with a password before TLS (account set to 'no "
            f"encryption' or STARTTLS off) stop logging in on {day}.",
        )
    if code == "starttls.not_offered" and not relay:
        return CutoffImpact(
            code,
            "all_clients",
            f"Nobody can log in on this port from {day}: it offers no STARTTLS, and "
            "passwords before TLS are refused.",
        )
    if code == "auth.plaintext_over_tls":
        return CutoffImpact(
            code,
            "some_clients",
            f"Clients that use 'normal password' ({', '.join(finding.evidence)}) even over "
            f"TLS must switch to 'encrypted password' by {day}.",
        )
    return None


def endpoint_future(document: Mapping[str, Any], profile: Profile, now: datetime) -> EndpointFuture:
    """The cut-off view of one result document: what breaks on ``profile.cutoff``."""
    return assess(document, profile, now).future


def _future(
    document: Mapping[str, Any], findings: list[Finding], profile: Profile, facts: _Facts | None
) -> EndpointFuture:
    cutoff = profile.cutoff
    ref = _doc.endpoint_ref(_doc.mapping(document))
    port_class = facts.port_class if facts else PortClass.HTTPS
    impacts = [i for f in findings if (i := _impact(f, cutoff)) is not None]
    if any(i.code == "tls.only_legacy" for i in impacts):
        # "clients with TLS 1.2 keep working" is moot where there is no TLS 1.2
        impacts = [i for i in impacts if i.code not in ("tls.legacy_version", "tls.ssl_version")]
    undecided: list[str] = []
    if facts is None or not facts.ok:
        undecided.append("the scan failed: protocols and certificate unknown")
    else:
        if not any(facts.protocols[v] is True for v in _doc.MODERN_TLS) and not any(
            i.code == "tls.only_legacy" for i in impacts
        ):
            undecided.append("TLS 1.2/1.3 support undecided")
        _, not_after = _cert_dates(facts)
        deadline = datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC)
        if not_after is not None and not_after < deadline:
            impacts.append(
                CutoffImpact(
                    "cert.expired",
                    "degraded" if port_class is PortClass.SMTP_RELAY else "all_clients",
                    f"The certificate expires on {not_after:%Y-%m-%d}, before the cut-off "
                    f"({cutoff.isoformat()}), unless it is renewed.",
                )
            )
    scopes = {i.scope for i in impacts}
    outcome: Outcome
    if "all_clients" in scopes:
        outcome = "breaks"
    elif "some_clients" in scopes:
        outcome = "partly_breaks"
    elif undecided:
        outcome = "unknown"
    elif "degraded" in scopes:
        outcome = "degraded"
    else:
        outcome = "unaffected"
    return EndpointFuture(
        endpoint=ref,
        port_class=port_class,
        cutoff=cutoff,
        outcome=outcome,
        impacts=tuple(impacts),
        undecided=tuple(undecided),
    )


# -- per endpoint and per customer -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Assessment:
    """One endpoint judged: its findings and cut-off view, and what judged it."""

    endpoint: EndpointRef
    port_class: PortClass
    findings: tuple[Finding, ...]
    future: EndpointFuture
    profile: str
    rules_version: str = RULES_VERSION

    @property
    def worst(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint.to_dict(),
            "port_class": self.port_class.value,
            "findings": [f.to_dict() for f in self.findings],
            "future": self.future.to_dict(),
            "profile": self.profile,
            "rules_version": self.rules_version,
        }


def assess(document: Mapping[str, Any], profile: Profile, now: datetime) -> Assessment:
    """Findings and the cut-off view of one result document."""
    facts = _facts(document, profile, now)
    findings = evaluate(document, profile, now)
    future = _future(document, findings, profile, facts)
    return Assessment(
        endpoint=future.endpoint,
        port_class=future.port_class,
        findings=tuple(findings),
        future=future,
        profile=profile.name,
    )


_OUTCOMES: tuple[Outcome, ...] = ("breaks", "partly_breaks", "degraded", "unknown", "unaffected")


@dataclass(frozen=True, slots=True)
class CustomerRollup:
    """Many endpoints (one customer's) summed up for a notice or a dashboard row.

    Endpoints are counted once however many domains share them. ``rules`` counts the
    endpoints each rule fired on; ``breaking`` lists the futures that break.
    """

    cutoff: date
    endpoints: int
    outcomes: Mapping[str, int]
    worst: Severity | None
    by_severity: Mapping[str, int]
    rules: Mapping[str, int]
    breaking: tuple[EndpointFuture, ...] = field(default_factory=tuple)

    @property
    def summary(self) -> str:
        """One line for a notice: "2 of 7 endpoints break on 2027-01-31, 1 partly …"."""
        day = self.cutoff.isoformat()
        parts = [f"{self.outcomes['breaks']} of {self.endpoints} endpoints break on {day}"]
        for outcome, words in (
            ("partly_breaks", "partly break"),
            ("degraded", "lose protection"),
            ("unknown", "could not be judged"),
        ):
            if self.outcomes[outcome]:
                parts.append(f"{self.outcomes[outcome]} {words}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff.isoformat(),
            "endpoints": self.endpoints,
            "outcomes": dict(self.outcomes),
            "worst": self.worst.value if self.worst else None,
            "by_severity": dict(self.by_severity),
            "rules": dict(self.rules),
            "breaking": [f.to_dict() for f in self.breaking],
            "summary": self.summary,
        }


def customer_rollup(assessments: Iterable[Assessment], profile: Profile) -> CustomerRollup:
    """Sum up one customer's endpoint assessments (all judged under ``profile``).

    An endpoint reached through several domains appears once; when it was assessed
    more than once, its worst-looking assessment (most findings) is kept.
    """
    unique: dict[tuple[EndpointRef, PortClass], Assessment] = {}
    for item in assessments:
        if item.future.cutoff != profile.cutoff:
            raise ValueError(
                f"assessment of {item.endpoint} was made for cut-off {item.future.cutoff}, "
                f"not {profile.cutoff}"
            )
        key = (item.endpoint, item.port_class)
        kept = unique.get(key)
        if kept is None or len(item.findings) > len(kept.findings):
            unique[key] = item
    chosen = list(unique.values())
    outcomes = Counter(a.future.outcome for a in chosen)
    by_severity = Counter(f.severity.value for a in chosen for f in a.findings)
    rules = Counter(code for a in chosen for code in {f.code for f in a.findings})
    return CustomerRollup(
        cutoff=profile.cutoff,
        endpoints=len(chosen),
        outcomes={o: outcomes.get(o, 0) for o in _OUTCOMES},
        worst=max((w for a in chosen if (w := a.worst) is not None), default=None),
        by_severity={s.value: by_severity.get(s.value, 0) for s in Severity},
        rules=dict(sorted(rules.items())),
        breaking=tuple(a.future for a in chosen if a.future.outcome == "breaks"),
    )
