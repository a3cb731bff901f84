"""Nightly-sweep benchmark: N domains over a few hundred local endpoints, on real workers.

Everything runs on this machine, nothing outside 127.0.0.0/8 is touched:

* the tests' local authoritative DNS server (``fleet/demo/dnsserver.py``) serving a
  zone of N customer domains (``dK.customers.bench``) whose MX records point at a few
  hundred shared MX hosts (``mxI.hosting.bench``) and whose apex and ``www`` lead to a
  few hundred shared web front ends (``webJ.hosting.bench``); 1 % of the domains have a
  null MX, 1 % do not exist;
* the endpoints: **Postfix** with one ``address:port`` smtpd listener per MX host in
  ``master.cf`` (SMTP with STARTTLS; restarted before each run so that every run starts
  with no smtpd process), and one **nginx** with one ``server`` block per web host, on one
  port across many loopback addresses; each host has its own certificate, one in three
  is configured "legacy" (TLS 1.0–1.3, ``ALL:@SECLEVEL=0``), the rest "modern" (TLS 1.2
  and 1.3). ``--mail nginx`` puts HTTPS on the MX hosts too, instead of Postfix;
* a fresh database on the local PostgreSQL (``CREATE DATABASE``, dropped at the end) and
  a Redis database number of our own on the local Redis (claimed the way the test suite
  claims its own, flushed before and after), migrated with ``tlsfleet migrate``; the
  inventory imported as CSV with ``tlsfleet inventory import``.

Then a sweep of the whole fleet runs on one ``tlsfleet worker`` process, and a fresh
sweep on two (``--workers 1,2``), each worker a real subprocess with the production
defaults (``TLSFLEET_WORKER_*``, per-IP and global limits) unless overridden. The sweep
is started through ``fleet.sweeps.start_sweep`` (what ``tlsfleet sweep start --all``
calls) because the endpoints listen on non-standard ports: its options carry a port
profile (``smtp:PORT`` on MX hosts, ``https:PORT`` on web hosts, no SRV). Quick scans
unless ``--full``. Measured per run:

* wall time from ``start_sweep`` to the sweep seen ``done`` (polled every 0.1 s), with
  its phases: discovery (until ``scanning``), scans (until every result is in), close;
* endpoints per second, and rows written per second (``scan_results`` +
  ``domain_endpoints`` + ``sweep_domains`` rows of the sweep, counted in SQL);
* each worker's peak RSS (``VmHWM`` of ``/proc/PID/status``, the kernel's high-water
  mark, read when the sweep is done) and CPU seconds during the sweep (``/proc/PID/stat``
  deltas), the jobs it ran, retries and failures (from its log);
* the servers' CPU seconds (DNS, nginx, Postfix) on the same two cores.

Checks (a failure makes the exit status 1; no timing threshold is asserted):
exactly one result per endpoint and exactly the expected endpoints; every domain has its
``sweep_domains`` row with the expected discovery status; the ``domain_endpoints`` rows
are exactly the expected (domain, endpoint, host, how) uses; every result is ``ok`` with
the protocol versions the server is configured for (and STARTTLS offered on SMTP);
in a full sweep, one certificate row per further SNI name; and the results of the runs
agree with each other, endpoint by endpoint.

    python bench/bench_sweep.py                                 # 10,000 domains, 300 endpoints
    python bench/bench_sweep.py --domains 1000 --endpoints 60 --json /tmp/sweep.json
    python bench/bench_sweep.py --full --mail nginx

Needs root (Postfix), ``/usr/sbin/nginx`` and Postfix (``.ci/install-daemons.sh``), and
PostgreSQL on 127.0.0.1:5432 (a role that may ``CREATE DATABASE``) and Redis on
127.0.0.1:6379 (``--pg-admin-url``, ``--redis-url``). Stops everything it started and
drops its database whatever happens (exception, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import ctypes
import importlib.metadata
import json
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import types
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import psycopg
import redis
from psycopg import sql
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from fleet.db.session import async_url, create_engine, create_sessionmaker, sync_url
from fleet.demo.pki import DemoCA
from fleet.embedded import arq_redis_settings
from fleet.jobs import create_job_pool
from fleet.repositories.sweeps import FINAL_STATUSES, sweep_progress
from fleet.sweeps import SweepOptions, start_sweep
from scanner.discovery import PortProfile
from scanner.models import PROTOCOLS

ROOT = Path(__file__).resolve().parents[1]
PROVIDER = "hosting.bench"
CUSTOMERS = "customers.bench"
#: Second octet of the loopback networks: MX hosts, web hosts, the DNS server.
MAIL_NET, WEB_NET, DNS_NET = 61, 62, 63
ADDRESSES_PER_BLOCK = 250

NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
POSTFIX_MASTER = "/usr/lib/postfix/sbin/master"

PG_CANDIDATES = (
    "postgresql://postgres@127.0.0.1:5432/postgres",
    "postgresql://root@127.0.0.1:5432/postgres",
)
#: The test suite's claim on a Redis database number (tests/conftest.py): the same key,
#: so that a benchmark and a test run never share one.
REDIS_CLAIM = "tlsfleet:test-db-claim:{}"
REDIS_CLAIM_TTL = 6 * 3600

#: Bound on waits for start-up (liveness only, never a measurement).
START_BOUND = 120.0
POLL_INTERVAL = 0.1

Profile = Literal["legacy", "modern"]
Role = Literal["mx", "web"]
Key = tuple[str, int, str]

ALL_VERSIONS = frozenset({"TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"})
#: What a scan must find per profile (both servers are configured to match).
EXPECTED_VERSIONS: dict[Profile, frozenset[str]] = {
    "legacy": ALL_VERSIONS,
    "modern": frozenset({"TLSv1.2", "TLSv1.3"}),
}
#: nginx: ssl_protocols, ssl_ciphers.
NGINX_PROFILES: dict[Profile, tuple[str, str]] = {
    "legacy": ("TLSv1 TLSv1.1 TLSv1.2 TLSv1.3", "ALL:@SECLEVEL=0"),
    "modern": ("TLSv1.2 TLSv1.3", "ECDHE+AESGCM:ECDHE+CHACHA20"),
}
#: Postfix smtpd: minimum protocol, OpenSSL cipher string, server cipher order.
POSTFIX_PROFILES: dict[Profile, tuple[str, str, str]] = {
    "legacy": (">=TLSv1", "ALL:@SECLEVEL=0", "no"),
    "modern": (">=TLSv1.2", "ECDHE+AESGCM:ECDHE+CHACHA20", "yes"),
}

# Piped output (logs, tee) gets a width that fits the table instead of 80 columns.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


# -- the fleet: hosts, domains, zones, inventory -------------------------------------------


@dataclass(frozen=True, slots=True)
class Host:
    """A shared MX host or web front end: its name, address, endpoint and profile."""

    name: str
    ip: str
    port: int
    service: str
    profile: Profile
    role: Role

    @property
    def key(self) -> Key:
        return (self.ip, self.port, self.service)


@dataclass(frozen=True, slots=True)
class Use:
    """One expected ``domain_endpoints`` row."""

    domain: str
    key: Key
    host: str
    how: str


@dataclass
class Fleet:
    mail: list[Host]
    web: list[Host]
    domains: list[str]
    statuses: dict[str, str]
    uses: set[Use]
    zones: dict[str, str]

    def hosts(self) -> list[Host]:
        return [*self.mail, *self.web]

    def endpoints(self) -> dict[Key, Host]:
        """The endpoints the domains lead to (only those are scanned)."""
        used = {use.key for use in self.uses}
        return {h.key: h for h in self.hosts() if h.key in used}


def address(net: int, index: int) -> str:
    return f"127.{net}.{index // ADDRESSES_PER_BLOCK}.{index % ADDRESSES_PER_BLOCK + 1}"


def _profile(index: int) -> Profile:
    return "legacy" if index % 3 == 0 else "modern"


def plan_fleet(
    domains: int, mail_hosts: int, web_hosts: int, mail: tuple[str, int], web_port: int
) -> Fleet:
    """The hosts, the zones and every use a correct discovery must find.

    Domain *n*: 1 in 100 does not exist, 1 in 100 has a null MX (and a web site);
    the others have two MX records (hosts ``n mod M`` and ``7n + 1 mod M``), an apex
    on web host ``n mod W`` and a ``www`` CNAME to web host ``3n + 1 mod W``.
    """
    mail_service, mail_port = mail
    mx = [
        Host(f"mx{i}.{PROVIDER}", address(MAIL_NET, i), mail_port, mail_service, _profile(i), "mx")
        for i in range(mail_hosts)
    ]
    web = [
        Host(f"web{j}.{PROVIDER}", address(WEB_NET, j), web_port, "https", _profile(j), "web")
        for j in range(web_hosts)
    ]
    provider = [f"mx{i} A {h.ip}\n" for i, h in enumerate(mx)]
    provider += [f"web{j} A {h.ip}\n" for j, h in enumerate(web)]
    customers: list[str] = []
    names: list[str] = []
    statuses: dict[str, str] = {}
    uses: set[Use] = set()
    for n in range(domains):
        label = f"d{n}"
        name = f"{label}.{CUSTOMERS}"
        names.append(name)
        apex = web[n % web_hosts]
        if n % 100 == 99:
            statuses[name] = "nxdomain"
            continue
        if n % 100 == 98:
            statuses[name] = "null_mx"
            customers.append(f"{label} MX 0 .\n{label} A {apex.ip}\n")
            uses.add(Use(name, apex.key, name, "web"))
            continue
        statuses[name] = "ok"
        first, second = mx[n % mail_hosts], mx[(n * 7 + 1) % mail_hosts]
        www = web[(n * 3 + 1) % web_hosts]
        records = [f"{label} MX 10 {first.name}."]
        uses.add(Use(name, first.key, first.name, "mx"))
        if second is not first:
            records.append(f"{label} MX 20 {second.name}.")
            uses.add(Use(name, second.key, second.name, "mx"))
        records.append(f"{label} A {apex.ip}")
        records.append(f"www.{label} CNAME {www.name}.")
        uses.add(Use(name, apex.key, name, "web"))
        uses.add(Use(name, www.key, f"www.{name}", "web"))
        customers.append("\n".join(records) + "\n")
    return Fleet(
        mail=mx,
        web=web,
        domains=names,
        statuses=statuses,
        uses=uses,
        zones={PROVIDER: "".join(provider), CUSTOMERS: "".join(customers)},
    )


def write_inventory(fleet: Fleet, path: Path) -> None:
    """The CSV ``tlsfleet inventory import`` reads: 5 domains per customer, 20 managers."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["domain", "customer", "account_manager", "account_manager_email", "tags"])
        for n, name in enumerate(fleet.domains):
            customer = n // 5
            manager = customer % 20
            writer.writerow(
                [
                    name,
                    f"Customer {customer:05d}",
                    f"Manager {manager:02d}",
                    f"manager{manager:02d}@provider.bench",
                    "bench;nightly" if n % 10 == 0 else "",
                ]
            )


# -- processes ------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the benchmark dies without cleaning up."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU of a process (and of its children it has reaped)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def status_kib(pid: int, field_name: str) -> int | None:
    """A ``/proc/PID/status`` memory field (``VmHWM``, ``VmRSS``) in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def session_members(session_id: int) -> list[int]:
    """Live processes of a session (a daemon's whole tree: it never leaves its session)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and fields[0] != "Z" and int(fields[3]) == session_id:
            members.append(int(entry.name))
    return members


class Daemon:
    """One server process tree in a session of its own: started, measured, stopped."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        log: Path,
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.log = log
        self.cwd = cwd
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, stdout: int | IO[bytes] | None = None) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=stdout if stdout is not None else log,
                stderr=log,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        return self.process

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cpu_seconds(self) -> float:
        """CPU of the whole tree so far: live members, and children the leader reaped."""
        if self.process is None:
            return 0.0
        leader = self.process.pid
        total = cpu_seconds(leader, children=True)
        for pid in session_members(leader):
            if pid != leader:
                total += cpu_seconds(pid)
        return total

    def logs(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # Whatever the leader left behind in its session (smtpd, nginx workers).
        deadline = time.monotonic() + 5
        while session_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in session_members(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def listening(pairs: set[tuple[str, int]]) -> set[tuple[str, int]]:
    """Which of ``pairs`` have a listening TCP socket (``/proc/net/tcp``)."""
    found: set[tuple[str, int]] = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[3] != "0A":
            continue
        ip_hex, port_hex = parts[1].split(":")
        ip = socket.inet_ntoa(bytes.fromhex(ip_hex)[::-1])
        pair = (ip, int(port_hex, 16))
        if pair in pairs:
            found.add(pair)
    return found


def wait_listening(daemon: Daemon, pairs: set[tuple[str, int]]) -> None:
    deadline = time.monotonic() + START_BOUND
    while missing := pairs - listening(pairs):
        if not daemon.alive():
            raise SystemExit(f"{daemon.name} exited:\n{daemon.logs()}")
        if time.monotonic() > deadline:
            raise SystemExit(
                f"{daemon.name} does not listen on {sorted(missing)[:3]} "
                f"({len(missing)} missing):\n{daemon.logs()}"
            )
        time.sleep(0.1)


def free_port(ips: Sequence[str]) -> int:
    """A port that can be bound on every one of ``ips`` (all servers share one port)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((ips[0], 0))
            port: int = probe.getsockname()[1]
        try:
            for ip in ips:
                with socket.socket() as sock:
                    sock.bind((ip, port))
        except OSError:
            continue
        return port
    raise SystemExit("no port is free on every address")


# -- DNS, nginx, Postfix ----------------------------------------------------------------------


@contextlib.contextmanager
def dns_servers(
    zones: dict[str, str], workdir: Path, count: int
) -> Iterator[tuple[list[Daemon], str]]:
    """``count`` DNS server processes sharing one port (``SO_REUSEPORT``); yield them
    and the ``host:port`` they answer on."""
    zone_args: list[str] = []
    for origin, text in zones.items():
        path = workdir / f"{origin}.zone"
        path.write_text(text, encoding="utf-8")
        zone_args += ["--zone", f"{origin}={path}"]
    host = address(DNS_NET, 52)
    servers: list[Daemon] = []
    port = 0
    try:
        for n in range(count):
            daemon = Daemon(
                f"dns{n}",
                [
                    sys.executable,
                    "-m",
                    "fleet.demo.dnsserver",
                    *zone_args,
                    "--host",
                    host,
                    "--port",
                    str(port),
                    "--reuse-port",
                ],
                workdir / f"dns{n}.log",
                cwd=ROOT,
            )
            servers.append(daemon)
            proc = daemon.start(stdout=subprocess.PIPE)
            assert proc.stdout is not None
            line = proc.stdout.readline().decode().split()
            if not line or line[0] != "ready":
                raise SystemExit(f"DNS server did not start: {line}\n{daemon.logs()}")
            port = int(line[2])
        yield servers, f"{host}:{port}"
    finally:
        for daemon in servers:
            daemon.stop()


def find_nginx() -> str:
    for candidate in (shutil.which("nginx"), *NGINX_CANDIDATES):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit("nginx not found: run .ci/install-daemons.sh (or apt-get install nginx-light)")


def write_nginx(
    root: Path, hosts: Sequence[Host], certs: dict[str, tuple[Path, Path]], workers: int
) -> Path:
    temp = root / "temp"
    temp.mkdir(parents=True, exist_ok=True)
    user = "user nobody nogroup;" if os.geteuid() == 0 else ""
    temp_paths = "\n".join(
        f"    {kind}_temp_path {temp / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    servers = []
    for host in hosts:
        cert, key = certs[host.name]
        protocols, ciphers = NGINX_PROFILES[host.profile]
        servers.append(f"""
    server {{
        listen {host.ip}:{host.port} ssl;
        server_name {host.name};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols {protocols};
        ssl_ciphers '{ciphers}';
        ssl_prefer_server_ciphers on;
        location / {{ return 200 "{host.profile}\\n"; }}
    }}""")
    config = root / "nginx.conf"
    config.write_text(f"""\
# Generated by bench/bench_sweep.py
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile 16384;
{user}
pid {root / "nginx.pid"};
error_log {root / "error.log"} error;

events {{
    worker_connections 4096;
    multi_accept on;
}}

http {{
    access_log off;
{temp_paths}
    default_type text/plain;
    ssl_session_cache off;
    ssl_session_tickets off;
{"".join(servers)}
}}
""")
    return config


@contextlib.contextmanager
def nginx_fleet(
    binary: str,
    root: Path,
    hosts: Sequence[Host],
    certs: dict[str, tuple[Path, Path]],
    workers: int,
) -> Iterator[Daemon]:
    root.mkdir(parents=True, exist_ok=True)
    config = write_nginx(root, hosts, certs, workers)
    command = [binary, "-p", f"{root}/", "-c", str(config), "-e", str(root / "error.log")]
    daemon = Daemon("nginx", command, root / "console.log")
    try:
        daemon.start()
        wait_listening(daemon, {(h.ip, h.port) for h in hosts})
        first = hosts[0]
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with (
            socket.create_connection((first.ip, first.port), timeout=10) as sock,
            context.wrap_socket(sock, server_hostname=first.name),
        ):
            pass
        yield daemon
    finally:
        daemon.stop()


# Internal services a running Postfix needs (as tests/integration/daemons/postfix.py);
# chroot off. Mail never leaves: every transport is the error transport.
_POSTFIX_INTERNAL = """\
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def write_postfix(root: Path, hosts: Sequence[Host], certs: dict[str, tuple[Path, Path]]) -> Path:
    """main.cf and master.cf: one smtpd listener per MX host, each with its own
    certificate and profile (``-o`` overrides)."""
    config_dir, queue_dir, data_dir = root / "etc", root / "queue", root / "data"
    for directory in (config_dir, queue_dir, data_dir):
        directory.mkdir(parents=True, exist_ok=True)
    postfix_user = pwd.getpwnam("postfix")
    os.chown(data_dir, postfix_user.pw_uid, postfix_user.pw_gid)
    (config_dir / "main.cf").write_text(f"""\
# Generated by bench/bench_sweep.py
compatibility_level = 3.6
queue_directory = {queue_dir}
data_directory = {data_dir}
mail_owner = postfix
setgid_group = postdrop
maillog_file = {root / "postfix.log"}
maillog_file_prefixes = {root}
syslog_name = postfix-bench
myhostname = mail.{PROVIDER}
mydomain = {PROVIDER}
myorigin = $myhostname
mydestination =
mynetworks = 127.0.0.0/8
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
# Listeners bind explicit 127.x addresses in master.cf, which needs "all" here.
inet_interfaces = all
inet_protocols = ipv4
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
default_transport = error:outbound mail is disabled in the benchmark
relay_transport = error:outbound mail is disabled in the benchmark
biff = no
smtpd_banner = $myhostname ESMTP tlsfleet-bench
smtpd_tls_security_level = may
smtpd_tls_loglevel = 0
smtpd_tls_ciphers = medium
smtpd_tls_mandatory_ciphers = medium
smtpd_sasl_auth_enable = no
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
""")
    listeners = []
    for host in hosts:
        cert, key = certs[host.name]
        protocols, ciphers, preempt = POSTFIX_PROFILES[host.profile]
        listeners.append(
            f"{host.ip}:{host.port} inet n - n - - smtpd\n"
            f"  -o syslog_name=postfix-bench/{host.name.split('.')[0]}\n"
            f"  -o smtpd_tls_chain_files={key},{cert}\n"
            f"  -o smtpd_tls_protocols={protocols}\n"
            f"  -o smtpd_tls_mandatory_protocols={protocols}\n"
            f"  -o tls_medium_cipherlist={ciphers}\n"
            f"  -o tls_preempt_cipherlist={preempt}\n"
        )
    (config_dir / "master.cf").write_text(
        "# Generated by bench/bench_sweep.py\n" + "".join(listeners) + _POSTFIX_INTERNAL
    )
    return config_dir


@contextlib.contextmanager
def postfix_fleet(
    root: Path, hosts: Sequence[Host], certs: dict[str, tuple[Path, Path]]
) -> Iterator[Daemon]:
    """A private Postfix master with every MX host's listener; stopped on exit."""
    for binary in (POSTFIX, POSTFIX_MASTER):
        if not os.access(binary, os.X_OK):
            raise SystemExit(f"{binary} not found: run .ci/install-daemons.sh, or use --mail nginx")
    if os.geteuid() != 0:
        raise SystemExit("Postfix needs root: run as root, or use --mail nginx")
    root.mkdir(parents=True, exist_ok=True)
    config = write_postfix(root, hosts, certs)
    check = subprocess.run(
        [POSTFIX, "-c", str(config), "check"], capture_output=True, text=True, check=False
    )
    if check.returncode != 0:
        raise SystemExit(f"postfix check failed:\n{check.stdout}{check.stderr}")
    daemon = Daemon("postfix", [POSTFIX_MASTER, "-c", str(config), "-s"], root / "console.log")
    try:
        daemon.start()
        wait_listening(daemon, {(h.ip, h.port) for h in hosts})
        # One greeting proves that smtpd starts with this configuration.
        with socket.create_connection((hosts[0].ip, hosts[0].port), timeout=20) as sock:
            greeting = sock.recv(512)
        if not greeting.startswith(b"220"):
            raise SystemExit(f"postfix greeted with {greeting!r}:\n{daemon.logs()}")
        yield daemon
    finally:
        daemon.stop()
        log = root / "postfix.log"
        if log.exists():  # one log per run (with --keep)
            log.rename(root / f"postfix-{int(time.time() * 1000)}.log")


# -- PostgreSQL and Redis ---------------------------------------------------------------------


def pg_admin_url(configured: str | None) -> str:
    candidates = (configured,) if configured else PG_CANDIDATES
    for candidate in candidates:
        try:
            with psycopg.connect(sync_url(candidate), connect_timeout=3) as connection:
                connection.execute("SELECT 1")
        except psycopg.Error:
            continue
        return candidate
    raise SystemExit(f"no PostgreSQL answers at {', '.join(candidates)} (--pg-admin-url)")


@contextlib.contextmanager
def bench_database(admin_url: str) -> Iterator[str]:
    """A database of our own (``tlsfleet_bench_…``), dropped at the end; its URL."""
    name = f"tlsfleet_bench_{uuid.uuid4().hex[:12]}"
    admin = sync_url(admin_url)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield async_url(make_url(admin_url).set(database=name)).render_as_string(
            hide_password=False
        )
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextlib.contextmanager
def claimed_redis_db(server_url: str) -> Iterator[str]:
    """A Redis database number claimed the way the test suite claims one (a key in
    database 0 that expires), flushed before and after; its URL."""
    base = server_url.rstrip("/")
    claim_id = f"bench-sweep-{uuid.uuid4().hex}"
    control = redis.Redis.from_url(f"{base}/0", socket_connect_timeout=3, decode_responses=True)
    try:
        try:
            control.ping()
        except redis.RedisError as exc:
            raise SystemExit(f"no Redis answers at {server_url} (--redis-url): {exc}") from None
        claimed = next(
            (
                db
                for db in range(1, 16)
                if control.set(REDIS_CLAIM.format(db), claim_id, nx=True, ex=REDIS_CLAIM_TTL)
            ),
            None,
        )
        if claimed is None:
            raise SystemExit(f"no free Redis database on {server_url}")
        url = f"{base}/{claimed}"
        _flush(url)
        try:
            yield url
        finally:
            _flush(url)
            if control.get(REDIS_CLAIM.format(claimed)) == claim_id:
                control.delete(REDIS_CLAIM.format(claimed))
    finally:
        control.close()


def _flush(url: str) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.flushdb()
    finally:
        client.close()


# -- the CLI and the workers -------------------------------------------------------------------


def tlsfleet_command() -> list[str]:
    script = Path(sys.executable).with_name("tlsfleet")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "fleet.cli"]


def cli_env(database_url: str, redis_url: str, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLSFLEET_")}
    env.update(TLSFLEET_DATABASE_URL=database_url, TLSFLEET_REDIS_URL=redis_url, **extra)
    return env


def run_cli(args: Sequence[str], env: dict[str, str]) -> tuple[float, str]:
    """Run a ``tlsfleet`` command; its wall seconds and standard output."""
    started = time.perf_counter()
    done = subprocess.run(
        [*tlsfleet_command(), *args], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(
            f"tlsfleet {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )
    return time.perf_counter() - started, done.stdout


class Worker:
    """One ``tlsfleet worker`` process and its log."""

    def __init__(self, index: int, env: dict[str, str], log: Path) -> None:
        self.index = index
        self.daemon = Daemon(f"worker {index}", [*tlsfleet_command(), "worker"], log, env=env)
        self.process = self.daemon.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.daemon.log.read_text(errors="replace")

    def ready(self) -> bool:
        return "worker ready" in self.log_text()

    def stop(self) -> None:
        self.daemon.stop(timeout=30)


@contextlib.contextmanager
def workers(count: int, env: dict[str, str], workdir: Path, label: str) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        for n in range(count):
            log = workdir / f"{label}-worker{n}.log"
            with log.open("wb"):
                pass
            started.append(Worker(n, env, log))
        deadline = time.monotonic() + START_BOUND
        while not all(w.ready() for w in started):
            for w in started:
                if w.process.poll() is not None:
                    raise SystemExit(f"worker {w.index} exited:\n{w.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise SystemExit("workers did not get ready in time")
            time.sleep(0.1)
        yield started
    finally:
        for w in started:
            w.stop()


# -- one sweep --------------------------------------------------------------------------------


@dataclass
class WorkerFigures:
    index: int
    pid: int
    rss_ready_mb: float
    rss_peak_mb: float
    rss_max_sampled_mb: float
    cpu_sweep_s: float
    cpu_total_s: float
    jobs: dict[str, JobTimes]
    retries: int
    failures: list[str]
    #: Jobs this worker's reconciler freed from workers it took for dead.
    released: int


@dataclass
class RunFigures:
    label: str
    workers: int
    sweep_id: int
    status: str
    wall_s: float
    discovery_s: float
    scans_s: float
    close_s: float
    db_elapsed_s: float | None
    endpoints: int
    domains: int
    rows: dict[str, int]
    rows_total: int
    certificates: int
    endpoints_per_s: float
    scan_endpoints_per_s: float
    rows_per_s: float
    connections_per_endpoint: float
    #: Per service: endpoints, mean scan duration (ms, from the documents), connections.
    per_service: dict[str, dict[str, float]]
    workers_figures: list[WorkerFigures]
    servers_cpu_s: dict[str, float]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    #: (seconds, status, results stored, each worker's RSS in MB), every second.
    timeline: list[tuple[float, str, int, list[int]]] = field(default_factory=list)
    #: The slowest endpoint scans (from the documents).
    slowest: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class Observed:
    sweep_id: int = 0
    status: str = ""
    t_scanning: float | None = None
    t_all_in: float | None = None
    t_final: float | None = None
    wall_s: float = 0.0
    rss_max: dict[int, int] = field(default_factory=dict)
    timeline: list[tuple[float, str, int, list[int]]] = field(default_factory=list)
    dead_worker: str | None = None


async def drive_sweep(
    database_url: str,
    redis_url: str,
    options: SweepOptions,
    pool: Sequence[Worker],
    bound: float,
) -> Observed:
    """Start a sweep of the whole fleet and follow it until it is final (or ``bound``)."""
    engine = create_engine(database_url, pool_size=2)
    sessions = create_sessionmaker(engine)
    job_pool = await create_job_pool(arq_redis_settings(redis_url))
    seen = Observed()
    try:
        t0 = time.monotonic()
        seen.sweep_id = await start_sweep(
            sessions, job_pool, kind="nightly", scope={"all": True}, options=options
        )
        last_logged = -1.0
        while True:
            async with sessions() as session:
                progress = await sweep_progress(session, seen.sweep_id)
            now = time.monotonic() - t0
            assert progress is not None
            rss_now = []
            for w in pool:
                rss = status_kib(w.pid, "VmRSS") or 0
                rss_now.append(rss // 1024)
                seen.rss_max[w.pid] = max(seen.rss_max.get(w.pid, 0), rss)
                if w.process.poll() is not None and seen.dead_worker is None:
                    seen.dead_worker = f"worker {w.index} exited ({w.process.returncode})"
            if progress.status != seen.status or now - last_logged >= 1.0:
                seen.timeline.append((round(now, 2), progress.status, progress.done, rss_now))
                last_logged = now
            seen.status = progress.status
            if progress.status in ("scanning", "closing", *FINAL_STATUSES):
                seen.t_scanning = seen.t_scanning if seen.t_scanning is not None else now
            if progress.total and progress.done >= progress.total and seen.t_all_in is None:
                seen.t_all_in = now
            if progress.status in FINAL_STATUSES:
                seen.t_final = now
                seen.wall_s = now
                break
            if now > bound or seen.dead_worker:
                seen.wall_s = now
                break
            await asyncio.sleep(POLL_INTERVAL)
    finally:
        await job_pool.aclose()
        await engine.dispose()
    return seen


_JOB_DONE = re.compile(r"^\S+:\s+([\d.]+)s ← \S+:(sweep_\w+) ●", re.MULTILINE)


@dataclass
class JobTimes:
    """How many jobs of one kind a worker finished, and their run times (from its log)."""

    count: int = 0
    total_s: float = 0.0
    max_s: float = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total_s += seconds
        self.max_s = max(self.max_s, seconds)


@dataclass
class LogFacts:
    """What a worker's log says: finished jobs, retries, failures, freed jobs."""

    jobs: dict[str, JobTimes]
    retries: int
    failures: list[str]
    released: int


def worker_log_facts(text: str) -> LogFacts:
    """Finished jobs per function (arq's ``← … ●`` lines), retries (``↻``), failed jobs
    (``!``, with their lines), and jobs of "dead" workers the reconciler freed."""
    jobs: dict[str, JobTimes] = {}
    for match in _JOB_DONE.finditer(text):
        jobs.setdefault(match.group(2), JobTimes()).add(float(match.group(1)))
    lines = text.splitlines()
    return LogFacts(
        jobs=jobs,
        retries=sum(" ↻ " in line for line in lines),
        failures=[line.strip() for line in lines if re.search(r"\ds ! ", line)],
        released=sum(int(n) for n in re.findall(r"reconciled: .*'released': (\d+)", text)),
    )


def _sweep_counts(database_url: str, sweep_id: int) -> dict[str, Any]:
    with psycopg.connect(sync_url(database_url)) as db:

        def one(query: str) -> Any:
            row = db.execute(query, (sweep_id,)).fetchone()
            assert row is not None
            return row[0]

        rows = {
            "scan_results": one("SELECT count(*) FROM scan_results WHERE sweep_id = %s"),
            "domain_endpoints": one("SELECT count(*) FROM domain_endpoints WHERE sweep_id = %s"),
            "sweep_domains": one("SELECT count(*) FROM sweep_domains WHERE sweep_id = %s"),
        }
        certificates = one("SELECT count(*) FROM scan_certificates WHERE sweep_id = %s")
        further_names = one(
            "SELECT count(DISTINCT (endpoint_id, host)) - count(DISTINCT endpoint_id) "
            "FROM domain_endpoints WHERE sweep_id = %s"
        )
        null_certificates = one(
            "SELECT count(*) FROM scan_certificates WHERE sweep_id = %s AND certificate IS NULL"
        )
        duplicates = db.execute(
            "SELECT endpoint_id, count(*) FROM scan_results WHERE sweep_id = %s "
            "GROUP BY endpoint_id HAVING count(*) > 1",
            (sweep_id,),
        ).fetchall()
        results = {
            (ip, port, service): document
            for ip, port, service, document in db.execute(
                "SELECT e.ip, e.port, e.service, r.document FROM scan_results r "
                "JOIN endpoints e ON e.id = r.endpoint_id WHERE r.sweep_id = %s",
                (sweep_id,),
            )
        }
        planned = {
            (ip, port, service)
            for ip, port, service in db.execute(
                "SELECT DISTINCT e.ip, e.port, e.service FROM domain_endpoints de "
                "JOIN endpoints e ON e.id = de.endpoint_id WHERE de.sweep_id = %s",
                (sweep_id,),
            )
        }
        statuses: dict[str, str] = dict(
            db.execute(
                "SELECT d.name, sd.status FROM sweep_domains sd "
                "JOIN domains d ON d.id = sd.domain_id WHERE sd.sweep_id = %s",
                (sweep_id,),
            ).fetchall()
        )
        error_samples = db.execute(
            "SELECT d.name, sd.discovery -> 'errors' -> 0 ->> 'message' FROM sweep_domains sd "
            "JOIN domains d ON d.id = sd.domain_id WHERE sd.sweep_id = %s AND sd.status = 'error' "
            "ORDER BY d.name LIMIT 3",
            (sweep_id,),
        ).fetchall()
        uses = {
            Use(name, (ip, port, service), host, how)
            for name, ip, port, service, host, how in db.execute(
                "SELECT d.name, e.ip, e.port, e.service, de.host, de.how FROM domain_endpoints de "
                "JOIN domains d ON d.id = de.domain_id JOIN endpoints e ON e.id = de.endpoint_id "
                "WHERE de.sweep_id = %s",
                (sweep_id,),
            )
        }
        sweep = db.execute(
            "SELECT status, total_endpoints, extract(epoch FROM finished_at - created_at) "
            "FROM sweeps WHERE id = %s",
            (sweep_id,),
        ).fetchone()
        assert sweep is not None
    return {
        "rows": rows,
        "certificates": certificates,
        "further_names": further_names,
        "null_certificates": null_certificates,
        "duplicates": duplicates,
        "results": results,
        "planned": planned,
        "statuses": statuses,
        "uses": uses,
        "error_samples": error_samples,
        "status": sweep[0],
        "total_endpoints": sweep[1],
        "db_elapsed_s": float(sweep[2]) if sweep[2] is not None else None,
    }


def check_sweep(found: dict[str, Any], fleet: Fleet, full: bool) -> list[str]:
    """Everything that must hold for a sweep's stored state; a problem per line."""
    problems: list[str] = []
    expected = fleet.endpoints()
    results: dict[Key, dict[str, Any]] = found["results"]
    if found["status"] != "done":
        problems.append(f"sweep status {found['status']}, not done")
    if found["duplicates"]:
        problems.append(f"endpoints with more than one result: {found['duplicates'][:5]}")
    if set(results) != set(expected):
        missing, extra = set(expected) - set(results), set(results) - set(expected)
        problems.append(
            f"results for {len(results)} endpoints, expected {len(expected)}: "
            f"missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]}"
        )
    if found["planned"] != set(expected):
        problems.append(f"the plan has {len(found['planned'])} endpoints, expected {len(expected)}")
    if found["total_endpoints"] != len(expected):
        problems.append(f"total_endpoints {found['total_endpoints']}, expected {len(expected)}")
    statuses: dict[str, str] = found["statuses"]
    if len(statuses) != len(fleet.domains):
        problems.append(f"{len(statuses)} sweep_domains rows for {len(fleet.domains)} domains")
    wrong = [
        f"{name}: {statuses.get(name)} (expected {want})"
        for name, want in fleet.statuses.items()
        if statuses.get(name) != want
    ]
    if wrong:
        problems.append(f"{len(wrong)} discoveries wrong, e.g. {wrong[:3]}")
        for name, message in found["error_samples"]:
            problems.append(f"  {name}: {message}")
    if found["uses"] != fleet.uses:
        missing_uses, extra_uses = fleet.uses - found["uses"], found["uses"] - fleet.uses
        problems.append(
            f"domain_endpoints: {len(found['uses'])} rows, expected {len(fleet.uses)}; "
            f"missing {sorted(missing_uses, key=str)[:2]}, unexpected "
            f"{sorted(extra_uses, key=str)[:2]}"
        )
    for key, document in sorted(results.items()):
        host = expected.get(key)
        if host is None:
            continue
        if document.get("status") != "ok":
            problems.append(f"{host.name} {key}: {document.get('status')} {document.get('error')}")
            continue
        versions = {v for v in PROTOCOLS if (document.get("protocols") or {}).get(v)}
        if versions != EXPECTED_VERSIONS[host.profile]:
            problems.append(
                f"{host.name} {key}: versions {sorted(versions)}, the server is configured "
                f"for {sorted(EXPECTED_VERSIONS[host.profile])}"
            )
        if host.service == "smtp" and not (document.get("starttls") or {}).get("offered"):
            problems.append(f"{host.name} {key}: STARTTLS not offered")
        for error in document.get("partial_errors") or ():
            problems.append(
                f"{host.name} {key}: partial error {error.get('kind')} in {error.get('phase')}: "
                f"{str(error.get('message'))[:200]}"
            )
    if full and found["certificates"] != found["further_names"]:
        problems.append(
            f"{found['certificates']} certificate rows, expected {found['further_names']} "
            "(one per further SNI name the sweep's domain_endpoints lead to)"
        )
    if full and found["null_certificates"]:
        problems.append(f"{found['null_certificates']} certificate fetches failed")
    return problems


def _comparable(document: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": document.get("status"),
        "error": (document.get("error") or {}).get("kind"),
        "protocols": document.get("protocols"),
        "cipher_suites": document.get("cipher_suites"),
        "server_preference": document.get("server_preference"),
        "starttls": (document.get("starttls") or {}).get("offered"),
    }


def compare_runs(a: dict[Key, dict[str, Any]], b: dict[Key, dict[str, Any]]) -> list[str]:
    problems = []
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            problems.append(f"{key}: a result in one sweep only")
            continue
        left, right = _comparable(a[key]), _comparable(b[key])
        if left != right:
            fields_ = [name for name in left if left[name] != right[name]]
            problems.append(f"{key}: sweeps disagree on {', '.join(fields_)}")
    return problems


def run_sweep(
    label: str,
    count: int,
    *,
    fleet: Fleet,
    database_url: str,
    redis_url: str,
    env: dict[str, str],
    options: SweepOptions,
    servers: dict[str, Daemon],
    workdir: Path,
    bound: float,
    full: bool,
) -> tuple[RunFigures, dict[Key, dict[str, Any]]]:
    with workers(count, env, workdir, label) as pool:
        rss_ready = {w.pid: status_kib(w.pid, "VmRSS") or 0 for w in pool}
        cpu0 = {w.pid: cpu_seconds(w.pid) for w in pool}
        servers_cpu0 = {name: d.cpu_seconds() for name, d in servers.items()}
        load_before = os.getloadavg()
        console.print(
            f"[bold]{label}[/]: sweep on {count} worker(s) (pids {[w.pid for w in pool]})"
        )
        seen = asyncio.run(drive_sweep(database_url, redis_url, options, pool, bound))
        load_after = os.getloadavg()
        servers_cpu = {name: d.cpu_seconds() - servers_cpu0[name] for name, d in servers.items()}
        figures = []
        for w in pool:
            facts = worker_log_facts(w.log_text())
            figures.append(
                WorkerFigures(
                    index=w.index,
                    pid=w.pid,
                    rss_ready_mb=rss_ready[w.pid] / 1024,
                    rss_peak_mb=(status_kib(w.pid, "VmHWM") or 0) / 1024,
                    rss_max_sampled_mb=seen.rss_max.get(w.pid, 0) / 1024,
                    cpu_sweep_s=cpu_seconds(w.pid) - cpu0[w.pid],
                    cpu_total_s=cpu_seconds(w.pid),
                    jobs=facts.jobs,
                    retries=facts.retries,
                    failures=facts.failures,
                    released=facts.released,
                )
            )
    found = _sweep_counts(database_url, seen.sweep_id)
    problems = check_sweep(found, fleet, full)
    if seen.dead_worker:
        problems.insert(0, seen.dead_worker)
    if seen.t_final is None:
        problems.insert(0, f"the sweep did not finish within {bound:g} s (status {seen.status})")
    for figure in figures:
        for line in figure.failures[:5]:
            problems.append(f"worker {figure.index}: failed job: {line[:300]}")
    rows_total = sum(found["rows"].values())
    wall = seen.wall_s
    t_scanning = seen.t_scanning if seen.t_scanning is not None else wall
    t_all_in = seen.t_all_in if seen.t_all_in is not None else wall
    results: dict[Key, dict[str, Any]] = found["results"]
    connections = sum(int(d.get("connections") or 0) for d in results.values())
    per_service: dict[str, dict[str, float]] = {}
    for (_, _, service), document in results.items():
        entry = per_service.setdefault(
            service, {"endpoints": 0, "mean_ms": 0.0, "max_ms": 0.0, "connections": 0.0}
        )
        duration = float(document.get("duration_ms") or 0)
        entry["endpoints"] += 1
        entry["mean_ms"] += duration
        entry["max_ms"] = max(entry["max_ms"], duration)
        entry["connections"] += float(document.get("connections") or 0)
    for entry in per_service.values():
        entry["mean_ms"] /= entry["endpoints"]
        entry["connections"] /= entry["endpoints"]
    expected = fleet.endpoints()
    slowest = [
        {
            "endpoint": list(key),
            "host": expected[key].name if key in expected else None,
            "profile": expected[key].profile if key in expected else None,
            "duration_ms": document.get("duration_ms"),
            "connections": document.get("connections"),
            "status": document.get("status"),
            "partial_errors": document.get("partial_errors"),
        }
        for key, document in sorted(
            results.items(), key=lambda item: -int(item[1].get("duration_ms") or 0)
        )[:5]
    ]
    endpoints = len(results)
    run = RunFigures(
        label=label,
        workers=count,
        sweep_id=seen.sweep_id,
        status=found["status"],
        wall_s=wall,
        discovery_s=t_scanning,
        scans_s=t_all_in - t_scanning,
        close_s=wall - t_all_in,
        db_elapsed_s=found["db_elapsed_s"],
        endpoints=endpoints,
        domains=len(found["statuses"]),
        rows=found["rows"],
        rows_total=rows_total,
        certificates=found["certificates"],
        endpoints_per_s=endpoints / wall if wall else 0.0,
        scan_endpoints_per_s=endpoints / (t_all_in - t_scanning) if t_all_in > t_scanning else 0.0,
        rows_per_s=rows_total / wall if wall else 0.0,
        connections_per_endpoint=connections / endpoints if endpoints else 0.0,
        per_service=per_service,
        slowest=slowest,
        workers_figures=figures,
        servers_cpu_s=servers_cpu,
        load_before=load_before,
        load_after=load_after,
        timeline=seen.timeline,
        problems=problems,
    )
    console.print(
        f"  {label}: {run.status} in {wall:.1f} s (discovery {run.discovery_s:.1f} s, scans "
        f"{run.scans_s:.1f} s, close {run.close_s:.1f} s); {endpoints} endpoints, "
        f"{rows_total:,} rows; peak RSS "
        + ", ".join(f"{w.rss_peak_mb:.0f} MB" for w in figures)
        + f"; load {load_before[0]:.2f} → {load_after[0]:.2f}"
    )
    return run, results


# -- reporting ----------------------------------------------------------------------------------


def _version_of(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(admin_url: str, redis_url: str, nginx: str) -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().split()
    ram_gib = int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024 / 1024
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "",
    )
    with psycopg.connect(sync_url(admin_url)) as db:
        row = db.execute("SHOW server_version").fetchone()
        pg_version = row[0] if row else None
    client = redis.Redis.from_url(redis_url)
    try:
        server_info: dict[str, Any] = client.info("server")  # type: ignore[assignment]
        redis_version = server_info.get("redis_version")
    finally:
        client.close()
    nginx_version = subprocess.run(
        [nginx, "-v"], capture_output=True, text=True, check=False
    ).stderr.strip()
    postfix_version = None
    if os.access(POSTCONF, os.X_OK):
        postfix_version = subprocess.run(
            [POSTCONF, "-d", "-h", "mail_version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model,
        "ram_gib": round(ram_gib, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "postgresql": pg_version,
        "redis": redis_version,
        "nginx": nginx_version.removeprefix("nginx version: "),
        "postfix": postfix_version,
        "uvloop": _version_of("uvloop"),
        "arq": _version_of("arq"),
        "sqlalchemy": _version_of("sqlalchemy"),
        "psycopg": _version_of("psycopg"),
    }


def render(runs: Sequence[RunFigures], info: dict[str, Any], setup: dict[str, Any]) -> None:
    table = Table(title=f"Sweep of {setup['domains']:,} domains ({setup['mode']})")
    columns = (
        "run",
        "wall s",
        "discovery s",
        "scans s",
        "close s",
        "endpoints",
        "endpoints/s",
        "rows",
        "rows/s",
        "peak RSS MB (per worker)",
        "CPU s (per worker)",
        "jobs (per worker)",
        "servers CPU s",
        "load 1 min",
        "right",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("run", "right") else "right")
    for run in runs:
        table.add_row(
            run.label,
            f"{run.wall_s:.1f}",
            f"{run.discovery_s:.1f}",
            f"{run.scans_s:.1f}",
            f"{run.close_s:.1f}",
            str(run.endpoints),
            f"{run.endpoints_per_s:.1f}",
            f"{run.rows_total:,}",
            f"{run.rows_per_s:,.0f}",
            " / ".join(f"{w.rss_peak_mb:.0f}" for w in run.workers_figures),
            " / ".join(f"{w.cpu_sweep_s:.1f}" for w in run.workers_figures),
            " / ".join(
                str(w.jobs.get("sweep_scan_endpoint", JobTimes()).count)
                for w in run.workers_figures
            ),
            " ".join(f"{k} {v:.1f}" for k, v in run.servers_cpu_s.items()),
            f"{run.load_before[0]:.1f}→{run.load_after[0]:.1f}",
            "yes" if not run.problems else f"NO ({len(run.problems)})",
        )
    console.print(table)
    console.print(
        f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram_gib']} GiB, Python "
        f"{info['python']}, PostgreSQL {info['postgresql']}, Redis {info['redis']}, nginx "
        f"{info['nginx']}, Postfix {info['postfix']}, uvloop {info['uvloop']}"
    )
    console.print(
        f"setup: migrate {setup['migrate_s']:.1f} s, inventory import of "
        f"{setup['domains']:,} domains {setup['import_s']:.1f} s; {setup['endpoints']} "
        f"endpoints ({setup['mail_hosts']} MX hosts: {setup['mail']}, {setup['web_hosts']} "
        f"web hosts: nginx); DNS zones loaded in {setup['dns_start_s']:.1f} s"
    )
    for run in runs:
        console.print(
            f"{run.label}: {run.connections_per_endpoint:.1f} connections per endpoint; rows "
            f"{', '.join(f'{k} {v:,}' for k, v in run.rows.items())}"
            + (f", scan_certificates {run.certificates:,}" if run.certificates else "")
        )
        for service, entry in sorted(run.per_service.items()):
            console.print(
                f"  {service}: {entry['endpoints']:.0f} endpoints, scan {entry['mean_ms']:.0f} ms "
                f"mean, {entry['max_ms']:.0f} ms longest, {entry['connections']:.1f} connections"
            )
        for w in run.workers_figures:
            console.print(
                f"  worker {w.index}: RSS {w.rss_ready_mb:.0f} MB when ready, peak "
                f"{w.rss_peak_mb:.0f} MB; CPU {w.cpu_sweep_s:.1f} s in the sweep "
                f"({w.cpu_total_s:.1f} s with start-up); retries {w.retries}, failed jobs "
                f"{len(w.failures)}, jobs freed from workers taken for dead {w.released}"
            )
            for name, times in w.jobs.items():
                console.print(
                    f"    {name}: {times.count} jobs, {times.total_s:.2f} s in all, "
                    f"mean {times.total_s / times.count:.2f} s, longest {times.max_s:.2f} s"
                )
        for problem in run.problems[:30]:
            console.print(f"[red]WRONG[/] {run.label}: {problem}")


# -- main ---------------------------------------------------------------------------------------


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="A sweep of N domains over local endpoints on real tlsfleet workers."
    )
    parser.add_argument("--domains", type=int, default=10_000, help="customer domains (10,000)")
    parser.add_argument(
        "--endpoints", type=int, default=300, help="endpoints: half MX hosts, half web (300)"
    )
    parser.add_argument(
        "--mail",
        choices=["postfix", "nginx"],
        default="postfix",
        help="what serves the MX hosts: Postfix SMTP with STARTTLS, or nginx HTTPS",
    )
    parser.add_argument("--full", action="store_true", help="full sweeps (certificates too)")
    parser.add_argument(
        "--workers", default="1,2", help="worker counts, one fresh sweep each (1,2)"
    )
    parser.add_argument("--max-jobs", type=int, help="TLSFLEET_WORKER_MAX_JOBS (default 20)")
    parser.add_argument("--per-ip", type=int, help="TLSFLEET_PER_IP_LIMIT (default 4)")
    parser.add_argument("--global-limit", type=int, help="TLSFLEET_GLOBAL_LIMIT (default 200)")
    parser.add_argument("--dns-servers", type=int, default=1, help="DNS server processes (1)")
    parser.add_argument("--nginx-workers", type=int, default=1, help="nginx worker_processes (1)")
    parser.add_argument(
        "--bound", type=float, default=3600.0, help="give up on a sweep after this many seconds"
    )
    parser.add_argument("--pg-admin-url", help="PostgreSQL URL of a role that may CREATE DATABASE")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379", help="Redis server")
    parser.add_argument("--json", type=Path, help="write all figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = parser.parse_args(argv)
    if args.domains < 1 or args.endpoints < 2:
        parser.error("need at least 1 domain and 2 endpoints")
    try:
        args.worker_counts = [int(n) for n in args.workers.split(",")]
    except ValueError:
        parser.error("--workers: comma-separated numbers")
    if not args.worker_counts or min(args.worker_counts) < 1:
        parser.error("--workers: each count at least 1")
    return args


def _on_sigterm(signum: int, frame: types.FrameType | None) -> None:
    del frame
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tlsfleet-bench-sweep-"))
    path.chmod(0o755)  # nginx and Postfix workers run unprivileged
    try:
        yield path
    finally:
        if keep:
            console.print(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    nginx_binary = find_nginx()
    admin_url = pg_admin_url(args.pg_admin_url)
    mail_hosts = args.endpoints // 2
    web_hosts = args.endpoints - mail_hosts
    mail_service = "smtp" if args.mail == "postfix" else "https"
    runs: list[RunFigures] = []
    all_results: list[dict[Key, dict[str, Any]]] = []
    agreement: list[str] = []
    setup: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(_workdir(args.keep))
        mail_port = free_port([address(MAIL_NET, i) for i in range(mail_hosts)])
        web_port = free_port([address(WEB_NET, j) for j in range(web_hosts)])
        fleet = plan_fleet(args.domains, mail_hosts, web_hosts, (mail_service, mail_port), web_port)
        ca = DemoCA(workdir / "pki")
        certs = {}
        for host in fleet.hosts():
            issued = ca.issue(host.name)
            certs[host.name] = (issued.cert_file, issued.key_file)
        database_url = stack.enter_context(bench_database(admin_url))
        redis_url = stack.enter_context(claimed_redis_db(args.redis_url))
        info = machine_info(admin_url, redis_url, nginx_binary)
        started = time.perf_counter()
        dns, nameserver = stack.enter_context(dns_servers(fleet.zones, workdir, args.dns_servers))
        dns_start_s = time.perf_counter() - started
        https_hosts = fleet.web if args.mail == "postfix" else fleet.hosts()
        nginx = stack.enter_context(
            nginx_fleet(nginx_binary, workdir / "nginx", https_hosts, certs, args.nginx_workers)
        )
        console.print(
            f"{args.domains:,} domains, {len(fleet.endpoints())} endpoints in use "
            f"({mail_hosts} MX hosts on {args.mail}, {web_hosts} web hosts on nginx), "
            f"DNS at {nameserver} (zones loaded in {dns_start_s:.1f} s)"
        )
        extra = {
            "TLSFLEET_RESOLVERS": json.dumps([nameserver]),
            "TLSFLEET_ALLOW_PRIVATE_TARGETS": "true",
            "TLSFLEET_CA_FILE": str(ca.ca_file),
            "TLSFLEET_DATA_DIR": str(workdir / "data"),
        }
        for option, variable in (
            ("max_jobs", "TLSFLEET_WORKER_MAX_JOBS"),
            ("per_ip", "TLSFLEET_PER_IP_LIMIT"),
            ("global_limit", "TLSFLEET_GLOBAL_LIMIT"),
        ):
            if getattr(args, option) is not None:
                extra[variable] = str(getattr(args, option))
        env = cli_env(database_url, redis_url, extra)
        migrate_s, _ = run_cli(["migrate"], env)
        inventory = workdir / "inventory.csv"
        write_inventory(fleet, inventory)
        import_s, out = run_cli(["inventory", "import", str(inventory), "--json"], env)
        report = json.loads(out)
        if report["created"] != args.domains or report["errors"]:
            raise SystemExit(f"inventory import: {report}")
        console.print(
            f"migrated in {migrate_s:.1f} s; {args.domains:,} domains imported in {import_s:.1f} s"
        )
        profile = PortProfile(
            mx=(f"{mail_service}:{mail_port}",), srv=False, web=(f"https:{web_port}",)
        )
        options = SweepOptions(quick=not args.full, profile=profile)
        setup = {
            "domains": args.domains,
            "endpoints": len(fleet.endpoints()),
            "mail_hosts": mail_hosts,
            "web_hosts": web_hosts,
            "mail": args.mail,
            "mode": "full" if args.full else "quick",
            "sweep_options": options.to_dict(),
            "worker_env": {k: v for k, v in extra.items() if k != "TLSFLEET_DATA_DIR"},
            "migrate_s": migrate_s,
            "import_s": import_s,
            "dns_start_s": dns_start_s,
            "expected_uses": len(fleet.uses),
            "expected_statuses": dict(Counter(fleet.statuses.values())),
        }
        for n, count in enumerate(args.worker_counts):
            label = f"{count} worker{'s' if count > 1 else ''}"
            with contextlib.ExitStack() as per_run:
                servers: dict[str, Daemon] = {f"dns{i}": d for i, d in enumerate(dns)}
                servers["nginx"] = nginx
                if args.mail == "postfix":
                    # A fresh Postfix per run: every run starts with no smtpd process.
                    servers["postfix"] = per_run.enter_context(
                        postfix_fleet(workdir / "postfix", fleet.mail, certs)
                    )
                run, results = run_sweep(
                    label if label not in (r.label for r in runs) else f"{label} (#{n + 1})",
                    count,
                    fleet=fleet,
                    database_url=database_url,
                    redis_url=redis_url,
                    env=env,
                    options=options,
                    servers=servers,
                    workdir=workdir,
                    bound=args.bound,
                    full=args.full,
                )
            runs.append(run)
            all_results.append(results)
        for n, results in enumerate(all_results[1:], start=1):
            agreement += [
                f"run {n + 1} vs run 1: {p}" for p in compare_runs(all_results[0], results)
            ]
    render(runs, info, setup)
    for problem in agreement[:30]:
        console.print(f"[red]DISAGREE[/] {problem}")
    wrong = sum(len(r.problems) for r in runs) + len(agreement)
    if len(runs) > 1 and not agreement:
        console.print(
            f"results agree across the {len(runs)} sweeps ({runs[0].endpoints} endpoints)"
        )
    if args.json:
        document = {
            "command": " ".join([Path(sys.executable).name, "bench/bench_sweep.py", *sys.argv[1:]]),
            "machine": info,
            "setup": setup,
            "runs": [asdict(r) for r in runs],
            "agreement_problems": agreement,
            "wrong": wrong,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
        console.print(f"figures written to {args.json}")
    if wrong:
        console.print(f"[red bold]{wrong} problems with the results: exit 1[/]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
