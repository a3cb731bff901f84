"""The fleet summary's arithmetic (:func:`fleet.demo.summary.summarise`), on hand-made
rows — no database, no sockets: shared endpoints count once, certificates are judged
per name, customers without an account manager are listed apart."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fleet.demo.summary import EndpointRef, Exposure, Owner, summarise
from scanner.models import PROTOCOLS

_MODERN = dict.fromkeys(PROTOCOLS, False) | {"TLSv1.2": True, "TLSv1.3": True}
_LEGACY = dict.fromkeys(PROTOCOLS, True) | {"SSLv2": False, "SSLv3": False}
_OLD_ONLY = dict.fromkeys(PROTOCOLS, False) | {"TLSv1.0": True, "TLSv1.1": True}

MX = EndpointRef("mx.p.test", "192.0.2.1", 25, "smtp")
WEB = EndpointRef("a.test", "192.0.2.2", 443, "https")
OLD = EndpointRef("old.p.test", "192.0.2.3", 993, "imaps")


def use(
    domain: str, customer: str, endpoint: EndpointRef, endpoint_id: int, **facts: Any
) -> Exposure:
    base = Exposure(
        domain=domain,
        customer=customer,
        manager=None,
        host=endpoint.host,
        endpoint_id=endpoint_id,
        endpoint=endpoint,
        status="ok",
        error_kind=None,
        protocols=_MODERN,
        plaintext_before_tls=False,
        starttls_offered=True,
        cert_status="valid",
        cert_days_left=80,
    )
    return replace(base, **facts)


OWNERS = [
    Owner("a.test", "ok", "Alpha", "Ann", "ann@p.test"),
    Owner("b.test", "ok", "Beta", "Ann", "ann@p.test"),
    Owner("c.test", "null_mx", "Gamma", None, None),
]


def test_a_shared_endpoint_counts_once_and_its_domains_all() -> None:
    # Given one legacy MX that takes passwords in clear, used by two customers' domains
    legacy = {"protocols": _LEGACY, "plaintext_before_tls": True}
    rows = [
        use("a.test", "Alpha", MX, 1, **legacy),
        use("b.test", "Beta", MX, 1, **legacy),
        use("a.test", "Alpha", WEB, 2, host="a.test"),
        use("a.test", "Alpha", WEB, 2, host="www.a.test"),
    ]
    summary = summarise(OWNERS, rows)
    # Then the endpoint is counted once, its two domains and customers both
    assert (summary.endpoints, summary.uses) == (2, 4)
    assert summary.protocols["TLSv1.0"] == 1
    assert summary.protocols["TLSv1.2"] == 2
    legacy_tls = summary.finding("legacy_tls")
    assert legacy_tls.endpoints == (MX,)
    assert legacy_tls.domains == ("a.test", "b.test")
    assert legacy_tls.customers == ("Alpha", "Beta")
    assert legacy_tls.managers == ("Ann",)
    assert summary.finding("plaintext_login").customers == ("Alpha", "Beta")
    assert summary.finding("legacy_only").endpoints == ()
    assert (summary.domains, summary.customers, summary.managers) == (3, 3, 1)
    assert summary.discovery == {"null_mx": 1, "ok": 2}


def test_certificates_are_judged_per_name() -> None:
    # Given one web endpoint whose certificate is right for a.test but not for b.test,
    # and an old-only endpoint whose certificate expires in a week
    rows = [
        use("a.test", "Alpha", WEB, 2, host="a.test"),
        use("b.test", "Beta", WEB, 2, host="b.test", cert_status="hostname_mismatch"),
        use("b.test", "Beta", WEB, 2, host="www.b.test", cert_status="hostname_mismatch"),
        use("a.test", "Alpha", OLD, 3, protocols=_OLD_ONLY, cert_days_left=7),
    ]
    summary = summarise(OWNERS, rows)
    assert summary.finding("certificate").domains == ("b.test",)
    assert summary.finding("certificate").customers == ("Beta",)
    assert summary.certificates == {"hostname_mismatch": 1}  # one endpoint, two names
    assert summary.finding("certificate_expiring").endpoints == (OLD,)
    assert summary.finding("legacy_only").customers == ("Alpha",)


def test_errors_missing_results_and_customers_without_a_manager() -> None:
    no_starttls = {
        "status": "error",
        "error_kind": "starttls_not_offered",
        "protocols": dict.fromkeys(PROTOCOLS),
        "starttls_offered": False,
        "plaintext_before_tls": True,
        "cert_status": None,
        "cert_days_left": None,
    }
    rows = [
        use("c.test", "Gamma", MX, 1, **no_starttls),
        use("a.test", "Alpha", WEB, 2, status=None, protocols=dict.fromkeys(PROTOCOLS)),
    ]
    summary = summarise(OWNERS, rows)
    assert summary.results == {"error": 1, "missing": 1}
    assert summary.errors == {"starttls_not_offered": 1}
    assert summary.finding("no_starttls").customers == ("Gamma",)
    assert summary.finding("no_starttls").managers == ()
    assert summary.finding("certificate").endpoints == ()
    # Ann's customers first, the customer without a manager last
    assert [(m.name, [c.name for c in m.customers]) for m in summary.by_manager] == [
        ("Ann", ["Alpha", "Beta"]),
        (None, ["Gamma"]),
    ]
    gamma = summary.by_manager[1].customers[0]
    assert gamma.findings == ("plaintext_login", "no_starttls")
    document = summary.to_dict()
    assert document["account_managers"][1] == {
        "name": None,
        "email": None,
        "customers": [
            {"name": "Gamma", "domains": 1, "findings": ["plaintext_login", "no_starttls"]}
        ],
    }
    assert document["findings"]["no_starttls"]["endpoints"] == [MX.to_dict()]
