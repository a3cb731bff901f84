"""Name handling, resolver configuration, typed answers, the endpoint plan and the fan-out
of results to domains (no sockets: the discoveries are written out by hand)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from scanner.discovery import (
    EndpointKey,
    EndpointPlan,
    EndpointUse,
    PortProfile,
    discover,
    domain_results,
    endpoint_key,
    normalise_domain,
    plan_endpoints,
)
from scanner.dns import DnsLookupError, HostLookup, RecordSet, Resolver, parse_nameserver
from scanner.errors import DnsError, TargetError
from scanner.models import (
    CertificateInfo,
    Discovery,
    EndpointResult,
    HostAddresses,
    MxRecord,
    SrvRecord,
    Target,
)

# -- names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("example.com", "example.com"),
        ("Example.COM.", "example.com"),
        ("  mail.example.com  ", "mail.example.com"),
        ("Bücher.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("ÖBB.at", "xn--bb-eka.at"),
    ],
)
def test_normalise_domain(name: str, expected: str) -> None:
    assert normalise_domain(name) == expected


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty host name"),
        (".", "empty host name"),
        ("exa mple.com", "white space"),
        ("-bad.example", "hyphen"),
        ("a..example", "invalid host name"),
        ("x" * 64 + ".example", "invalid host name"),
        (("a" * 60 + ".") * 5 + "example", "too long"),
        ("bad!name.example", "invalid host name"),
        ("192.0.2.1", "is an IP address, not a domain"),
        ("2001:db8::1", "is an IP address, not a domain"),
        ("xn--zz.example", "invalid host name"),
    ],
)
def test_bad_domains_say_why(name: str, reason: str) -> None:
    with pytest.raises(TargetError, match=reason):
        normalise_domain(name)


async def test_discover_rejects_a_bad_name_before_any_query() -> None:
    resolver = Resolver(["192.0.2.53"])  # never asked: nothing is sent
    with pytest.raises(TargetError, match="white space"):
        await discover("bad name.example", resolver)
    assert resolver.stats.lookups == 0


# -- resolver configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.53", ("192.0.2.53", 53)),
        ("192.0.2.53:5353", ("192.0.2.53", 5353)),
        (" 127.0.0.1:53 ", ("127.0.0.1", 53)),
        ("2001:db8::53", ("2001:db8::53", 53)),
        ("[2001:db8::53]:5353", ("2001:db8::53", 5353)),
        ("[2001:db8::53]", ("2001:db8::53", 53)),
    ],
)
def test_parse_nameserver(text: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("resolver.example", "not an IP address"),
        ("192.0.2.53:0", "invalid port"),
        ("192.0.2.53:65536", "invalid port"),
        ("192.0.2.53:dns", "invalid port"),
        ("[2001:db8::53", "use \\[v6\\]:port"),
        ("[2001:db8::53]x", "use \\[v6\\]:port"),
        ("", "not an IP address"),
    ],
)
def test_bad_nameservers_say_why(text: str, reason: str) -> None:
    with pytest.raises(DnsError, match=reason) as raised:
        parse_nameserver(text)
    assert raised.value.phase == "plan"


def test_resolver_configuration() -> None:
    resolver = Resolver(["192.0.2.53:5353", "2001:db8::53"], timeout=1.5, retries=0)
    assert resolver.nameservers == ("192.0.2.53:5353", "[2001:db8::53]:53")
    assert (resolver.timeout, resolver.retries) == (1.5, 0)
    with pytest.raises(ValueError, match="positive"):
        Resolver(["192.0.2.53"], timeout=0)
    with pytest.raises(ValueError, match="retries"):
        Resolver(["192.0.2.53"], retries=-1)
    with pytest.raises(ValueError, match="max_concurrency"):
        Resolver(["192.0.2.53"], max_concurrency=0)


def test_system_resolver_reads_resolv_conf(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 192.0.2.99\nnameserver 2001:db8::99\n")
    resolver = Resolver(resolv_conf=str(conf))
    assert resolver.nameservers == ("192.0.2.99:53", "[2001:db8::99]:53")
    conf.write_text("# no nameserver lines\n")
    with pytest.raises(DnsError, match="no nameservers configured"):
        Resolver(resolv_conf=str(conf))
    with pytest.raises(DnsError, match="no nameservers configured"):
        Resolver(resolv_conf=str(tmp_path / "missing.conf"))


# -- typed answers ---------------------------------------------------------------------------


def test_record_set_records_or_raise() -> None:
    ok: RecordSet[str] = RecordSet("h.example", "A", "ok", ("192.0.2.1",))
    assert ok.records_or_raise() == ("192.0.2.1",)
    assert not ok.failed
    error = DnsLookupError("h.example A: timed out", name="h.example", rdtype="A", reason="timeout")
    timed_out: RecordSet[str] = RecordSet("h.example", "A", "timeout", error=error)
    assert timed_out.failed
    with pytest.raises(DnsLookupError, match="timed out"):
        timed_out.records_or_raise()
    assert error.kind == "dns"


def test_host_lookup_to_host_addresses() -> None:
    error = DnsLookupError("h.example AAAA: SERVFAIL", name="h", rdtype="AAAA", reason="servfail")
    lookup = HostLookup("h.example", "ok", ("192.0.2.1",), "real.example", (error,))
    assert lookup.to_host_addresses() == HostAddresses(
        "h.example", ("192.0.2.1",), "ok", "alias for real.example; h.example AAAA: SERVFAIL"
    )
    assert HostLookup("h.example", "no_address").to_host_addresses().note is None


# -- the plan ----------------------------------------------------------------------------

MX_A = HostAddresses("mx-a.provider.example", ("203.0.113.1", "2001:db8:1::1"))
MX_A_ALIAS = HostAddresses("mx.customer2.example", ("203.0.113.1",), "cname", "alias")
MX_B = HostAddresses("mx-b.provider.example", ("203.0.113.2",))
IMAP = HostAddresses("imap.provider.example", ("203.0.113.3",))
WEB = "203.0.113.80"


def _domain(
    name: str,
    *mx: tuple[int, HostAddresses],
    srv: tuple[SrvRecord, ...] = (),
    implicit_mx: bool = False,
) -> Discovery:
    """An ``ok`` discovery with these MX (and SRV) records, apex and www on ``WEB``."""
    return Discovery(
        domain=name,
        status="ok",
        mx=tuple(MxRecord(preference, host) for preference, host in mx),
        implicit_mx=implicit_mx,
        srv=srv,
        web=(HostAddresses(name, (WEB,)), HostAddresses(f"www.{name}", (WEB,))),
    )


def _fleet() -> list[Discovery]:
    return [
        _domain("customer1.example", (10, MX_A), (20, MX_B)),
        _domain("customer2.example", (10, MX_A_ALIAS)),
        _domain(
            "customer3.example",
            (10, MX_B),
            srv=(
                SrvRecord("imaps", 0, 1, 993, IMAP),
                SrvRecord("submission", 0, 1, 2587, IMAP),
                SrvRecord("pop3", 0, 0, 0, None),  # "." — not offered
            ),
        ),
        _domain(
            "implicit.example",
            (0, HostAddresses("implicit.example", ("203.0.113.9",))),
            implicit_mx=True,
        ),
        Discovery(domain="nullmx.example", status="null_mx", null_mx=True),
        Discovery(domain="gone.example", status="nxdomain"),
    ]


def _plan(discoveries: list[Discovery], profile: PortProfile | None = None) -> EndpointPlan:
    """The plan, documentation addresses (192.0.2.0/24 …, not public) allowed."""
    return plan_endpoints(discoveries, profile or PortProfile(), allow_private=True)


def test_each_endpoint_is_planned_once_with_every_use() -> None:
    plan = _plan(_fleet())
    keys = [endpoint_key(t) for t in plan.targets]
    assert keys == sorted(set(keys), key=keys.index)  # unique
    assert set(keys) == {
        EndpointKey("203.0.113.1", 25, "smtp"),
        EndpointKey("203.0.113.2", 25, "smtp"),
        EndpointKey("203.0.113.9", 25, "smtp"),
        EndpointKey("2001:db8:1::1", 25, "smtp"),
        EndpointKey("203.0.113.3", 993, "imaps"),
        EndpointKey("203.0.113.3", 2587, "submission"),  # the SRV's port
        EndpointKey(WEB, 443, "https"),
    }
    shared = EndpointKey("203.0.113.1", 25, "smtp")
    assert plan.uses(shared) == (
        EndpointUse("customer1.example", "mx-a.provider.example", "mx"),
        EndpointUse("customer2.example", "mx.customer2.example", "mx"),
    )
    assert plan.cert_names(shared) == {"mx-a.provider.example", "mx.customer2.example"}
    assert plan.uses(EndpointKey("203.0.113.9", 25, "smtp")) == (
        EndpointUse("implicit.example", "implicit.example", "implicit_mx"),
    )
    assert {u.how for u in plan.uses(EndpointKey("203.0.113.3", 993, "imaps"))} == {"srv"}
    web = plan.uses(EndpointKey(WEB, 443, "https"))
    assert len(web) == 8  # apex and www of four domains
    assert {u.how for u in web} == {"web"}


def test_targets_are_in_address_order_with_services_and_tls_modes() -> None:
    plan = _plan(_fleet())
    assert [(t.ip, t.port) for t in plan.targets] == [
        ("203.0.113.1", 25),
        ("203.0.113.2", 25),
        ("203.0.113.3", 993),
        ("203.0.113.3", 2587),
        ("203.0.113.9", 25),
        (WEB, 443),
        ("2001:db8:1::1", 25),
    ]
    modes = {t.service: t.tls_mode for t in plan.targets}
    assert modes == {
        "smtp": "starttls",
        "imaps": "implicit",
        "submission": "starttls",
        "https": "implicit",
    }


def test_sni_is_the_first_name_whatever_the_order_of_domains() -> None:
    forward = _plan(_fleet())
    backward = _plan(list(reversed(_fleet())))
    assert forward.targets == backward.targets
    shared = forward.target(EndpointKey("203.0.113.1", 25, "smtp"))
    assert (shared.host, shared.sni) == ("mx-a.provider.example", "mx-a.provider.example")
    web = forward.target(EndpointKey(WEB, 443, "https"))
    assert web.sni == "customer1.example"


def test_cert_targets_one_per_ip_port_and_name() -> None:
    plan = _plan(_fleet())
    fetches = [(t.ip, t.port, t.sni) for t in plan.cert_targets()]
    assert len(fetches) == len(set(fetches))
    assert ("203.0.113.1", 25, "mx.customer2.example") in fetches
    assert ("203.0.113.1", 25, "mx-a.provider.example") in fetches
    assert sum(1 for ip, port, _ in fetches if (ip, port) == (WEB, 443)) == 8


def test_provider_hosts_get_the_mail_access_ports() -> None:
    profile = PortProfile(provider_hosts=("MX-A.Provider.Example.",), srv=False)
    assert profile.provider_hosts == ("mx-a.provider.example",)
    plan = _plan(_fleet(), profile)
    ports = {k.port for k in (endpoint_key(t) for t in plan.targets) if k.ip == "203.0.113.1"}
    assert ports == {25, 465, 587, 143, 993, 110, 995}
    # Only through the provider's own name, not through a customer's alias of it.
    uses = plan.uses(EndpointKey("203.0.113.1", 993, "imaps"))
    assert uses == (EndpointUse("customer1.example", "mx-a.provider.example", "profile"),)
    # srv=False: SRV targets are not probed.
    assert EndpointKey("203.0.113.3", 993, "imaps") not in set(plan.keys())


def test_profile_accepts_lists_and_single_strings() -> None:
    profile = PortProfile(mx=["smtp"], web="https:8443", provider_hosts="mx.example")  # type: ignore[arg-type]
    assert (profile.mx, profile.web, profile.provider_hosts) == (
        ("smtp",),
        ("https:8443",),
        ("mx.example",),
    )
    assert hash(profile)


def test_custom_profile_ports() -> None:
    profile = PortProfile(mx=("smtp", "submission"), web=("https:8443",))
    plan = _plan(_fleet(), profile)
    keys = set(plan.keys())
    assert EndpointKey("203.0.113.2", 587, "submission") in keys
    assert EndpointKey(WEB, 8443, "https") in keys
    assert EndpointKey(WEB, 443, "https") not in keys


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"mx": ("gopher",)}, "unknown service 'gopher'"),
        ({"web": ("https:0",)}, "invalid port"),
        ({"provider": ("imaps:x",)}, "invalid port"),
        ({"provider_hosts": ("bad host",)}, "white space"),
    ],
)
def test_bad_profiles_say_why(fields: dict[str, Any], reason: str) -> None:
    with pytest.raises(TargetError, match=reason):
        PortProfile(**fields)


def test_a_domain_given_twice_is_planned_once() -> None:
    fleet = _fleet()
    plan = _plan([*fleet, fleet[0]])
    assert [d.domain for d in plan.discoveries] == [d.domain for d in fleet]
    assert len(plan.uses(EndpointKey("203.0.113.2", 25, "smtp"))) == 2


def test_private_addresses_are_rejected_unless_allowed() -> None:
    private = _domain("intranet.example", (10, HostAddresses("mx.intranet.example", ("10.1.2.3",))))
    plan = plan_endpoints([private], PortProfile())
    key = EndpointKey("10.1.2.3", 25, "smtp")
    assert key not in {endpoint_key(t) for t in plan.targets}
    assert "10.1.2.3 is not a public address" in plan.rejected[key]
    allowed = _plan([private])
    assert key in {endpoint_key(t) for t in allowed.targets}
    assert not allowed.rejected


def test_endpoints_of_a_domain() -> None:
    plan = _plan(_fleet())
    mine = plan.endpoints("Customer2.Example.")
    assert mine == {
        EndpointKey("203.0.113.1", 25, "smtp"): "mx.customer2.example",
        EndpointKey(WEB, 443, "https"): "customer2.example",
    }
    assert plan.endpoints("gone.example") == {}


# -- fan-out ---------------------------------------------------------------------------------


def _results(targets: tuple[Target, ...]) -> dict[EndpointKey, EndpointResult]:
    """A made-up successful result per target, keyed as a sweep would key them."""
    return {endpoint_key(t): EndpointResult(target=t, status="ok", connections=3) for t in targets}


def _certificate(name: str) -> CertificateInfo:
    return CertificateInfo(
        subject=f"CN={name}",
        san=(name,),
        issuer="CN=Test CA",
        not_before="2026-01-01T00:00:00Z",
        not_after="2027-01-01T00:00:00Z",
        days_left=100,
        key="EC secp256r1",
        signature="ecdsa-with-SHA256",
        trusted=True,
        hostname_match=True,
        status="valid",
        fingerprint_sha256="00" * 32,
        chain_length=2,
    )


def test_results_fan_out_to_every_domain() -> None:
    plan = _plan(_fleet())
    results = _results(plan.targets)
    documents = domain_results(plan, results)
    assert [d.domain for d in documents] == [d.domain for d in _fleet()]
    by_domain = {d.domain: d for d in documents}
    shared = results[EndpointKey("203.0.113.1", 25, "smtp")]
    assert shared in by_domain["customer1.example"].endpoints
    assert shared in by_domain["customer2.example"].endpoints
    # apex and www lead to the same endpoint: the domain gets its result once.
    web = [e for e in by_domain["customer1.example"].endpoints if e.target.service == "https"]
    assert len(web) == 1
    assert by_domain["gone.example"].endpoints == ()
    assert by_domain["nullmx.example"].discovery.null_mx
    json.dumps([d.to_dict() for d in documents])


def test_fan_out_uses_each_domains_own_certificate() -> None:
    plan = _plan(_fleet())
    shared = EndpointKey("203.0.113.1", 25, "smtp")
    certificates = {(shared, name): _certificate(name) for name in sorted(plan.cert_names(shared))}
    documents = domain_results(plan, _results(plan.targets), certificates=certificates)
    customer2 = next(d for d in documents if d.domain == "customer2.example")
    (result,) = [e for e in customer2.endpoints if endpoint_key(e.target) == shared]
    assert (result.target.host, result.target.sni) == ("mx.customer2.example",) * 2
    assert result.certificate is not None
    assert result.certificate.subject == "CN=mx.customer2.example"


def test_fan_out_reports_rejected_endpoints() -> None:
    private = _domain("intranet.example", (10, HostAddresses("mx.intranet.example", ("10.1.2.3",))))
    plan = plan_endpoints([private], PortProfile())
    (intranet,) = domain_results(plan, {})
    rejected = {e.target.ip: e for e in intranet.endpoints}["10.1.2.3"]
    assert rejected.status == "error"
    assert rejected.error is not None
    assert (rejected.error.kind, rejected.error.phase) == ("private_target", "plan")
    assert rejected.target.host == "mx.intranet.example"


def test_fan_out_needs_every_result() -> None:
    plan = _plan(_fleet())
    results = _results(plan.targets)
    del results[EndpointKey(WEB, 443, "https")]
    with pytest.raises(KeyError, match=r"no result for endpoint 203\.0\.113\.80 port 443"):
        domain_results(plan, results)


def test_plan_is_immutable_data() -> None:
    plan = _plan(_fleet())
    with pytest.raises(AttributeError):
        plan.targets = ()  # type: ignore[misc]
    assert replace(PortProfile(), srv=False).srv is False
