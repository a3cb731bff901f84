"""Domains end to end: local DNS → discovery → one scan per endpoint → per-domain documents."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from scanner.discovery import PortProfile
from scanner.dns import Resolver
from scanner.domains import DomainProgress, scan_domains
from scanner.engine import Scanner, ScanOptions
from tests.integration.dnsserver import DnsServer
from tests.integration.servers import (
    LEGACY,
    MODERN,
    BaseServer,
    Pki,
    SmtpBehaviour,
    SmtpServer,
    TlsServer,
)

CLUSTER = 10
DOMAINS = 1000


@pytest.fixture(scope="module")
def fleet(pki: Pki) -> Iterator[tuple[DnsServer, list[BaseServer]]]:
    """Ten MX hosts (STARTTLS SMTP on port 25's service) serving 1,000 domains, one of
    them also reached under a second name, and a web host."""
    names = [f"mx{i}.cluster.test" for i in range(CLUSTER)]
    servers: list[BaseServer] = []
    for i, name in enumerate(names):
        profile = replace(LEGACY if i % 2 else MODERN, hostnames=(name, "alias.cluster.test"))
        # Every MX host listens on the same port (the first one's), as port 25 would.
        port = servers[0].port if servers else 0
        servers.append(
            SmtpServer(
                pki.server_context(profile), SmtpBehaviour(), ip=f"127.0.33.{i + 1}", port=port
            )
        )
    web = TlsServer(pki.server_context(replace(MODERN, hostnames=("www.web.test",))), "127.0.33.50")
    servers.append(web)
    records = [f"{name}. 300 IN A 127.0.33.{i + 1}" for i, name in enumerate(names)]
    records.append("alias.cluster.test. 300 IN A 127.0.33.1")
    records += [f"d{n:04d}.test. 300 IN MX 10 {names[n % CLUSTER]}." for n in range(DOMAINS)]
    records += [
        "aliased.test. 300 IN MX 10 alias.cluster.test.",
        "web.test. 300 IN MX 0 .",
        "www.web.test. 300 IN A 127.0.33.50",
    ]
    zone = "\n".join(records)
    for server in servers:
        server.start()
    dns = DnsServer({"test.": zone}, host="127.0.33.100").start()
    try:
        yield dns, servers
    finally:
        dns.stop()
        for server in servers:
            server.stop()


async def test_thousand_domains_cause_ten_probe_sets(
    fleet: tuple[DnsServer, list[BaseServer]], pki: Pki
) -> None:
    dns, servers = fleet
    domains = [f"d{n:04d}.test" for n in range(DOMAINS)]
    before = [s.connections for s in servers]
    port = servers[0].port
    scanner = Scanner(ScanOptions(timeout=5.0, ca_file=pki.ca_file, groups=False))
    progress = DomainProgress()
    documents = [
        doc
        async for doc in scan_domains(
            domains,
            resolver=Resolver([dns.nameserver]),
            scanner=scanner,
            profile=PortProfile(mx=(f"smtp:{port}",), web=(), srv=False),
            allow_private=True,
            progress=progress,
        )
    ]
    # Every domain has its document with its one MX endpoint, all of them scanned fine...
    assert sorted(d.domain for d in documents) == domains
    assert progress.endpoints == CLUSTER
    assert progress.domains_done == DOMAINS
    assert all(d.endpoints[0].status == "ok" for d in documents)
    # ...and each of the ten servers saw exactly one probe set, however many domains
    # (100 each) use it: counted on the servers' side.
    shared = {d.endpoints[0].target.ip: d.endpoints[0] for d in documents}
    assert len(shared) == CLUSTER
    for i, server in enumerate(servers[:CLUSTER]):
        result = shared[server.ip]
        assert server.connections - before[i] == result.connections, server.ip
        assert result.protocols["TLSv1.0"] is bool(i % 2)  # legacy on odd servers


async def test_second_name_gets_its_own_certificate(
    fleet: tuple[DnsServer, list[BaseServer]], pki: Pki
) -> None:
    dns, servers = fleet
    port = servers[0].port
    before = servers[0].connections
    documents = {
        doc.domain: doc
        async for doc in scan_domains(
            ["d0000.test", "aliased.test", "web.test", "bad..name", "nxdomain.test"],
            resolver=Resolver([dns.nameserver]),
            scanner=Scanner(ScanOptions(timeout=5.0, ca_file=pki.ca_file, groups=False)),
            profile=PortProfile(
                mx=(f"smtp:{port}",), web=(f"https:{servers[-1].port}",), srv=False
            ),
            allow_private=True,
        )
    }
    plain, aliased = documents["d0000.test"].endpoints[0], documents["aliased.test"].endpoints[0]
    # One scan of 127.0.33.1, shared; the alias name got its own certificate fetch.
    assert plain.target.sni == "mx0.cluster.test"
    assert aliased.target.sni == "alias.cluster.test"
    assert plain.protocols == aliased.protocols
    assert plain.certificate is not None
    assert aliased.certificate is not None
    assert aliased.certificate.hostname_match
    assert servers[0].connections - before == plain.connections + 1
    web = documents["web.test"]
    assert web.discovery.null_mx
    assert [e.target.sni for e in web.endpoints] == ["www.web.test"]
    assert web.endpoints[0].status == "ok"
    assert documents["bad..name"].discovery.errors[0].kind == "invalid_target"
    assert documents["nxdomain.test"].discovery.status == "nxdomain"


async def test_private_endpoints_are_refused_by_default(
    fleet: tuple[DnsServer, list[BaseServer]],
) -> None:
    dns, servers = fleet
    before = servers[0].connections
    (doc,) = [
        d
        async for d in scan_domains(
            ["d0000.test"], resolver=Resolver([dns.nameserver]), scanner=Scanner()
        )
    ]
    (endpoint,) = doc.endpoints
    assert endpoint.status == "error"
    assert endpoint.error is not None
    assert endpoint.error.kind == "private_target"
    assert servers[0].connections == before


def test_cli_scans_domains_from_a_file(
    fleet: tuple[DnsServer, list[BaseServer]], pki: Pki, tmp_path: Path
) -> None:
    dns, _ = fleet
    listing = tmp_path / "domains.txt"
    listing.write_text("# customers\nweb.test\n\nnot a domain  # typo\nd0001.test\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fleet.cli",
            "scan",
            "--json",
            "--allow-private",
            "--resolver",
            dns.nameserver,
            "--ca-file",
            pki.ca_file,
            "--timeout",
            "2",
            "--from-file",
            str(listing),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    docs = {d["domain"]: d for d in map(json.loads, proc.stdout.splitlines())}
    assert set(docs) == {"web.test", "not a domain", "d0001.test"}
    assert docs["not a domain"]["discovery"]["errors"][0]["kind"] == "invalid_target"
    assert docs["web.test"]["discovery"]["status"] == "null_mx"
    mx = docs["d0001.test"]["discovery"]["mx"]
    assert [(m["preference"], m["host"]) for m in mx] == [(10, "mx1.cluster.test")]
    # Port 25 on the MX host is closed here: a refused endpoint, reported per domain.
    (endpoint,) = docs["d0001.test"]["endpoints"]
    assert endpoint["target"]["port"] == 25
    assert endpoint["error"]["kind"] == "refused"
    assert proc.returncode == 1
