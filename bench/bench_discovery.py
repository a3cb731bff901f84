"""Discovery benchmark: N generated domains against the local authoritative DNS server.

The domains share a few hundred MX hosts, as a hosting provider's customers do, and mix
every case discovery handles (per 20 domains: 13 with two shared MX, web on one of 20
shared front ends and SRV records; 2 implicit MX; 1 null MX; 1 dangling MX; 1 CNAME MX;
1 AAAA-only implicit MX; 1 that does not exist). The DNS server
(``tests/integration/dnsserver.py``) runs in ``--servers`` separate processes sharing one
UDP/TCP port (``SO_REUSEPORT``), so that the scanner's side is what is measured.
Discovery and the endpoint plan run in a child process of their own, so that its peak
memory is the discovery's:

* domains per second (wall) and CPU seconds of the discovery, DNS queries sent and
  saved by the cache;
* peak RSS of the child (``ru_maxrss``) and its RSS before discovery started, and with
  ``--tracemalloc`` the peak of Python allocations (slower: a separate figure);
* the endpoint plan: unique endpoints against uses, and the time to build it;
* the DNS servers' CPU seconds, to show whether they were the bottleneck.

Each discovery's status is checked against what the generator wrote; a mismatch makes
the exit status 1. No threshold is asserted: the figures are reported.

    python bench/bench_discovery.py                              # 10,000 domains, 300 MX hosts
    python bench/bench_discovery.py --domains 2000 --uvloop --json /tmp/discovery.json
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from scanner.discovery import PortProfile, discover, plan_endpoints
from scanner.dns import Resolver
from scanner.models import Discovery

ROOT = Path(__file__).resolve().parents[1]
PROVIDER = "hosting.bench"
CUSTOMERS = "customers.bench"

console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)

#: The case each domain number falls into (n % 20) and the status discovery must give.
_CASES: list[tuple[str, str]] = [("shared_mx", "ok")] * 13 + [
    ("implicit_mx", "ok"),
    ("implicit_mx", "ok"),
    ("null_mx", "null_mx"),
    ("dangling_mx", "ok"),
    ("cname_mx", "ok"),
    ("aaaa_only", "ok"),
    ("nxdomain", "nxdomain"),
]


def _case(n: int) -> tuple[str, str]:
    return _CASES[n % len(_CASES)]


def generate(domains: int, mx_hosts: int) -> tuple[dict[str, str], list[str], list[str]]:
    """Zone texts (origin → text), the domain list and each domain's expected status."""
    provider = [
        f"mx{i} A 10.{i // 250}.{i % 250}.1\nmx{i} AAAA fd00::{i:x}:1\n" for i in range(mx_hosts)
    ]
    provider.append("imap A 10.255.0.143\nsmtp A 10.255.0.25\nweb A 10.255.0.80\n")
    provider.append("mail CNAME mx0\n")
    customers: list[str] = []
    names: list[str] = []
    expected: list[str] = []
    for n in range(domains):
        name = f"d{n}"
        case, status = _case(n)
        names.append(f"{name}.{CUSTOMERS}")
        expected.append(status)
        first, second = n % mx_hosts, (n * 7 + 1) % mx_hosts
        if case == "shared_mx":
            customers.append(
                f"{name} MX 10 mx{first}.{PROVIDER}.\n"
                f"{name} MX 20 mx{second}.{PROVIDER}.\n"
                f"{name} A 10.254.0.{n % 20 + 1}\n"  # one of 20 shared web front ends
                f"www.{name} CNAME web.{PROVIDER}.\n"
                f"_imaps._tcp.{name} SRV 0 1 993 imap.{PROVIDER}.\n"
                f"_submission._tcp.{name} SRV 0 1 587 smtp.{PROVIDER}.\n"
                f"_pop3._tcp.{name} SRV 0 0 0 .\n"
            )
        elif case == "implicit_mx":
            customers.append(f"{name} A 10.253.{n // 250 % 250}.{n % 250 + 1}\n")
        elif case == "null_mx":
            customers.append(f"{name} MX 0 .\n{name} A 10.252.0.1\n")
        elif case == "dangling_mx":
            customers.append(
                f"{name} MX 10 gone{n}.{PROVIDER}.\n{name} MX 20 mx{first}.{PROVIDER}.\n"
            )
        elif case == "cname_mx":
            customers.append(f"{name} MX 10 mail.{PROVIDER}.\n")
        elif case == "aaaa_only":
            customers.append(f"{name} AAAA fd01::{n:x}\n")
        # nxdomain: nothing published.
    return {PROVIDER: "".join(provider), CUSTOMERS: "".join(customers)}, names, expected


# -- the child: discovery and the plan, measured ------------------------------------------


@dataclass
class ChildReport:
    domains: int
    wall_s: float
    cpu_s: float
    domains_per_s: float
    rss_before_mb: float
    rss_peak_mb: float
    tracemalloc_peak_mb: float | None
    statuses: dict[str, int]
    mismatches: list[str]
    resolver: dict[str, int]
    plan_s: float
    plan_endpoints: int
    plan_rejected: int
    plan_uses: int
    plan_cert_names: int
    loop: str


def _rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


async def _discover_all(
    domains: Sequence[str], resolver: Resolver, concurrency: int
) -> list[Discovery]:
    """Discover every domain with ``concurrency`` domains in flight, in input order."""
    results: list[Discovery | None] = [None] * len(domains)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(domains)):
        queue.put_nowait(index)

    async def worker() -> None:
        while not queue.empty():
            index = queue.get_nowait()
            results[index] = await discover(domains[index], resolver)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [r for r in results if r is not None]


def child_main(options: dict[str, Any]) -> ChildReport:
    domains: list[str] = options["domains"]
    expected: list[str] = options["expected"]
    loop_name = "asyncio"
    if options["uvloop"]:
        import uvloop

        uvloop.install()
        loop_name = f"uvloop {importlib.metadata.version('uvloop')}"
    if options["tracemalloc"]:
        tracemalloc.start()
    rss_before = _rss_mb()
    resolver = Resolver(
        [options["nameserver"]],
        timeout=options["timeout"],
        lifetime=options["timeout"] * 4,
        retries=2,
        max_concurrency=options["max_queries"],
    )
    cpu0, wall0 = time.process_time(), time.perf_counter()
    discoveries = asyncio.run(_discover_all(domains, resolver, options["concurrency"]))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    plan0 = time.perf_counter()
    plan = plan_endpoints(discoveries, PortProfile(), allow_private=True)
    plan_s = time.perf_counter() - plan0
    keys = list(plan.keys())
    traced_peak = None
    if options["tracemalloc"]:
        traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    mismatches = [
        f"{d.domain}: {d.status} (expected {want}; errors {[e.message for e in d.errors]})"
        for d, want in zip(discoveries, expected, strict=True)
        if d.status != want
    ]
    return ChildReport(
        domains=len(domains),
        wall_s=wall,
        cpu_s=cpu,
        domains_per_s=len(domains) / wall,
        rss_before_mb=rss_before,
        rss_peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        tracemalloc_peak_mb=traced_peak,
        statuses=dict(Counter(d.status for d in discoveries)),
        mismatches=mismatches[:20],
        resolver=resolver.stats.as_dict(),
        plan_s=plan_s,
        plan_endpoints=len(plan.targets),
        plan_rejected=len(plan.rejected),
        plan_uses=sum(len(plan.uses(k)) for k in keys),
        plan_cert_names=sum(len(plan.cert_names(k)) for k in keys),
        loop=loop_name,
    )


# -- the parent: zones, servers, child runs ----------------------------------------------


@dataclass
class ServerSet:
    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    port: int = 0
    startup_s: float = 0.0

    def cpu_s(self) -> float:
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for process in self.processes:
            with open(f"/proc/{process.pid}/stat", encoding="ascii") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def start_servers(zone_files: dict[str, Path], count: int, host: str) -> ServerSet:
    servers = ServerSet()
    started = time.perf_counter()
    zone_args = [
        arg for origin, path in zone_files.items() for arg in ("--zone", f"{origin}={path}")
    ]
    for _ in range(count):
        command = [
            sys.executable,
            "-m",
            "tests.integration.dnsserver",
            *zone_args,
            "--host",
            host,
            "--port",
            str(servers.port),
            "--reuse-port",
        ]
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        servers.processes.append(process)
        assert process.stdout is not None
        line = process.stdout.readline().split()
        if not line or line[0] != "ready":
            servers.stop()
            raise SystemExit(f"DNS server did not start: {line}")
        servers.port = int(line[2])
    servers.startup_s = time.perf_counter() - started
    return servers


def run_child(options: dict[str, Any], workdir: Path) -> ChildReport:
    source = workdir / "child-input.json"
    source.write_text(json.dumps(options), encoding="utf-8")
    output = workdir / "child-output.json"
    subprocess.run(
        [sys.executable, __file__, "--child", str(source), str(output)], check=True, cwd=ROOT
    )
    return ChildReport(**json.loads(output.read_text(encoding="utf-8")))


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Discovery of N generated domains against the local DNS server."
    )
    parser.add_argument("--domains", type=int, default=10_000)
    parser.add_argument("--mx-hosts", type=int, default=300)
    parser.add_argument("--servers", type=int, default=1, help="DNS server processes")
    parser.add_argument("--concurrency", type=int, default=200, help="domains in flight")
    parser.add_argument("--max-queries", type=int, default=100, help="DNS queries in flight")
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--host", default="127.0.0.153")
    parser.add_argument("--uvloop", action="store_true", help="also run on uvloop")
    parser.add_argument("--tracemalloc", action="store_true", help="also a tracemalloc run")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.child:
        options = json.loads(Path(args.child[0]).read_text(encoding="utf-8"))
        report = child_main(options)
        Path(args.child[1]).write_text(json.dumps(asdict(report)), encoding="utf-8")
        return 0
    zones, domains, expected = generate(args.domains, args.mx_hosts)
    runs: list[tuple[str, ChildReport, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-discovery-") as tmp:
        workdir = Path(tmp)
        zone_files = {}
        for origin, text in zones.items():
            zone_files[origin] = workdir / f"{origin}.zone"
            zone_files[origin].write_text(text, encoding="utf-8")
        servers = start_servers(zone_files, args.servers, args.host)
        try:
            console.print(
                f"{args.servers} DNS server process(es) on {args.host}:{servers.port}, "
                f"{args.domains} domains, {args.mx_hosts} MX hosts "
                f"(zones loaded in {servers.startup_s:.1f} s)"
            )
            variants = [("asyncio", False, False)]
            if args.uvloop:
                variants.append(("uvloop", True, False))
            if args.tracemalloc:
                variants.append(("asyncio+tracemalloc", False, True))
            for label, uvloop, traced in variants:
                options = {
                    "domains": domains,
                    "expected": expected,
                    "nameserver": f"{args.host}:{servers.port}",
                    "timeout": args.timeout,
                    "concurrency": args.concurrency,
                    "max_queries": args.max_queries,
                    "uvloop": uvloop,
                    "tracemalloc": traced,
                }
                server_cpu0 = servers.cpu_s()
                report = run_child(options, workdir)
                runs.append((label, report, servers.cpu_s() - server_cpu0))
                console.print(
                    f"  {label}: {report.domains_per_s:,.0f} domains/s, "
                    f"{report.wall_s:.2f} s wall, {report.cpu_s:.2f} CPU-s, "
                    f"peak RSS {report.rss_peak_mb:.0f} MB"
                )
        finally:
            servers.stop()
    _print_table(runs)
    failed = [m for _, report, _ in runs for m in report.mismatches]
    for mismatch in failed[:20]:
        console.print(f"[red]mismatch[/red] {mismatch}")
    if args.json:
        document = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": {
                "python": platform.python_version(),
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
            },
            "options": {k: v for k, v in vars(args).items() if k != "child"},
            "runs": [
                {"label": label, "server_cpu_s": server_cpu, **asdict(report)}
                for label, report, server_cpu in runs
            ],
        }
        args.json.write_text(json.dumps(document, indent=2, default=str), encoding="utf-8")
    return 1 if failed else 0


def _print_table(runs: list[tuple[str, ChildReport, float]]) -> None:
    table = Table(title="discovery")
    for column in (
        "run",
        "domains/s",
        "wall s",
        "CPU s",
        "RSS before MB",
        "RSS peak MB",
        "traced peak MB",
        "queries",
        "cache hits",
        "retries",
        "failures",
        "endpoints",
        "uses",
        "plan s",
        "DNS server CPU s",
    ):
        table.add_column(column, justify="right")
    for label, r, server_cpu in runs:
        table.add_row(
            label,
            f"{r.domains_per_s:,.0f}",
            f"{r.wall_s:.2f}",
            f"{r.cpu_s:.2f}",
            f"{r.rss_before_mb:.0f}",
            f"{r.rss_peak_mb:.0f}",
            "-" if r.tracemalloc_peak_mb is None else f"{r.tracemalloc_peak_mb:.0f}",
            str(r.resolver["queries"]),
            str(r.resolver["cache_hits"]),
            str(r.resolver["retries"]),
            str(r.resolver["failures"]),
            str(r.plan_endpoints),
            str(r.plan_uses),
            f"{r.plan_s:.2f}",
            f"{server_cpu:.2f}",
        )
    console.print(table)
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(runs[0][1].statuses.items()))
    console.print(f"statuses: {statuses}")


if __name__ == "__main__":
    sys.exit(main())
