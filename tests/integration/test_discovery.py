"""Discovery against a local authoritative DNS server: every MX, SRV and web case, and the
endpoint plan built from real answers (deduplication across many domains).

The zones below are the oracle: each case is written out as the zone data a customer
could publish, and the tests say what discovery must make of it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from scanner.discovery import (
    EndpointKey,
    PortProfile,
    discover,
    domain_results,
    endpoint_key,
    plan_endpoints,
)
from scanner.dns import Resolver
from scanner.errors import TargetError
from scanner.models import Discovery, EndpointResult, HostAddresses
from tests.integration.dnsserver import DnsServer, ZoneData

# The provider's hosts: MX clusters, mail-access hosts, aliases.
PROVIDER = """
mx0     A     192.0.2.1
mx1     A     192.0.2.1
mx1     AAAA  2001:db8::1
mx2     AAAA  2001:db8::2
smtp    A     192.0.2.25
imap    A     192.0.2.26
pop     CNAME imap
mail    CNAME mx1
many    A     192.0.2.200
""" + "".join(f"many A 198.51.100.{i}\n" for i in range(1, 101))

ZONES: dict[str, str] = {
    # The parent of every test domain: names it does not hold are NXDOMAIN.
    "test": "",
    "provider.test": PROVIDER,
    # Several MX (a preference tie broken by name, an AAAA-only host), SRV records with
    # and without ".", an SRV target that is an alias, web on the apex and www (alias).
    "example.test": """
@                 MX    20 mx2.provider.test.
@                 MX    10 mx1.provider.test.
@                 MX    10 mx0.provider.test.
@                 A     192.0.2.10
www               CNAME @
_submission._tcp  SRV   0 1 587 smtp.provider.test.
_imaps._tcp       SRV   0 1 993 imap.provider.test.
_imap._tcp        SRV   0 0 0 .
_pop3._tcp        SRV   0 0 0 .
_pop3s._tcp       SRV   10 1 995 pop.provider.test.
""",
    # No MX: the domain's own addresses are the mail host (RFC 5321 §5.1).
    "implicit.test": """
@    A     192.0.2.30
@    AAAA  2001:db8::30
www  A     192.0.2.31
""",
    # No MX, IPv6 only.
    "v6only.test": "@ AAAA 2001:db8::60\n",
    # Null MX (RFC 7505): accepts no mail. The web is still there.
    "nullmx.test": """
@    MX    0 .
@    A     192.0.2.40
""",
    # A null MX next to a real one is invalid: the real one is used, the fault noted.
    "mixednull.test": """
@    MX    0 .
@    MX    10 mx1.provider.test.
""",
    # One MX target does not exist, the other does.
    "dangling.test": """
@    MX    10 gone.dangling.test.
@    MX    20 mx0.provider.test.
""",
    # The MX target exists but has no address.
    "noaddr.test": """
@     MX   10 mail.noaddr.test.
mail  TXT  "no address here"
""",
    # The MX target is an alias (forbidden by RFC 5321 §5.1, still followed).
    "cnamemx.test": "@ MX 10 mail.provider.test.\n",
    # An alias into another zone, and an alias to nothing.
    "alias.test": """
@         MX    10 mx.alias.test.
@         MX    20 broken.alias.test.
mx        CNAME mx1.provider.test.
broken    CNAME gone.provider.test.
""",
    # An IDN: bücher.test.
    "xn--bcher-kva.test": """
@    MX    10 mx1.provider.test.
www  A     192.0.2.70
""",
    # No MX and no address: no mail; only www exists.
    "nomail.test": """
@    TXT   "nothing"
www  A     192.0.2.80
""",
    # An MX host with more addresses than fit in 1232 bytes of UDP.
    "big.test": "@ MX 10 many.provider.test.\n",
    # Resolver faults are attached to these names by the tests.
    "broken.test": "@ MX 10 mx1.provider.test.\n@ A 192.0.2.90\n",
}


@pytest.fixture(scope="module")
def zone_data() -> ZoneData:
    return ZoneData(ZONES)


@pytest.fixture
def server(zone_data: ZoneData) -> Iterator[DnsServer]:
    with DnsServer({}, data=zone_data) as running:
        yield running


@pytest.fixture
def resolver(server: DnsServer) -> Resolver:
    return Resolver([server.nameserver], timeout=2.0, lifetime=10.0, retries=1)


def _mx(discovery: Discovery) -> list[tuple[int, str, str, tuple[str, ...]]]:
    return [
        (m.preference, m.target.host, m.target.status, m.target.addresses) for m in discovery.mx
    ]


async def test_several_mx_sorted_by_preference_then_name(resolver: Resolver) -> None:
    found = await discover("example.test", resolver)
    assert found.status == "ok"
    assert not found.implicit_mx
    assert not found.null_mx
    assert _mx(found) == [
        (10, "mx0.provider.test", "ok", ("192.0.2.1",)),
        (10, "mx1.provider.test", "ok", ("192.0.2.1", "2001:db8::1")),
        (20, "mx2.provider.test", "ok", ("2001:db8::2",)),  # AAAA only
    ]
    assert found.errors == ()
    json.dumps(found.to_dict())  # the document serialises


async def test_srv_records_with_and_without_dot(resolver: Resolver) -> None:
    found = await discover("example.test", resolver)
    by_service = {s.service: s for s in found.srv}
    assert set(by_service) == {"submission", "imaps", "imap", "pop3", "pop3s"}  # no submissions
    submission = by_service["submission"]
    assert (submission.port, submission.offered) == (587, True)
    assert submission.target == HostAddresses("smtp.provider.test", ("192.0.2.25",))
    assert by_service["imaps"].target is not None
    assert by_service["imaps"].target.addresses == ("192.0.2.26",)
    # "." means "decidedly not offered" (RFC 2782, RFC 6186 §3.4).
    assert by_service["imap"].target is None
    assert not by_service["imap"].offered
    assert by_service["pop3"].target is None
    # An alias as SRV target is reported, and still followed.
    pop3s = by_service["pop3s"].target
    assert pop3s is not None
    assert (pop3s.status, pop3s.addresses) == ("cname", ("192.0.2.26",))
    assert pop3s.note is not None
    assert "imap.provider.test" in pop3s.note
    assert "RFC 2782" in pop3s.note
    # Order: RFC 6186/8314 service order.
    assert [s.service for s in found.srv] == ["submission", "imap", "imaps", "pop3", "pop3s"]


async def test_web_apex_and_www(resolver: Resolver) -> None:
    found = await discover("example.test", resolver)
    apex, www = found.web
    assert apex == HostAddresses("example.test", ("192.0.2.10",))
    # A www alias is normal for the web: status ok, the alias noted.
    assert (www.host, www.status, www.addresses) == ("www.example.test", "ok", ("192.0.2.10",))
    assert www.note == "alias for example.test"


async def test_implicit_mx_uses_the_domains_own_addresses(resolver: Resolver) -> None:
    found = await discover("implicit.test", resolver)
    assert found.status == "ok"
    assert found.implicit_mx
    assert _mx(found) == [(0, "implicit.test", "ok", ("192.0.2.30", "2001:db8::30"))]
    assert [w.host for w in found.web] == ["implicit.test", "www.implicit.test"]


async def test_implicit_mx_ipv6_only(resolver: Resolver) -> None:
    found = await discover("v6only.test", resolver, web=False, srv=False)
    assert (found.status, found.implicit_mx) == ("ok", True)
    assert _mx(found) == [(0, "v6only.test", "ok", ("2001:db8::60",))]


async def test_null_mx_accepts_no_mail_and_is_not_an_error(resolver: Resolver) -> None:
    found = await discover("nullmx.test", resolver)
    assert (found.status, found.null_mx, found.mx, found.errors) == ("null_mx", True, (), ())
    assert not found.implicit_mx  # a null MX is not "no MX": no fallback to the A record
    assert [w.host for w in found.web] == ["nullmx.test"]  # www does not exist: skipped


async def test_null_mx_next_to_a_real_mx_is_ignored_and_noted(resolver: Resolver) -> None:
    found = await discover("mixednull.test", resolver, web=False, srv=False)
    assert (found.status, found.null_mx) == ("ok", False)
    assert [m.target.host for m in found.mx] == ["mx1.provider.test"]
    assert len(found.errors) == 1
    assert "RFC 7505" in found.errors[0].message


async def test_dangling_mx_is_reported_per_host(resolver: Resolver) -> None:
    found = await discover("dangling.test", resolver, web=False, srv=False)
    assert found.status == "ok"
    assert _mx(found) == [
        (10, "gone.dangling.test", "nxdomain", ()),
        (20, "mx0.provider.test", "ok", ("192.0.2.1",)),
    ]
    assert found.errors == ()  # a DNS fact, not a resolver failure


async def test_mx_target_without_address(resolver: Resolver) -> None:
    found = await discover("noaddr.test", resolver, web=False, srv=False)
    assert _mx(found) == [(10, "mail.noaddr.test", "no_address", ())]


async def test_cname_mx_is_reported_and_followed(resolver: Resolver) -> None:
    found = await discover("cnamemx.test", resolver, web=False, srv=False)
    (record,) = found.mx
    assert record.target.status == "cname"
    assert record.target.addresses == ("192.0.2.1", "2001:db8::1")
    assert record.target.note is not None
    assert "alias for mx1.provider.test" in record.target.note
    assert "RFC 5321" in record.target.note


@pytest.mark.parametrize("chase_out_of_zone", [True, False])
async def test_cname_mx_across_zones_and_to_nowhere(
    zone_data: ZoneData, *, chase_out_of_zone: bool
) -> None:
    # Given an authoritative server that does (or, like a strict one, does not) follow
    # CNAMEs into other zones in its answers,
    with DnsServer({}, data=zone_data, chase_out_of_zone=chase_out_of_zone) as server:
        resolver = Resolver([server.nameserver], timeout=2.0, retries=0)
        # when the MX targets are an alias into another zone and an alias to nothing,
        found = await discover("alias.test", resolver, web=False, srv=False)
    # then the first is followed to its addresses and the second is a dangling MX,
    # whoever followed the chain.
    first, second = found.mx
    assert (first.target.status, first.target.addresses) == ("cname", ("192.0.2.1", "2001:db8::1"))
    assert (second.target.status, second.target.addresses) == ("nxdomain", ())
    assert second.target.note == "alias for gone.provider.test"


async def test_idn_domain_is_queried_as_a_label(resolver: Resolver) -> None:
    found = await discover(" Bücher.TEST. ", resolver)
    assert found.domain == "xn--bcher-kva.test"
    assert [m.target.host for m in found.mx] == ["mx1.provider.test"]
    apex, www = found.web
    assert (apex.host, apex.status) == ("xn--bcher-kva.test", "no_address")
    assert (www.host, www.addresses) == ("www.xn--bcher-kva.test", ("192.0.2.70",))


async def test_nonexistent_domain(resolver: Resolver) -> None:
    found = await discover("missing.test", resolver)
    assert found == Discovery(domain="missing.test", status="nxdomain")


async def test_no_mx_and_no_address_is_no_mail(resolver: Resolver) -> None:
    found = await discover("nomail.test", resolver)
    assert (found.status, found.mx, found.implicit_mx) == ("no_mail", (), False)
    apex, www = found.web
    assert (apex.host, apex.status) == ("nomail.test", "no_address")
    assert (www.host, www.addresses) == ("www.nomail.test", ("192.0.2.80",))


async def test_large_mx_host_answer_comes_over_tcp(server: DnsServer, resolver: Resolver) -> None:
    found = await discover("big.test", resolver, web=False, srv=False)
    (record,) = found.mx
    assert len(record.target.addresses) == 101
    assert server.count("many.provider.test", "A", "tcp") == 1


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty host name"),
        ("exa mple.test", "white space"),
        ("-bad.test", "hyphen"),
        ("a..test", "invalid host name"),
        ("x" * 64 + ".test", "invalid host name"),
        ("192.0.2.1", "is an IP address, not a domain"),
        ("[2001:db8::1]", "is an IP address, not a domain"),
        ("bad!.test", "invalid host name"),
    ],
)
async def test_invalid_names_are_rejected_before_any_query(
    server: DnsServer, resolver: Resolver, name: str, reason: str
) -> None:
    with pytest.raises(TargetError, match=reason):
        await discover(name, resolver)
    assert server.total() == 0
    assert resolver.stats.lookups == 0


async def test_servfail_on_mx_is_an_error_and_the_rest_is_kept(
    server: DnsServer, resolver: Resolver
) -> None:
    server.add_fault("broken.test", "servfail", rdtype="MX")
    found = await discover("broken.test", resolver)
    assert found.status == "error"
    assert found.mx == ()
    (error,) = found.errors
    assert (error.kind, error.phase) == ("dns", "dns")
    assert "broken.test MX" in error.message
    assert "SERVFAIL" in error.message
    assert "2 attempts" in error.message  # retried once
    assert [w.host for w in found.web] == ["broken.test"]
    assert server.count("broken.test", "MX") == 2


async def test_timeout_on_mx_is_an_error(server: DnsServer) -> None:
    server.add_fault("broken.test", "drop", rdtype="MX")
    resolver = Resolver([server.nameserver], timeout=0.2, lifetime=2.0, retries=1)
    found = await discover("broken.test", resolver, web=False, srv=False)
    assert found.status == "error"
    (error,) = found.errors
    assert "no answer from" in error.message
    assert "after 2 attempts" in error.message


async def test_a_failing_srv_lookup_is_listed_but_mail_is_ok(
    server: DnsServer, resolver: Resolver
) -> None:
    server.add_fault("_imaps._tcp.broken.test", "refused")
    found = await discover("broken.test", resolver)
    assert found.status == "ok"
    (error,) = found.errors
    assert "_imaps._tcp.broken.test SRV" in error.message
    assert "REFUSED" in error.message
    assert server.count("_imaps._tcp.broken.test") == 1  # REFUSED is not retried


async def test_domain_outside_the_servers_zones_is_refused(resolver: Resolver) -> None:
    found = await discover("elsewhere.example", resolver, web=False, srv=False)
    assert found.status == "error"
    assert "REFUSED" in found.errors[0].message


async def test_web_and_srv_can_be_skipped(server: DnsServer, resolver: Resolver) -> None:
    found = await discover("example.test", resolver, web=False, srv=False)
    assert (found.web, found.srv) == ((), ())
    assert server.count("www.example.test") == 0
    assert server.count("_imaps._tcp.example.test") == 0
    assert len(found.mx) == 3


# -- the plan from real answers ------------------------------------------------------------


def _fleet_zone(domains: int, mx_hosts: int) -> dict[str, str]:
    """``domains`` customer domains, each with two MX among ``mx_hosts`` shared hosts,
    an apex and www on one shared web address, and an imaps SRV to the provider."""
    hosts = "".join(
        f"mx{i} A 203.0.113.{i + 1}\nmx{i} AAAA 2001:db8:113::{i + 1:x}\n" for i in range(mx_hosts)
    )
    hosts += "imap A 203.0.113.200\nweb A 203.0.113.250\n"
    customers = "".join(
        f"c{n} MX 10 mx{n % mx_hosts}.hosting.test.\n"
        f"c{n} MX 20 mx{(n + 1) % mx_hosts}.hosting.test.\n"
        f"c{n} A 203.0.113.250\n"
        f"www.c{n} CNAME web.hosting.test.\n"
        f"_imaps._tcp.c{n} SRV 0 1 993 imap.hosting.test.\n"
        for n in range(domains)
    )
    return {"hosting.test": hosts, "customers.test": customers}


async def test_many_domains_sharing_mx_hosts_plan_each_endpoint_once() -> None:
    # Given 300 domains whose MX records point at 3 shared hosts (each with an IPv4 and
    # an IPv6 address), which all serve the web from one address and imaps from another,
    domains = [f"c{n}.customers.test" for n in range(300)]
    with DnsServer(_fleet_zone(300, 3)) as server:
        resolver = Resolver([server.nameserver], timeout=1.0, retries=1)
        discoveries = await asyncio.gather(*(discover(d, resolver) for d in domains))
        mx_a_queries = server.count("mx0.hosting.test", "A")
    profile = PortProfile(provider_hosts=("imap.hosting.test", "mx0.hosting.test"))
    # when the plan is built,
    plan = plan_endpoints(discoveries, profile, allow_private=True)
    # then each (ip, port, service) is probed once:
    keys = [endpoint_key(t) for t in plan.targets]
    assert len(keys) == len(set(keys))
    smtp = [k for k in keys if k.service == "smtp"]
    assert len(smtp) == 6  # 3 hosts × (IPv4 + IPv6)
    assert EndpointKey("203.0.113.250", 443, "https") in keys
    assert EndpointKey("203.0.113.200", 993, "imaps") in keys
    # the provider profile adds the mail-access ports on the named provider hosts only,
    provider_ports = {k.port for k in keys if k.ip in ("203.0.113.1", "2001:db8:113::1")}
    assert provider_ports == {25, 465, 587, 143, 993, 110, 995}
    assert {k.port for k in keys if k.ip == "203.0.113.2"} == {25}
    # every domain's use is recorded: each MX host is MX of 200 domains (pref 10 or 20),
    mx0 = plan.uses(EndpointKey("203.0.113.1", 25, "smtp"))
    assert len(mx0) == 200
    assert {u.how for u in mx0} == {"mx"}
    assert {u.host for u in mx0} == {"mx0.hosting.test"}
    # the shared web address is reached through 600 names, one certificate each,
    web = EndpointKey("203.0.113.250", 443, "https")
    assert len(plan.uses(web)) == 600
    assert len(plan.cert_names(web)) == 600
    assert plan.target(web).sni == "c0.customers.test"  # the first name, alphabetically
    # the imaps endpoint is found through SRV (all 300) and the profile,
    imaps_uses = plan.uses(EndpointKey("203.0.113.200", 993, "imaps"))
    assert {u.how for u in imaps_uses} == {"srv", "profile"}
    assert len({u.domain for u in imaps_uses}) == 300
    # and the shared MX host was asked for once, thanks to the resolver's cache.
    assert mx_a_queries == 1


async def test_fan_out_of_real_discoveries(resolver: Resolver) -> None:
    discoveries = [
        await discover(d, resolver) for d in ("example.test", "cnamemx.test", "missing.test")
    ]
    plan = plan_endpoints(discoveries, PortProfile(), allow_private=True)
    results = {
        endpoint_key(t): EndpointResult(target=t, status="ok", connections=1) for t in plan.targets
    }
    documents = domain_results(plan, results)
    assert [d.domain for d in documents] == ["example.test", "cnamemx.test", "missing.test"]
    example, cnamemx, missing = documents
    # cnamemx.test's MX is an alias of mx1, which example.test uses directly: one probe.
    shared = EndpointKey("192.0.2.1", 25, "smtp")
    assert shared in {endpoint_key(e.target) for e in example.endpoints}
    assert shared in {endpoint_key(e.target) for e in cnamemx.endpoints}
    assert {u.host for u in plan.uses(shared)} == {
        "mx0.provider.test",
        "mx1.provider.test",
        "mail.provider.test",
    }
    assert missing.endpoints == ()
    json.dumps([d.to_dict() for d in documents])


async def test_private_addresses_are_not_planned_by_default(resolver: Resolver) -> None:
    found = await discover("example.test", resolver)
    plan = plan_endpoints([found], PortProfile())
    # Documentation addresses (192.0.2.0/24, 2001:db8::/32) are not public.
    assert plan.targets == ()
    assert len(plan.rejected) == len(list(plan.keys())) > 0
    (document,) = domain_results(plan, {})
    assert {e.error.kind for e in document.endpoints if e.error} == {"private_target"}
