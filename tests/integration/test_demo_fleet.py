"""The demo fleet itself (:mod:`fleet.demo.fleet`): its DNS leads every domain to the
endpoints the data says, every certificate is what its host is built with, and a taken
port moves a whole service (never one address of it) to another port."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from fleet.demo.fleet import (
    CUSTOMERS,
    DNS_IP,
    DOMAINS,
    HOSTS,
    PREFERRED_PORTS,
    RunningFleet,
    demo_fleet,
    endpoints_of,
    inventory_records,
    names_reaching,
)
from fleet.inventory import RawRow, validate_rows
from scanner.discovery import discover, plan_endpoints
from scanner.dns import Resolver
from scanner.engine import Scanner, ScanOptions
from scanner.models import Target
from scanner.services import service_named


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[RunningFleet]:
    with demo_fleet(tmp_path) as running:
        yield running


def test_the_data_adds_up() -> None:
    assert len(DOMAINS) == 40
    assert len(CUSTOMERS) == 12
    assert len({c.manager for c in CUSTOMERS}) == 4
    assert len({h.ip for h in HOSTS}) == len(HOSTS)
    assert all(h.ip.startswith("127.77.") for h in HOSTS)
    # The inventory is valid as `tlsfleet inventory import` reads it
    rows = [RawRow(n, r.to_dict()) for n, r in enumerate(inventory_records(), start=1)]
    checked = validate_rows(rows)
    assert checked.errors == []
    assert checked.records == inventory_records()


async def test_dns_leads_every_domain_to_its_endpoints(fleet: RunningFleet) -> None:
    # When every domain is discovered through the fleet's DNS and planned with its profile
    resolver = Resolver([fleet.nameserver], timeout=2)
    discoveries = [await discover(d.name, resolver) for d in DOMAINS]
    plan = plan_endpoints(discoveries, fleet.profile, allow_private=True)
    # Then each domain reaches exactly the endpoints (and by the names) the data says
    for domain, discovery in zip(DOMAINS, discoveries, strict=True):
        assert discovery.status == ("ok" if domain.mx else "null_mx"), domain.name
        expected = {(h.ip, fleet.ports[s], s) for h, s, _ in endpoints_of(domain)}
        assert set(plan.endpoints(domain.name)) == expected, domain.name
    # … and the plan's endpoints are the servers that run, each once
    running = {(e.ip, e.port, e.service) for e in fleet.endpoints}
    assert {(t.ip, t.port, t.service) for t in plan.targets} == running
    assert len(running) == len(fleet.endpoints) == 33
    assert fleet.nameserver == f"{DNS_IP}:{fleet.ports['dns']}"


_STATUS = {
    "valid": "valid",
    "expiring": "valid",
    "expired": "expired",
    "self_signed": "self_signed",
    "wrong_name": "hostname_mismatch",
}


async def test_every_certificate_is_what_its_host_is_built_with(fleet: RunningFleet) -> None:
    scanner = Scanner(ScanOptions(timeout=3, greeting_timeout=3, ca_file=str(fleet.ca_file)))
    for endpoint in fleet.endpoints:
        host = endpoint.host
        if endpoint.service in ("smtp", "imap", "pop3") and not host.starttls:
            continue  # no TLS at all
        service = service_named(endpoint.service)
        target = Target(host.name, host.ip, endpoint.port, service.name, service.tls_mode, None)
        for name in names_reaching(host):
            certificate = await scanner.certificate(replace(target, host=name, sni=name))
            assert certificate is not None, (endpoint, name)
            assert certificate.status == _STATUS[host.cert], (endpoint, name)
            if host.cert == "expiring":
                assert certificate.days_left < 30


def _taken(ip: str, port: int) -> contextlib.AbstractContextManager[object]:
    """A listening socket on ``ip:port`` (nothing when something holds it already)."""
    sock = socket.socket()
    try:
        # As the fleet's servers do: connections of an earlier fleet left in TIME_WAIT
        # must not keep this socket from holding the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ip, port))
        sock.listen(1)
    except OSError:
        sock.close()
        return contextlib.nullcontext()
    return sock


def test_a_taken_port_moves_the_whole_service(tmp_path: Path) -> None:
    # Given the SMTP port taken on one of the addresses the fleet's MX hosts need, and
    # the DNS port taken (TCP only)
    with (
        _taken("127.77.1.2", PREFERRED_PORTS["smtp"]),
        _taken(DNS_IP, PREFERRED_PORTS["dns"]),
        demo_fleet(tmp_path) as fleet,
    ):
        # Then all SMTP servers moved together to one other port, and so did the DNS
        smtp = {e.port for e in fleet.endpoints if e.service == "smtp"}
        assert len(smtp) == 1
        assert smtp != {PREFERRED_PORTS["smtp"]}
        assert fleet.ports["smtp"] in smtp
        assert fleet.ports["dns"] != PREFERRED_PORTS["dns"]
        assert fleet.nameserver == f"{DNS_IP}:{fleet.ports['dns']}"
        # … and every other service still shares one port
        for service in ("https", "imap", "imaps", "pop3", "pop3s", "submission", "submissions"):
            assert len({e.port for e in fleet.endpoints if e.service == service}) == 1
