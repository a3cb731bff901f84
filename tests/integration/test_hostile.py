"""Hostile servers: the endpoint scan ends, with the right documented error, and lies never.

Each hostile server gets one endpoint scan with small timeouts. Whatever the server does
(tarpit, silence, garbage, resets, alerts, floods, endless replies, 421s), the scan must
finish, classify the failure with a documented ``kind`` and ``phase``, never report a
protocol as accepted that was not, and never turn "we were turned away" into "no TLS"
or "no STARTTLS". Tests bound every scan far above the scanner's own timeouts and never
assert on elapsed time. At the end: many hostile endpoints at once do not stall the
healthy ones, and the per-IP connection limit holds as the servers count.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Literal

import pytest

from scanner.engine import Scanner, ScanOptions
from scanner.models import PROTOCOLS, EndpointResult
from scanner.net import LocalLimiter
from tests.integration.fakes import (
    ALWAYS,
    SCAN_BOUND,
    AlertServer,
    FakeLegacyServer,
    FakeServer,
    FakeSmtpServer,
    FakeSslv2Server,
    FakeTls13Server,
    FloodServer,
    FragmentingServer,
    GarbageServer,
    Gauge,
    HelloRequestServer,
    Launcher,
    ModernStack,
    ResetServer,
    SilentAfterHelloServer,
    SmtpScript,
    TarpitServer,
    assert_sane,
    no_new_threads,
    scan,
    target_for,
)

# Small timeouts: each hostile endpoint costs a few of them at most.
HOSTILE = ScanOptions(
    timeout=0.5,
    connect_timeout=0.5,
    greeting_timeout=0.5,
    groups=False,
    certificate=False,
    injection_check=False,
    attempts=3,
    backoff=0.05,
)

RC4_SHA, DES_CBC3_SHA = 0x0005, 0x000A
TLS12_ONLY = ModernStack(versions=frozenset({"TLSv1.2"}))


@pytest.fixture
def serve() -> Iterator[Launcher]:
    """Start servers for this test; all are stopped, and their threads gone, after it."""
    with no_new_threads(), Launcher() as launcher:
        yield launcher


def assert_nothing_accepted(result: EndpointResult) -> None:
    assert_sane(result)
    assert not any(result.protocols.get(p) for p in PROTOCOLS), result.protocols
    assert result.cipher_suites == {}
    assert result.server_preference is None


def assert_undecided(result: EndpointResult) -> None:
    """A failed endpoint: no version may read as refused ("no TLS"), only as unknown."""
    assert_nothing_accepted(result)
    assert all(result.protocols.get(p) is None for p in PROTOCOLS), result.protocols


def assert_not_reported_as_missing_starttls(result: EndpointResult) -> None:
    assert result.error is None or result.error.kind != "starttls_not_offered"
    assert result.starttls is None or result.starttls.offered is True


# -- implicit TLS: every way a server can fail to answer a hello -------------------------


@dataclass(frozen=True)
class Case:
    make: Callable[[str], FakeServer]
    kind: str
    phase: str


TLS_CASES: dict[str, Case] = {
    "tarpit": Case(TarpitServer, "timeout", "tls_hello"),
    "silent-after-hello": Case(SilentAfterHelloServer, "timeout", "tls_hello"),
    "garbage-http": Case(
        lambda ip: GarbageServer(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n", ip),
        "protocol_error",
        "tls_hello",
    ),
    "garbage-binary": Case(
        lambda ip: GarbageServer(b"\xde\xad\xbe\xef" * 64, ip), "protocol_error", "tls_hello"
    ),
    "flood-16mb-handshake": Case(
        lambda ip: FloodServer("handshake", ip), "protocol_error", "tls_hello"
    ),
    "flood-oversized-record": Case(
        lambda ip: FloodServer("record", ip), "protocol_error", "tls_hello"
    ),
    "hello-request-flood": Case(
        lambda ip: HelloRequestServer(ip=ip), "protocol_error", "tls_hello"
    ),
    "hello-request-drip": Case(
        lambda ip: HelloRequestServer(interval=0.05, ip=ip), "timeout", "tls_hello"
    ),
}


@pytest.mark.parametrize("name", list(TLS_CASES))
async def test_hostile_tls_endpoint_fails_cleanly(serve: Launcher, name: str) -> None:
    case = TLS_CASES[name]
    server = serve(case.make("127.0.20.20"))
    result = await scan(server, HOSTILE)
    assert result.status == "error"
    assert result.error is not None
    assert (result.error.kind, result.error.phase) == (case.kind, case.phase)
    assert_undecided(result)
    assert server.problems == []
    assert server.connections == result.connections


# -- servers that refuse everything ---------------------------------------------------
# An endpoint that refuses every hello is an error carrying the refusal, not an "ok"
# endpoint without TLS: a firewall resetting TLS must not read as "TLS switched off".


@pytest.mark.parametrize(
    "make",
    [
        AlertServer,
        lambda ip: ResetServer(after_hello=True, ip=ip),
        lambda ip: ResetServer(ip=ip),
    ],
    ids=["alert", "reset-after-hello", "reset-on-accept"],
)
async def test_refusing_everything_accepts_nothing(
    serve: Launcher, make: Callable[[str], FakeServer]
) -> None:
    server = serve(make("127.0.20.21"))
    result = await scan(server, HOSTILE)
    assert_nothing_accepted(result)
    # Each version is refused (False) or, where a reset beat the hello, undecided with
    # the reset among the errors (assert_sane checks an undecided version has a reason).
    errors = [result.error] if result.error else []
    assert {e.kind for e in [*errors, *result.partial_errors]} <= {"tls_alert", "reset"}
    assert server.problems == []
    assert server.connections == result.connections


async def test_alert_to_everything_is_a_tls_alert_error(serve: Launcher) -> None:
    server = serve(AlertServer(ip="127.0.20.22"))
    result = await scan(server, HOSTILE)
    assert result.status == "error"
    assert result.error is not None
    assert (result.error.kind, result.error.phase) == ("tls_alert", "tls_hello")


@pytest.mark.parametrize("after_hello", [True, False], ids=["after-hello", "on-accept"])
async def test_reset_of_every_connection_is_a_reset_error(
    serve: Launcher, after_hello: bool
) -> None:
    server = serve(ResetServer(after_hello=after_hello, ip="127.0.20.23"))
    # Whether a reset beats the hello is a race on loopback; every outcome must agree.
    for _ in range(1 if after_hello else 20):
        result = await scan(server, HOSTILE)
        assert result.status == "error"
        assert result.error is not None
        assert result.error.kind == "reset"
        assert result.error.phase in ("connect", "tls_hello")


# -- SMTP: greeting, capabilities, STARTTLS ---------------------------------------------

SMTP_CASES: dict[str, tuple[SmtpScript, str, str]] = {
    "endless-capabilities": (SmtpScript(endless_capabilities=True), "protocol_error", "greeting"),
    "tarpit-greeting": (SmtpScript(greeting_delay=60.0), "timeout", "greeting"),
    "garbage-greeting": (
        SmtpScript(banner=b"\x16\x03\x01\x00\x02\x02\x28\r\n"),
        "protocol_error",
        "greeting",
    ),
    "hangs-up-at-greeting": (SmtpScript(busy_first=ALWAYS, busy_reply=b""), "reset", "greeting"),
    "starttls-refused": (
        SmtpScript(starttls_reply=b"454 4.7.0 TLS not available due to local problem\r\n"),
        "starttls_refused",
        "starttls",
    ),
    "silent-after-starttls": (SmtpScript(after_starttls="silent"), "timeout", "tls_hello"),
}


@pytest.mark.parametrize("name", list(SMTP_CASES))
async def test_hostile_smtp_endpoint_fails_cleanly(serve: Launcher, name: str) -> None:
    script, kind, phase = SMTP_CASES[name]
    server = serve(FakeSmtpServer(script, ip="127.0.20.24"))
    result = await scan(server, HOSTILE, service="smtp")
    assert result.status == "error"
    assert result.error is not None
    assert (result.error.kind, result.error.phase) == (kind, phase)
    assert_undecided(result)
    assert_not_reported_as_missing_starttls(result)
    assert server.problems == []
    assert server.connections == result.connections


async def test_smtp_without_starttls_is_reported_as_such(serve: Launcher) -> None:
    """The control case for the rate-limit tests: this, and only this, is 'not offered'."""
    server = serve(FakeSmtpServer(SmtpScript(starttls=False), ip="127.0.20.25"))
    result = await scan(server, HOSTILE, service="smtp")
    assert result.error is not None
    assert (result.error.kind, result.error.phase) == ("starttls_not_offered", "starttls")
    assert result.starttls is not None
    assert result.starttls.offered is False
    assert_undecided(result)
    assert result.connections == server.connections == 1


@pytest.mark.parametrize("greeting_timeout", [0.5, 5.0])
async def test_delayed_greeting(serve: Launcher, greeting_timeout: float) -> None:
    # Given a postscreen-style server that greets after 2 s, and a step timeout of 0.5 s
    server = serve(FakeSmtpServer(SmtpScript(greeting_delay=2.0), ip="127.0.20.26"))
    options = replace(
        HOSTILE, greeting_timeout=greeting_timeout, protocols=("TLSv1.2",), ciphers=False
    )
    # When it is scanned with a greeting timeout shorter, then longer, than the delay
    result = await scan(server, options, service="smtp")
    # Then the short one is a greeting timeout; the long one waits the greeting out
    # although every other step keeps its 0.5 s timeout
    if greeting_timeout < 2.0:
        assert result.error is not None
        assert (result.error.kind, result.error.phase) == ("timeout", "greeting")
        assert_undecided(result)
    else:
        assert result.status == "ok"
        assert result.protocols == {"TLSv1.2": True}
        assert result.starttls is not None
        assert result.starttls.offered is True
    assert result.connections == server.connections == 1


RATE_LIMIT_REPLIES = {
    "postfix": b"421 4.7.0 Too many connections\r\n",
    "exim": b"421-mx.test too many concurrent SMTP connections;\r\n"
    b"421 mx.test please try again later\r\n",
}


@pytest.mark.parametrize("reply", list(RATE_LIMIT_REPLIES))
async def test_rate_limit_is_backed_off_and_retried(serve: Launcher, reply: str) -> None:
    # Given a server that turns the first two connections away with 421
    script = SmtpScript(busy_first=2, busy_reply=RATE_LIMIT_REPLIES[reply])
    server = serve(FakeSmtpServer(script, stack=TLS12_ONLY, ip="127.0.20.27"))
    # When it is scanned with three attempts per connection
    result = await scan(server, HOSTILE, service="smtp")
    # Then the scan backs off, retries and gets the full, clean answer
    assert result.status == "ok"
    assert result.partial_errors == []
    assert result.protocols == {p: p == "TLSv1.2" for p in PROTOCOLS}
    assert result.cipher_suites == {
        "TLSv1.2": [
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        ]
    }
    assert result.starttls is not None
    assert result.starttls.offered is True
    # and the two refused connections are counted on both sides
    assert result.connections == server.connections
    unlimited = serve(FakeSmtpServer(stack=TLS12_ONLY, ip="127.0.20.28"))
    baseline = await scan(unlimited, HOSTILE, service="smtp")
    assert result.connections == baseline.connections + 2


@pytest.mark.parametrize(
    ("busy_at", "phase"),
    [("greeting", "greeting"), ("ehlo", "greeting"), ("starttls", "starttls")],
)
async def test_permanent_rate_limit_is_never_no_tls(
    serve: Launcher, busy_at: Literal["greeting", "ehlo", "starttls"], phase: str
) -> None:
    # Given a server that answers 421 to every connection (at greeting, EHLO or STARTTLS)
    script = SmtpScript(busy_first=ALWAYS, busy_at=busy_at)
    server = serve(FakeSmtpServer(script, ip="127.0.20.29"))
    # When it is scanned
    result = await scan(server, HOSTILE, service="smtp")
    # Then the endpoint is rate limited: not "no TLS", not "no STARTTLS"
    assert result.error is not None
    assert (result.error.kind, result.error.phase) == ("rate_limited", phase)
    assert_undecided(result)
    assert_not_reported_as_missing_starttls(result)
    # after exactly the configured number of attempts, each a new connection
    assert result.connections == server.connections == HOSTILE.attempts


async def test_reset_after_starttls_accepts_nothing(serve: Launcher) -> None:
    server = serve(FakeSmtpServer(SmtpScript(after_starttls="reset"), ip="127.0.20.30"))
    result = await scan(server, HOSTILE, service="smtp")
    assert_nothing_accepted(result)
    assert_not_reported_as_missing_starttls(result)
    assert result.connections == server.connections


async def test_reset_after_starttls_is_a_reset_error(serve: Launcher) -> None:
    server = serve(FakeSmtpServer(SmtpScript(after_starttls="reset"), ip="127.0.20.31"))
    result = await scan(server, HOSTILE, service="smtp")
    assert result.status == "error"
    assert result.error is not None
    assert result.error.kind == "reset"
    assert result.error.phase in ("starttls", "tls_hello")


# -- many endpoints at once ------------------------------------------------------------


def smtp_with(script: SmtpScript) -> Callable[[str], FakeServer]:
    def make(ip: str) -> FakeServer:
        return FakeSmtpServer(script, ip=ip)

    return make


def hostile_fleet() -> list[tuple[FakeServer, str]]:
    """Twenty hostile endpoints, each on its own address."""
    makers: list[tuple[Callable[[str], FakeServer], str]] = [
        (case.make, "https") for case in TLS_CASES.values()
    ]
    makers += [
        (TarpitServer, "https"),
        (TarpitServer, "https"),
        (AlertServer, "https"),
        (lambda ip: ResetServer(ip=ip), "https"),
        (lambda ip: ResetServer(after_hello=True, ip=ip), "https"),
    ]
    scripts = [script for script, _, _ in SMTP_CASES.values()]
    scripts.append(SmtpScript(busy_first=ALWAYS))
    makers += [(smtp_with(script), "smtp") for script in scripts]
    assert len(makers) == 20
    return [(make(f"127.0.21.{i}"), service) for i, (make, service) in enumerate(makers, 1)]


async def test_hostile_endpoints_do_not_hold_up_healthy_ones(serve: Launcher) -> None:
    # Given 20 hostile and 5 healthy endpoints, each on its own address
    hostile = [(serve(server), service) for server, service in hostile_fleet()]
    healthy: list[tuple[FakeServer, str, dict[str, bool]]] = [
        (
            serve(
                FakeLegacyServer({"SSLv3", "TLSv1.0"}, [RC4_SHA, DES_CBC3_SHA], ip="127.0.21.101")
            ),
            "https",
            {"SSLv3": True, "TLSv1.0": True},
        ),
        (
            serve(FakeTls13Server([29], ip="127.0.21.102")),
            "https",
            {"TLSv1.2": True, "TLSv1.3": True},
        ),
        (serve(FakeSslv2Server([0x010080], ip="127.0.21.103")), "https", {"SSLv2": True}),
        (serve(FakeSmtpServer(stack=TLS12_ONLY, ip="127.0.21.104")), "smtp", {"TLSv1.2": True}),
        (
            serve(FragmentingServer(TLS12_ONLY, record_size=1, ip="127.0.21.105")),
            "https",
            {"TLSv1.2": True},
        ),
    ]
    targets = [target_for(s, service) for s, service in hostile]
    targets += [target_for(s, service) for s, service, _ in healthy]
    # When all are scanned at once
    results: dict[tuple[str, int], EndpointResult] = {}
    async with asyncio.timeout(SCAN_BOUND):
        async for result in Scanner(HOSTILE).scan_many(targets):
            results[(result.target.ip, result.target.port)] = result
    # Then every scan finished, the healthy ones with their full answers
    assert len(results) == 25
    for server, _, accepted in healthy:
        result = results[(server.ip, server.port)]
        assert result.status == "ok", result.error
        assert result.partial_errors == []
        assert result.protocols == {p: accepted.get(p, False) for p in PROTOCOLS}
        assert result.connections == server.connections
    for server, _ in hostile:
        result = results[(server.ip, server.port)]
        assert_nothing_accepted(result)
        assert_not_reported_as_missing_starttls(result)
        assert server.problems == []


# -- the per-IP limit, as the servers count it ---------------------------------------


def busy_fleet(ip: str, gauge: Gauge, count: int) -> list[FakeServer]:
    """Endpoints on one address that hold each connection a moment before answering."""
    return [
        FakeLegacyServer(
            {"SSLv3", "TLSv1.0"}, [RC4_SHA, DES_CBC3_SHA], ip=ip, gauge=gauge, hold=0.02
        )
        for _ in range(count)
    ]


async def scan_all(scanner: Scanner, servers: list[FakeServer]) -> list[EndpointResult]:
    async with asyncio.timeout(SCAN_BOUND):
        return [r async for r in scanner.scan_many(target_for(s) for s in servers)]


async def test_per_ip_limit_holds_across_endpoints(serve: Launcher) -> None:
    # Given three endpoints on one address, counting their busy connections together
    gauge = Gauge()
    servers = [serve(s) for s in busy_fleet("127.0.22.1", gauge, 3)]
    # When they are scanned at once under a limit of 2 connections per IP
    scanner = Scanner(HOSTILE, limiter=LocalLimiter(per_ip=2))
    results = await scan_all(scanner, servers)
    # Then the scans succeed and the servers never saw more than 2 at once
    assert [r.status for r in results] == ["ok"] * 3
    assert all(r.protocols["SSLv3"] and r.protocols["TLSv1.0"] for r in results)
    assert gauge.peak <= 2
    assert gauge.total == sum(r.connections for r in results)


async def test_gauge_sees_concurrency_without_a_tight_limit(serve: Launcher) -> None:
    """The control for the test above: the gauge does see overlap when it happens."""
    gauge = Gauge()
    servers = [serve(s) for s in busy_fleet("127.0.22.2", gauge, 3)]
    results = await scan_all(Scanner(HOSTILE, limiter=LocalLimiter(per_ip=8)), servers)
    assert [r.status for r in results] == ["ok"] * 3
    assert gauge.peak > 2


async def test_tarpit_shares_an_address_without_starving_its_neighbour(serve: Launcher) -> None:
    # Given a tarpit and a healthy endpoint on one address, 2 connections allowed per IP
    tarpit = serve(TarpitServer("127.0.22.3"))
    healthy = serve(FakeTls13Server([29], ip="127.0.22.3"))
    scanner = Scanner(HOSTILE, limiter=LocalLimiter(per_ip=2))
    # When both are scanned at once
    results = {r.target.port: r for r in await scan_all(scanner, [tarpit, healthy])}
    # Then the tarpit costs its timeouts and the neighbour still gets its full answer
    bad, good = results[tarpit.port], results[healthy.port]
    assert bad.error is not None
    assert bad.error.kind == "timeout"
    assert good.status == "ok"
    assert good.protocols["TLSv1.2"]
    assert good.protocols["TLSv1.3"]
