"""The harness of the sweep and worker tests (no tests of its own).

- :func:`local_fleet`: canned TLS endpoints on loopback addresses, the connections to
  each address counted together on the servers' side, and a DNS zone whose domains
  reach them through SRV records (the servers' ports are the kernel's choice, and SRV
  records carry ports: the sweeps use :data:`SRV_ONLY`, which probes nothing else).
- :class:`WorkerProcess`: a real ``tlsfleet worker`` in its own process, which a test
  can stop, or SIGKILL.
- helpers to import the fleet's inventory and to wait (boundedly) for a sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.inventory import InventoryRecord
from fleet.repositories import sweeps as sweep_repo
from fleet.repositories.inventory import upsert_inventory
from fleet.repositories.results import sweep_results
from fleet.repositories.sweeps import SweepProgress
from fleet.sweeps import SweepOptions
from scanner.discovery import PortProfile
from tests.integration.dnsserver import DnsServer
from tests.integration.fakes import FakeLegacyServer, FakeServer, Gauge, Launcher
from tests.ports import free_port

__all__ = [
    "BOUND",
    "SRV_ONLY",
    "LocalFleet",
    "WorkerProcess",
    "assert_one_result_per_endpoint",
    "import_inventory",
    "local_fleet",
    "wait_for",
    "wait_until_done",
    "worker_env",
]

#: Upper bound on any wait (liveness, never a timing assertion).
BOUND = 120.0

#: Probe only what SRV records name, on their ports.
SRV_ONLY = SweepOptions(quick=True, profile=PortProfile(mx=(), web=(), srv=True))

# RC4-SHA, DES-CBC3-SHA, AES128-SHA: what the canned legacy stacks accept.
_SUITES = [0x0005, 0x000A, 0x002F]
_PROFILES: tuple[frozenset[str], ...] = (
    frozenset({"TLSv1.0", "TLSv1.2"}),
    frozenset({"TLSv1.2"}),
    frozenset({"TLSv1.0", "TLSv1.1"}),
)
# SRV services of implicit TLS (the canned stacks answer a ClientHello straight away).
_SERVICES = ("imaps", "submissions", "pop3s")


@dataclass
class LocalFleet:
    """Endpoints on a few loopback addresses and the DNS zone that leads to them.

    ``gauges``: connections busy at once per address, counted by the servers.
    ``endpoints``: (ip, port, service) of every endpoint the zone leads to, including
    ``refused`` (an address and port where nothing listens).
    """

    zone: str
    dns: DnsServer
    domains: list[str]
    customers: dict[str, list[str]]
    gauges: dict[str, Gauge]
    servers: list[FakeServer]
    endpoints: set[tuple[str, int, str]]
    refused: tuple[str, int, str]
    records: list[InventoryRecord] = field(default_factory=list)

    @property
    def nameserver(self) -> str:
        return self.dns.nameserver

    def connections(self) -> int:
        """Connections every server accepted, in all."""
        return sum(s.connections for s in self.servers)


@contextlib.contextmanager
def local_fleet(
    net: str,
    *,
    domains: int = 8,
    per_address: int = 3,
    addresses: int = 2,
    hold: float = 0.02,
) -> Iterator[LocalFleet]:
    """A fleet on ``<net>.1`` … ``<net>.<addresses>`` (e.g. ``net="127.91.0"``).

    Each address serves ``per_address`` endpoints (canned TLS stacks holding every
    connection ``hold`` seconds). Domain *k* (``dK.sweep.test``, customer ``cK % 3``)
    reaches endpoint *k mod n* on every address, so endpoints are shared by several
    domains; the first domain also reaches a port where nothing listens.
    """
    origin = "sweep.test"
    with Launcher() as serve:
        gauges = {f"{net}.{a}": Gauge() for a in range(1, addresses + 1)}
        servers: list[FakeServer] = []
        by_ip: dict[str, list[tuple[int, str]]] = {}
        lines = []
        for index, (ip, gauge) in enumerate(gauges.items()):
            host = f"mail{index + 1}"
            lines.append(f"{host} A {ip}")
            for n in range(per_address):
                server = serve(
                    FakeLegacyServer(
                        _PROFILES[n % len(_PROFILES)], _SUITES, ip=ip, gauge=gauge, hold=hold
                    )
                )
                servers.append(server)
                by_ip.setdefault(ip, []).append((server.port, _SERVICES[n % len(_SERVICES)]))
        first_ip = next(iter(gauges))
        refused = (first_ip, free_port(first_ip), "pop3s")
        lines.append(f"nothing A {refused[0]}")
        names: list[str] = []
        customers: dict[str, list[str]] = {}
        endpoints: set[tuple[str, int, str]] = set()
        for k in range(domains):
            name = f"d{k}.{origin}"
            names.append(name)
            customers.setdefault(f"Customer {k % 3}", []).append(name)
            for index, (ip, ports) in enumerate(by_ip.items()):
                port, service = ports[k % len(ports)]
                lines.append(f"_{service}._tcp.d{k} SRV 0 0 {port} mail{index + 1}.{origin}.")
                endpoints.add((ip, port, service))
        lines.append(f"_pop3s._tcp.d0 SRV 0 0 {refused[1]} nothing.{origin}.")
        endpoints.add(refused)
        zone = "\n".join(lines) + "\n"
        with DnsServer({origin: zone}, host="127.0.0.1") as dns:
            records = [
                InventoryRecord(
                    domain=domain,
                    customer=customer,
                    account_manager="Ann Manager",
                    account_manager_email="ann@provider.test",
                )
                for customer, domains_of in customers.items()
                for domain in domains_of
            ]
            yield LocalFleet(
                zone=zone,
                dns=dns,
                domains=names,
                customers=customers,
                gauges=gauges,
                servers=servers,
                endpoints=endpoints,
                refused=refused,
                records=records,
            )


async def import_inventory(
    sessions: async_sessionmaker[AsyncSession], records: Sequence[InventoryRecord]
) -> None:
    """Store the fleet's domains, customers and account manager."""
    async with sessions() as session:
        await upsert_inventory(session, records)
        await session.commit()


async def wait_for(
    sessions: async_sessionmaker[AsyncSession],
    sweep_id: int,
    predicate: Callable[[SweepProgress], bool],
    *,
    bound: float = BOUND,
    interval: float = 0.1,
) -> SweepProgress:
    """Poll the sweep's progress until ``predicate`` holds (TimeoutError after ``bound``)."""
    async with asyncio.timeout(bound):
        while True:
            async with sessions() as session:
                progress = await sweep_repo.sweep_progress(session, sweep_id)
            assert progress is not None
            if predicate(progress):
                return progress
            await asyncio.sleep(interval)


async def wait_until_done(
    sessions: async_sessionmaker[AsyncSession], sweep_id: int, *, bound: float = BOUND
) -> SweepProgress:
    """Wait until the sweep is final; it must be ``done``."""
    progress = await wait_for(
        sessions, sweep_id, lambda p: p.status in sweep_repo.FINAL_STATUSES, bound=bound
    )
    assert progress.status == "done", progress
    return progress


async def assert_one_result_per_endpoint(
    sessions: async_sessionmaker[AsyncSession], sweep_id: int, fleet: LocalFleet
) -> None:
    """Every endpoint the fleet's DNS leads to has exactly one result in the sweep.

    The unique constraint makes "at most one" structural; "exactly one each" is the
    result rows covering the sweep's endpoints while their count equals the total.
    """
    async with sessions() as session:
        endpoint_ids = await sweep_repo.sweep_endpoint_ids(session, sweep_id)
        results = await sweep_results(session, sweep_id)
        progress = await sweep_repo.sweep_progress(session, sweep_id)
    assert progress is not None
    assert sorted(results) == endpoint_ids
    assert progress.done == progress.total == len(fleet.endpoints) == len(endpoint_ids)
    seen = {
        (r.document["target"]["ip"], r.document["target"]["port"], r.document["target"]["service"])
        for r in results.values()
    }
    assert seen == fleet.endpoints


def worker_env(
    database_url: str,
    redis_url: str,
    nameserver: str,
    **extra: str,
) -> dict[str, str]:
    """The environment of a worker process on the test's services and DNS.

    Short timeouts keep faults quick: a job may run 12 s, the reconciler runs every 2 s,
    a worker silent for 1.5 s is taken for dead, retries start at 0.2 s.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLSFLEET_")}
    env.update(
        TLSFLEET_DATABASE_URL=database_url,
        TLSFLEET_REDIS_URL=redis_url,
        TLSFLEET_RESOLVERS=f'["{nameserver}"]',
        TLSFLEET_ALLOW_PRIVATE_TARGETS="true",
        TLSFLEET_PER_IP_LIMIT="2",
        TLSFLEET_TIMEOUT="2",
        TLSFLEET_GREETING_TIMEOUT="2",
        TLSFLEET_WORKER_JOB_TIMEOUT="12",
        TLSFLEET_WORKER_MAX_JOBS="4",
        TLSFLEET_WORKER_RECONCILE_EVERY="2",
        TLSFLEET_WORKER_POLL_DELAY="0.1",
        TLSFLEET_WORKER_RETRY_DELAY="0.2",
        TLSFLEET_WORKER_RETRY_MAX_DELAY="2",
        TLSFLEET_WORKER_MAX_TRIES="20",
        TLSFLEET_WORKER_LEASE_TTL="5",
        TLSFLEET_WORKER_HEARTBEAT="0.5",
    )
    env.update(extra)
    return env


class WorkerProcess:
    """``python -m fleet.cli worker`` with ``env``, its output in ``log``."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._file: IO[bytes] = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fleet.cli", "worker"],
            env=env,
            stdout=self._file,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no slot handed back, running jobs left in Redis."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait (SIGKILL if it does not exit)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._file.close()
        return self.proc.returncode


@contextlib.contextmanager
def workers(env: dict[str, str], directory: Path, count: int = 2) -> Iterator[list[WorkerProcess]]:
    """``count`` worker processes, stopped at the end (their logs in ``directory``)."""
    started: list[WorkerProcess] = []
    try:
        for n in range(count):
            started.append(WorkerProcess(env, directory / f"worker{n}.log"))
        yield started
    finally:
        for worker in started:
            worker.stop()
