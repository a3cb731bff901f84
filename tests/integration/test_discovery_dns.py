"""The resolver against the local DNS server: typed answers, TCP fallback, retries,
timeouts, the per-run cache and bounded concurrency — and the test server itself,
checked with plain dnspython queries so that the other tests can trust it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from scanner.dns import DnsLookupError, MxData, Resolver, SrvData
from tests.integration.dnsserver import DnsServer, ZoneData

ZONES = {
    "test": "",
    "res.test": """
@       MX     10 mx.res.test.
@       MX     0  mx0.res.test.
mx      A      192.0.2.1
mx      AAAA   2001:db8::1
mx0     A      192.0.2.2
alias   CNAME  mx.res.test.
chain   CNAME  alias.res.test.
away    CNAME  host.other.test.
gone    CNAME  missing.res.test.
loop1   CNAME  loop2.res.test.
loop2   CNAME  loop1.res.test.
txtonly TXT    "no address"
_imaps._tcp SRV 0 5 993 mx.res.test.
_imaps._tcp SRV 0 9 993 mx0.res.test.
_imaps._tcp SRV 1 0 10993 mx.res.test.
_pop3._tcp  SRV 0 0 0 .
"""
    + "".join(f"big A 198.51.100.{i}\n" for i in range(1, 121))
    + "".join(f"slow{i} A 192.0.2.{i + 10}\n" for i in range(12)),
    "other.test": "host A 192.0.2.50\n",
}


@pytest.fixture(scope="module")
def zone_data() -> ZoneData:
    return ZoneData(ZONES)


@pytest.fixture
def server(zone_data: ZoneData) -> Iterator[DnsServer]:
    with DnsServer({}, data=zone_data, host="127.0.0.2") as running:
        yield running


def _resolver(
    server: DnsServer,
    *,
    timeout: float = 2.0,
    retries: int = 1,
    lifetime: float = 5.0,
    max_concurrency: int = 50,
    edns_payload: int = 1232,
) -> Resolver:
    return Resolver(
        [server.nameserver],
        timeout=timeout,
        lifetime=lifetime,
        retries=retries,
        max_concurrency=max_concurrency,
        edns_payload=edns_payload,
    )


def _ask(server: DnsServer, name: str, rdtype: str, *, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(query, server.host, port=server.port, timeout=2)
    return dns.query.udp(query, server.host, port=server.port, timeout=2)


# -- the test server is a faithful authoritative server -----------------------------------


def test_server_tells_nxdomain_from_no_data(server: DnsServer) -> None:
    missing = _ask(server, "nope.res.test", "A")
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert missing.authority[0].name.to_text() == "res.test."  # SOA for negative caching
    no_data = _ask(server, "txtonly.res.test", "A")
    assert (no_data.rcode(), no_data.answer) == (dns.rcode.NOERROR, [])
    assert no_data.authority  # SOA
    # An empty non-terminal exists: NOERROR, no data (RFC 8020).
    ent = _ask(server, "_tcp.res.test", "SRV")
    assert (ent.rcode(), ent.answer) == (dns.rcode.NOERROR, [])
    assert _ask(server, "elsewhere.example", "A").rcode() == dns.rcode.REFUSED
    assert _ask(server, "mx.res.test", "A").flags & dns.flags.AA


def test_server_chases_cnames_and_truncates_big_udp_answers(server: DnsServer) -> None:
    chain = _ask(server, "chain.res.test", "A")
    assert [r.name.to_text() for r in chain.answer] == [
        "chain.res.test.",
        "alias.res.test.",
        "mx.res.test.",
    ]
    # RFC 6604: a chain ending at a missing name is NXDOMAIN, the chain kept.
    dangling = _ask(server, "gone.res.test", "A")
    assert dangling.rcode() == dns.rcode.NXDOMAIN
    assert [r.name.to_text() for r in dangling.answer] == ["gone.res.test."]
    big_udp = _ask(server, "big.res.test", "A")
    assert big_udp.flags & dns.flags.TC
    assert big_udp.answer == []
    big_tcp = _ask(server, "big.res.test", "A", tcp=True)
    assert len(big_tcp.answer[0]) == 120


# -- typed answers ----------------------------------------------------------------------


async def test_mx_sorted_and_srv_parsed(server: DnsServer) -> None:
    resolver = _resolver(server)
    mx = await resolver.mx("RES.test.")
    assert mx.status == "ok"
    assert mx.records == (MxData(0, "mx0.res.test"), MxData(10, "mx.res.test"))
    srv = await resolver.srv("_imaps._tcp.res.test")
    # Priority, then weight (heaviest first), then target.
    assert srv.records == (
        SrvData(0, 9, 993, "mx0.res.test"),
        SrvData(0, 5, 993, "mx.res.test"),
        SrvData(1, 0, 10993, "mx.res.test"),
    )
    not_offered = await resolver.srv("_pop3._tcp.res.test")
    assert not_offered.records == (SrvData(0, 0, 0, "."),)
    assert not not_offered.records[0].offered


async def test_nxdomain_and_no_data_are_told_apart(server: DnsServer) -> None:
    resolver = _resolver(server)
    missing = await resolver.srv("_imap._tcp.res.test")
    assert missing.status == "nxdomain"
    assert missing.error is not None
    assert missing.error.message == "_imap._tcp.res.test SRV: NXDOMAIN (the name does not exist)"
    with pytest.raises(DnsLookupError, match="NXDOMAIN") as raised:
        missing.records_or_raise()
    assert (raised.value.kind, raised.value.reason) == ("dns", "nxdomain")
    empty = await resolver.mx("mx.res.test")
    assert empty.status == "no_data"
    assert empty.records_or_raise() == ()
    assert empty.error is not None
    assert "no MX records (the name exists)" in empty.error.message


async def test_host_statuses(server: DnsServer) -> None:
    resolver = _resolver(server)
    both = await resolver.a_aaaa("mx.res.test")
    assert (both.status, both.addresses, both.note) == ("ok", ("192.0.2.1", "2001:db8::1"), None)
    assert (await resolver.a_aaaa("nope.res.test")).status == "nxdomain"
    assert (await resolver.a_aaaa("txtonly.res.test")).status == "no_address"


async def test_cname_chains_are_followed_and_noted(server: DnsServer) -> None:
    resolver = _resolver(server)
    host = await resolver.a_aaaa("chain.res.test")
    assert host.addresses == ("192.0.2.1", "2001:db8::1")
    assert host.note == "alias for mx.res.test"
    lookup = await resolver.host("away.res.test")
    assert (lookup.status, lookup.canonical_name) == ("ok", "host.other.test")
    dangling = await resolver.host("gone.res.test")
    assert (dangling.status, dangling.canonical_name) == ("nxdomain", "missing.res.test")


async def test_cname_chain_cut_at_the_zone_edge_is_followed_by_the_resolver(
    zone_data: ZoneData,
) -> None:
    # Given a strict authoritative server that answers only the CNAME for an alias
    # into another zone,
    with DnsServer({}, data=zone_data, chase_out_of_zone=False) as strict:
        reply = _ask(strict, "away.res.test", "A")
        assert [r.name.to_text() for r in reply.answer] == ["away.res.test."]
        # when the resolver looks the alias up, it asks for the target itself.
        resolver = _resolver(strict)
        host = await resolver.host("away.res.test")
        assert host.addresses == ("192.0.2.50",)
        assert strict.count("host.other.test", "A") == 1


async def test_cname_loop_is_an_error(server: DnsServer) -> None:
    resolver = _resolver(server, retries=0)
    host = await resolver.host("loop1.res.test")
    assert host.status == "error"
    assert host.addresses == ()


async def test_truncated_answer_is_repeated_over_tcp(server: DnsServer) -> None:
    resolver = _resolver(server)
    answer = await resolver.addresses("big.res.test", "A")
    assert len(answer.records) == 120
    assert server.count("big.res.test", "A", "udp") == 1
    assert server.count("big.res.test", "A", "tcp") == 1


async def test_without_edns_answers_over_512_bytes_come_over_tcp(server: DnsServer) -> None:
    # Given a server that caps UDP answers at 512 bytes whatever the client offers,
    server.udp_limit = 512
    resolver = _resolver(server, edns_payload=0)
    answer = await resolver.addresses("big.res.test", "A")
    assert len(answer.records) == 120
    assert server.count("big.res.test", "A", "tcp") == 1


# -- failures and retries -----------------------------------------------------------------


async def test_dropped_queries_are_retried(server: DnsServer) -> None:
    server.add_fault("mx.res.test", "drop", rdtype="A", times=2)
    resolver = _resolver(server, timeout=0.5, retries=2)
    answer = await resolver.addresses("mx.res.test", "A")
    assert answer.records == ("192.0.2.1",)
    assert server.count("mx.res.test", "A") == 3
    assert resolver.stats.retries == 2


async def test_timeout_after_the_last_retry(server: DnsServer) -> None:
    server.add_fault("mx.res.test", "drop", rdtype="A")
    resolver = _resolver(server, timeout=0.2, retries=1)
    answer = await resolver.addresses("mx.res.test", "A")
    assert answer.status == "timeout"
    assert answer.error is not None
    assert answer.error.message == (
        f"mx.res.test A: no answer from {server.nameserver} within 0.2 s (after 2 attempts)"
    )
    assert server.count("mx.res.test", "A") == 2


async def test_lifetime_bounds_the_retries(server: DnsServer) -> None:
    server.add_fault("mx.res.test", "drop", rdtype="A")
    resolver = _resolver(server, timeout=0.2, retries=20, lifetime=0.5)
    answer = await resolver.addresses("mx.res.test", "A")
    assert answer.status == "timeout"
    assert server.count("mx.res.test", "A") <= 3


async def test_servfail_is_retried(server: DnsServer) -> None:
    server.add_fault("mx.res.test", "servfail", rdtype="A", times=1)
    resolver = _resolver(server)
    answer = await resolver.addresses("mx.res.test", "A")
    assert answer.status == "ok"
    assert server.count("mx.res.test", "A") == 2


async def test_persistent_servfail(server: DnsServer) -> None:
    server.add_fault("mx.res.test", "servfail", rdtype="A")
    resolver = _resolver(server, retries=2)
    answer = await resolver.addresses("mx.res.test", "A")
    assert answer.status == "servfail"
    assert answer.error is not None
    assert "SERVFAIL" in answer.error.message
    assert "after 3 attempts" in answer.error.message
    assert server.count("mx.res.test", "A") == 3


async def test_refused_is_not_retried(server: DnsServer) -> None:
    resolver = _resolver(server, retries=3)
    answer = await resolver.mx("elsewhere.example")
    assert answer.status == "refused"
    assert server.count("elsewhere.example", "MX") == 1


async def test_a_dead_nameserver_is_passed_over(server: DnsServer, zone_data: ZoneData) -> None:
    with DnsServer({}, data=zone_data, host="127.0.0.3") as dead:
        dead.add_fault("mx.res.test", "drop")
        resolver = Resolver([dead.nameserver, server.nameserver], timeout=1.0, retries=1)
        answer = await resolver.addresses("mx.res.test", "A")
    assert answer.records == ("192.0.2.1",)
    assert server.count("mx.res.test", "A") == 1


async def test_delayed_answer_within_the_timeout(server: DnsServer) -> None:
    server.add_fault("mx.res.test", "delay", rdtype="A", delay=0.1)
    resolver = _resolver(server, timeout=2.0)
    assert (await resolver.addresses("mx.res.test", "A")).records == ("192.0.2.1",)


# -- cache and concurrency ----------------------------------------------------------------


async def test_answers_and_negative_answers_are_cached(server: DnsServer) -> None:
    resolver = _resolver(server)
    for _ in range(3):
        await resolver.a_aaaa("mx.res.test")
        await resolver.a_aaaa("nope.res.test")
        await resolver.mx("txtonly.res.test")
    assert server.count("mx.res.test") == 2  # A and AAAA, once each
    assert server.count("nope.res.test") == 2
    assert server.count("txtonly.res.test", "MX") == 1
    assert resolver.stats.cache_hits == 10


async def test_failures_are_not_cached(server: DnsServer) -> None:
    server.add_fault("mx.res.test", "servfail", rdtype="A", times=1)
    resolver = _resolver(server, retries=0)
    assert (await resolver.addresses("mx.res.test", "A")).status == "servfail"
    assert (await resolver.addresses("mx.res.test", "A")).status == "ok"


async def test_concurrent_identical_questions_share_one_query(server: DnsServer) -> None:
    server.add_fault("mx.res.test", "delay", rdtype="A", delay=0.1)
    resolver = _resolver(server)
    answers = await asyncio.gather(*(resolver.addresses("mx.res.test", "A") for _ in range(50)))
    assert {a.records for a in answers} == {("192.0.2.1",)}
    assert server.count("mx.res.test", "A") == 1


async def test_one_asker_cancelled_does_not_cancel_the_others(server: DnsServer) -> None:
    server.add_fault("mx.res.test", "delay", rdtype="A", delay=0.2)
    resolver = _resolver(server)
    impatient = asyncio.create_task(resolver.addresses("mx.res.test", "A"))
    patient = asyncio.create_task(resolver.addresses("mx.res.test", "A"))
    await asyncio.sleep(0.05)
    impatient.cancel()
    assert (await patient).records == ("192.0.2.1",)
    with pytest.raises(asyncio.CancelledError):
        await impatient


async def test_concurrency_is_bounded(server: DnsServer) -> None:
    for i in range(12):
        server.add_fault(f"slow{i}.res.test", "delay", rdtype="A", delay=0.1)
    resolver = _resolver(server, max_concurrency=3)
    answers = await asyncio.gather(
        *(resolver.addresses(f"slow{i}.res.test", "A") for i in range(12))
    )
    assert all(a.status == "ok" for a in answers)
    assert resolver.stats.max_in_flight == 3
    assert server.max_held <= 3  # never more than 3 queries waiting at the server


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
async def test_ipv6_nameserver(zone_data: ZoneData) -> None:
    with DnsServer({}, data=zone_data, host="::1") as server:
        resolver = Resolver([server.nameserver])
        assert resolver.nameservers == (f"[::1]:{server.port}",)
        assert (await resolver.addresses("mx.res.test", "AAAA")).records == ("2001:db8::1",)
