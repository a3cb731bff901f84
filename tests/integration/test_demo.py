"""``tlsfleet demo`` as a real process: once on the test's PostgreSQL and Redis (and a
second time, to see the re-run), once on the embedded services of a fresh data
directory (the README's first command on a fresh machine), and with ``--keep``.

The summary's numbers are checked against what the demo fleet is built to contain
(:mod:`fleet.demo.fleet`): every host says how it is configured, so the expected
endpoints, protocols, findings, customers and account managers follow from the data,
not from a previous run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.resolver
import pytest
import redis
from sqlalchemy.ext.asyncio import AsyncEngine

from fleet.demo.fleet import CUSTOMERS, DOMAINS, DemoDomain, DemoHost, endpoints_of

BOUND = 110.0

#: Services with a plaintext phase before STARTTLS.
_STARTTLS = frozenset({"smtp", "submission", "imap", "pop3"})
_VERSIONS = {
    "modern": {"TLSv1.2", "TLSv1.3"},
    "legacy": {"TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"},
    "old_only": {"TLSv1.0", "TLSv1.1"},
}
_CERT_STATUS = {
    "expired": "expired",
    "self_signed": "self_signed",
    "wrong_name": "hostname_mismatch",
}


# -- what the fleet is built to contain ------------------------------------------------------


@dataclass(frozen=True)
class _Use:
    domain: DemoDomain
    host: DemoHost
    service: str

    @property
    def protocols(self) -> set[str]:
        if self.service in _STARTTLS and not self.host.starttls:
            return set()  # no STARTTLS: no TLS to probe
        return _VERSIONS[self.host.tls]


_FINDINGS: dict[str, Callable[[_Use], bool]] = {
    "legacy_tls": lambda u: bool(u.protocols & {"TLSv1.0", "TLSv1.1"}),
    "legacy_only": lambda u: bool(u.protocols) and not u.protocols & {"TLSv1.2", "TLSv1.3"},
    "plaintext_login": lambda u: u.service in _STARTTLS and u.host.plaintext_login,
    "no_starttls": lambda u: u.service in _STARTTLS and not u.host.starttls,
    "certificate": lambda u: bool(u.protocols) and u.host.cert in _CERT_STATUS,
    "certificate_expiring": lambda u: u.host.cert == "expiring",
}


def _uses() -> list[_Use]:
    return [_Use(d, host, service) for d in DOMAINS for host, service, _ in endpoints_of(d)]


def check_summary(document: dict[str, Any]) -> None:
    """``document`` (``tlsfleet demo --json``) says what the fleet is built to contain."""
    uses = _uses()
    endpoints = {(u.host.ip, u.service): u for u in uses}
    ports = document["demo"]["ports"]
    managers = {c.name: c.manager for c in CUSTOMERS}

    assert document["sweep"]["status"] == "done"
    assert document["sweep"]["total"] == document["sweep"]["done"] == len(endpoints) == 33
    assert document["inventory"] == {"domains": 40, "customers": 12, "account_managers": 4}
    assert document["discovery"] == {"null_mx": 1, "ok": 39}
    counted = document["endpoints"]
    # 40 domains reach 33 endpoints through 250 (domain, name) uses: dedup at work
    assert counted["total"] == 33
    assert counted["uses"] == len(uses) == 250
    assert counted["by_service"] == dict(sorted(Counter(s for _, s in endpoints).items()))
    no_tls = [u for u in endpoints.values() if not u.protocols]
    assert counted["results"] == {"error": len(no_tls), "ok": 33 - len(no_tls)}
    assert counted["errors"] == {"starttls_not_offered": len(no_tls)}
    assert document["protocols"] == {
        v: sum(1 for u in endpoints.values() if v in u.protocols)
        for v in ("SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3")
    }
    assert document["certificates"] == dict(
        sorted(
            Counter(
                _CERT_STATUS[u.host.cert] for u in endpoints.values() if _FINDINGS["certificate"](u)
            ).items()
        )
    )
    for finding, test in _FINDINGS.items():
        hit = [u for u in uses if test(u)]
        reported = document["findings"][finding]
        where = {(e["ip"], e["port"], e["service"]) for e in reported["endpoints"]}
        assert where == {(u.host.ip, ports[u.service], u.service) for u in hit}, finding
        assert reported["domains"] == sorted({u.domain.name for u in hit}), finding
        customers = sorted({u.domain.customer.name for u in hit})
        assert reported["customers"] == customers, finding
        assert reported["account_managers"] == sorted({managers[c] for c in customers}), finding
    by_manager = {m["name"]: m for m in document["account_managers"]}
    assert sorted(by_manager) == sorted({c.manager for c in CUSTOMERS})
    bruno = {c["name"]: c for c in by_manager["Bruno Costa"]["customers"]}
    assert bruno["Fjord Outdoor"]["findings"] == ["plaintext_login", "no_starttls", "certificate"]
    assert bruno["Elbe Architects"]["findings"] == []
    assert document["next"]["status"] == f"tlsfleet sweep status {document['sweep']['sweep_id']}"


# -- running it ------------------------------------------------------------------------------


def _env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLSFLEET_")}
    env.update(settings)
    return env


def tlsfleet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )


def run_demo(env: dict[str, str]) -> dict[str, Any]:
    done = tlsfleet(env, "demo", "--json")
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def _refused(ip: str, port: int) -> bool:
    try:
        socket.create_connection((ip, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def assert_fleet_stopped(document: dict[str, Any]) -> None:
    ports = document["demo"]["ports"]
    assert _refused("127.77.1.1", ports["smtp"])
    assert _refused("127.77.2.1", ports["https"])
    assert _refused("127.77.0.53", ports["dns"])


async def test_demo_on_the_configured_services_and_again(
    database_url: str, redis_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    # Given the test's PostgreSQL and Redis (the engine fixture empties the tables after)
    assert engine is not None
    data_dir = tmp_path / "data"
    env = _env(
        TLSFLEET_DATABASE_URL=database_url,
        TLSFLEET_REDIS_URL=redis_url,
        TLSFLEET_DATA_DIR=str(data_dir),
    )
    # When the demo runs
    first = run_demo(env)
    # Then its summary is what the fleet is built to contain, nothing embedded was
    # started, and everything it started is stopped
    check_summary(first)
    assert first["import"] == {"rows": 40, "created": 40, "updated": 0, "unchanged": 0, "errors": 0}
    assert first["sweep"]["previous_sweep_id"] is None
    assert not data_dir.exists()
    assert_fleet_stopped(first)
    # … and `tlsfleet sweep status ID` (the pointer it prints) shows the sweep
    status = tlsfleet(env, "sweep", "status", str(first["sweep"]["sweep_id"]), "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["done"] == 33

    # When it runs again on the same database
    second = run_demo(env)
    # Then the import is an idempotent upsert and the diff finds nothing new
    check_summary(second)
    assert second["import"]["unchanged"] == 40
    assert second["import"]["created"] == second["import"]["updated"] == 0
    assert second["sweep"]["previous_sweep_id"] == first["sweep"]["sweep_id"]
    diff = second["sweep"]["diff"]
    assert diff["newly_legacy_tls"] == diff["fixed_legacy_tls"] == 0
    assert diff["newly_plaintext_login"] == diff["fixed_plaintext_login"] == 0
    if second["demo"]["ports"] == first["demo"]["ports"]:  # not when a port was taken
        assert diff["new_endpoints"] == diff["vanished_endpoints"] == 0


def _embedded_stopped(data_dir: Path) -> bool:
    if (data_dir / "pg" / "postmaster.pid").exists():
        return False
    sockets = list(data_dir.glob("redis/*.sock"))
    for path in sockets:
        client = redis.Redis(unix_socket_path=str(path), socket_connect_timeout=1)
        try:
            client.ping()
        except redis.RedisError:
            continue
        finally:
            client.close()
        return False
    return True


def test_demo_on_a_fresh_machine_uses_the_embedded_services(tmp_path: Path) -> None:
    # Given no database or Redis configured and an empty data directory
    data_dir = tmp_path / "data"
    env = _env(TLSFLEET_DATA_DIR=str(data_dir))
    # When the demo runs
    first = run_demo(env)
    # Then the embedded PostgreSQL and Redis did the work, and are stopped again with
    # the fleet; their data is kept
    check_summary(first)
    assert first["import"]["created"] == 40
    assert (data_dir / "pg").is_dir()
    assert _embedded_stopped(data_dir)
    assert_fleet_stopped(first)
    # When it runs a second time, it reuses the data directory
    second = run_demo(env)
    check_summary(second)
    assert second["import"]["unchanged"] == 40
    assert second["sweep"]["previous_sweep_id"] == first["sweep"]["sweep_id"]
    assert _embedded_stopped(data_dir)


def _read_line(stream: Any, bound: float) -> str:
    """One line from a pipe, or an AssertionError after ``bound`` seconds."""
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(bound)
    assert found, f"nothing on the pipe within {bound} s"
    return found[0]


async def test_keep_serves_the_fleet_until_interrupted(
    database_url: str, redis_url: str, engine: AsyncEngine
) -> None:
    assert engine is not None
    env = _env(TLSFLEET_DATABASE_URL=database_url, TLSFLEET_REDIS_URL=redis_url)
    process = subprocess.Popen(
        [sys.executable, "-m", "fleet.cli", "demo", "--json", "--keep"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Given the demo's summary, printed while the fleet keeps running
        document = json.loads(_read_line(process.stdout, BOUND))
        check_summary(document)
        ports = document["demo"]["ports"]
        # Then its DNS answers and its servers greet
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.77.0.53"]
        resolver.port = ports["dns"]
        answer = resolver.resolve("baltic-freight.test", "MX", lifetime=5)
        assert [r.to_text() for r in answer] == ["10 mx-legacy.provider.test."]
        with socket.create_connection(("127.77.1.11", ports["smtp"]), timeout=5) as smtp:
            assert smtp.recv(100).startswith(b"220 mx-legacy.provider.test")
        # When it is interrupted (Ctrl-C)
        process.send_signal(signal.SIGINT)
        assert process.wait(BOUND) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    # Then the fleet is gone
    assert_fleet_stopped(document)


@pytest.mark.parametrize("bad", ["TLSFLEET_WORKER_MAX_JOBS=0", "TLSFLEET_WORKER_JOB_TIMEOUT=x"])
def test_bad_worker_settings_exit_2(bad: str) -> None:
    name, _, value = bad.partition("=")
    done = tlsfleet(_env(**{name: value}), "demo")
    assert done.returncode == 2
    assert "TLSFLEET_WORKER_" in done.stderr
