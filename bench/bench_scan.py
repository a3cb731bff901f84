"""Quick-sweep benchmark: tlsfleet against sslyze on the same local nginx endpoints.

One nginx master (private prefix in a temporary directory) serves N legacy and M
modern HTTPS endpoints, each on its own loopback address and port, with certificates
from a throw-away CA. Each tool then scans all of them in its own subprocess, one after
the other: tlsfleet (quick mode), sslyze (its six cipher-suite commands) and, with
``--uvloop``, tlsfleet again on uvloop. Measured per run:

* wall seconds of the scan itself (reported by the child, interpreter start-up and
  imports excluded) and of the whole subprocess;
* CPU seconds of the scan (the child's ``time.process_time()``, all its threads) and of
  the whole subprocess (``RUSAGE_CHILDREN`` delta in this process);
* connections the server accepted: the system-wide ``TcpPassiveOpens`` delta of
  ``/proc/net/snmp`` (anything else on the machine adds to it) and nginx's own
  ``accepts`` counter (``stub_status``, this nginx only); tlsfleet's own count too;
* nginx's CPU seconds during the run, to show it was not the bottleneck.

The results must agree (same protocol versions, and our suites restricted to what
sslyze tested equal sslyze's accepted suites, per endpoint and version) and match the
nginx configuration; otherwise the exit status is 1. No timing threshold is asserted:
the figures are reported, ``docs/benchmarks.md`` compares them with the design targets.

    python bench/bench_scan.py                      # 50 legacy + 50 modern endpoints
    python bench/bench_scan.py --legacy 5 --modern 5 --uvloop --json /tmp/bench.json

Needs ``/usr/sbin/nginx`` (``.ci/install-daemons.sh`` or ``apt-get install nginx-light``;
``--install-nginx`` does the latter when run as root).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import importlib.metadata
import io
import json
import math
import os
import platform
import pstats
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import types
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

from fleet.demo.pki import DemoCA
from scanner.engine import Scanner, ScanOptions
from scanner.models import PROTOCOLS, EndpointResult, Target
from scanner.net import LocalLimiter

Profile = Literal["legacy", "modern"]
Tool = Literal["tlsfleet", "tlsfleet-uvloop", "sslyze"]

#: nginx ``ssl_protocols`` / ``ssl_ciphers`` per profile, and what a scan must find.
PROFILES: dict[Profile, tuple[str, str, frozenset[str]]] = {
    "legacy": (
        "TLSv1 TLSv1.1 TLSv1.2 TLSv1.3",
        "ALL:@SECLEVEL=0",
        frozenset({"TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"}),
    ),
    "modern": (
        "TLSv1.2 TLSv1.3",
        "ECDHE+AESGCM:ECDHE+CHACHA20",
        frozenset({"TLSv1.2", "TLSv1.3"}),
    ),
}

#: Connections a quick scan may open beyond the accepted suites: one refusal per
#: version (the six version probes) plus three (server-preference check and slack).
BUDGET_EXTRA = len(PROTOCOLS) + 3

NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
STATUS_IP = "127.0.39.1"
ADDRESSES_PER_BLOCK = 250

# Piped output (CI logs, tee) gets a width that fits the table instead of 80 columns.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)


# -- endpoints and nginx ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    profile: Profile
    ip: str
    port: int

    def target(self) -> Target:
        return Target(self.name, self.ip, self.port, "https", "implicit", self.name)


def _free_port(ip: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((ip, 0))
        port: int = sock.getsockname()[1]
        return port


def plan_endpoints(legacy: int, modern: int) -> list[Endpoint]:
    """Legacy endpoints on 127.0.40.x (then .41.x …), modern ones on the next block."""
    endpoints: list[Endpoint] = []
    block = 40
    plan: tuple[tuple[Profile, int], ...] = (("legacy", legacy), ("modern", modern))
    for profile, count in plan:
        for i in range(count):
            ip = f"127.0.{block + i // ADDRESSES_PER_BLOCK}.{i % ADDRESSES_PER_BLOCK + 1}"
            name = f"{profile}-{i + 1:04d}.bench.test"
            endpoints.append(Endpoint(name, profile, ip, _free_port(ip)))
        block += max(1, math.ceil(count / ADDRESSES_PER_BLOCK))
    if block > 255:
        raise SystemExit("too many endpoints for the 127.0.40.0–127.0.255.255 plan")
    return endpoints


def find_nginx(install: bool) -> str:
    for candidate in (shutil.which("nginx"), *NGINX_CANDIDATES):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    if install and os.geteuid() == 0:
        console.print("nginx not found: installing nginx-light with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "nginx-light"],
            check=True,
            env=env,
        )
        return find_nginx(install=False)
    raise SystemExit(
        "nginx not found: run .ci/install-daemons.sh (or apt-get install -y nginx-light) "
        "as root, or pass --install-nginx when running as root"
    )


class NginxFleet:
    """One nginx master serving every endpoint; started and stopped by this object."""

    def __init__(
        self, binary: str, root: Path, endpoints: Sequence[Endpoint], *, workers: int
    ) -> None:
        self.binary = binary
        self.root = root
        self.endpoints = endpoints
        self.workers = workers
        self.config_file = root / "nginx.conf"
        self.error_log = root / "error.log"
        self.status_port = _free_port(STATUS_IP)
        self.process: subprocess.Popen[bytes] | None = None

    def write_config(self, ca: DemoCA) -> None:
        self.root.chmod(0o755)
        temp = self.root / "temp"
        temp.mkdir(exist_ok=True)
        user = "user nobody nogroup;" if os.geteuid() == 0 else ""
        temp_paths = "\n".join(
            f"    {kind}_temp_path {temp / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        servers = []
        for ep in self.endpoints:
            issued = ca.issue(ep.name)
            protocols, ciphers, _ = PROFILES[ep.profile]
            servers.append(f"""
    server {{
        listen {ep.ip}:{ep.port} ssl;
        server_name {ep.name};
        ssl_certificate {issued.cert_file};
        ssl_certificate_key {issued.key_file};
        ssl_protocols {protocols};
        ssl_ciphers '{ciphers}';
        ssl_prefer_server_ciphers on;
        location / {{ return 200 "{ep.profile}\\n"; }}
    }}""")
        self.config_file.write_text(f"""\
# Generated by bench/bench_scan.py
daemon off;
master_process on;
worker_processes {self.workers};
worker_rlimit_nofile 16384;
{user}
pid {self.root / "nginx.pid"};
error_log {self.error_log} error;

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

    server {{
        listen {STATUS_IP}:{self.status_port};
        location = /status {{ stub_status; }}
    }}
{"".join(servers)}
}}
""")

    def start(self, timeout: float = 20.0) -> None:
        console_log = (self.root / "console.log").open("wb")
        self.process = subprocess.Popen(
            [
                self.binary,
                "-p",
                f"{self.root}/",
                "-c",
                str(self.config_file),
                "-e",
                str(self.error_log),
            ],
            stdout=console_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        console_log.close()
        deadline = time.monotonic() + timeout
        pending = [(STATUS_IP, self.status_port)] + [(e.ip, e.port) for e in self.endpoints]
        while pending:
            if self.process.poll() is not None:
                raise SystemExit(f"nginx exited ({self.process.returncode}):\n{self.logs()}")
            if time.monotonic() > deadline:
                raise SystemExit(f"nginx did not listen on {pending[0]} in time:\n{self.logs()}")
            try:
                socket.create_connection(pending[0], timeout=0.5).close()
                pending.pop(0)
            except OSError:
                time.sleep(0.05)

    def logs(self) -> str:
        parts = []
        for path in (self.root / "console.log", self.error_log):
            if path.exists():
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def stop(self) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        workers = self._pids()[1:]
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def _pids(self) -> list[int]:
        if self.process is None:
            return []
        master = self.process.pid
        try:
            children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        except OSError:
            return [master]
        return [master, *(int(pid) for pid in children)]

    def cpu_seconds(self) -> float:
        """User + system CPU of the master and its workers so far."""
        ticks = 0
        for pid in self._pids():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def accepts(self) -> int:
        """nginx's own count of accepted connections (this request's included)."""
        url = f"http://{STATUS_IP}:{self.status_port}/status"
        with urllib.request.urlopen(url, timeout=5) as response:
            lines = response.read().decode().splitlines()
        return int(lines[2].split()[0])


def tcp_passive_opens() -> int:
    """System-wide TCP passive opens (connections accepted by any server on the host)."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    tcp = [line for line in lines if line and line[0] == "Tcp:"]
    header, values = tcp[0], tcp[1]
    return int(values[header.index("PassiveOpens")])


# -- the children -----------------------------------------------------------------------


def _child_tlsfleet(
    targets: list[Target], options: dict[str, Any], *, use_uvloop: bool
) -> dict[str, Any]:
    scan_options = ScanOptions(timeout=options["timeout"], connect_timeout=options["timeout"])

    async def scan_all() -> list[EndpointResult]:
        limiter = LocalLimiter(global_limit=options["concurrency"], per_ip=options["per_ip"])
        scanner = Scanner(scan_options.quick, limiter=limiter)
        return [result async for result in scanner.scan_many(targets)]

    loop_factory = None
    if use_uvloop:
        import uvloop

        loop_factory = uvloop.new_event_loop
    profiler = cProfile.Profile() if options.get("profile") else None
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        if profiler is not None:
            profiler.enable()
        results = runner.run(scan_all())
        if profiler is not None:
            profiler.disable()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if profiler is not None:
        _write_profile(profiler, Path(options["profile"]))
    return {
        "scan_wall_s": wall,
        "scan_cpu_s": cpu,
        "results": [r.to_dict() for r in results],
    }


def _write_profile(profiler: cProfile.Profile, path: Path) -> None:
    """Own time summed per source file (stdlib, scanner, syscalls), then the top functions."""
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, object]]
    raw = stats.stats  # type: ignore[attr-defined]
    by_file: dict[str, float] = {}
    for (filename, _, function), (_, _, own, _, _) in raw.items():
        if filename == "~":
            key = f"C: {function}"
        elif "/lib/python3" in filename and "site-packages" not in filename:
            key = "stdlib: " + filename.split("/lib/python3", 1)[1].split("/", 1)[1]
        else:
            key = filename.split("site-packages/", 1)[-1].removeprefix(f"{Path.cwd()}/")
        by_file[key] = by_file.get(key, 0.0) + own
    total = sum(by_file.values())
    out.write(f"==== own time by file (total {total:.3f} s, profiler overhead included) ====\n")
    for key, own in sorted(by_file.items(), key=lambda kv: -kv[1])[:30]:
        out.write(f"{own:8.3f} s {100 * own / total:5.1f} %  {key}\n")
    stats.strip_dirs()
    for key in ("tottime", "cumulative"):
        out.write(f"\n==== sorted by {key} ====\n")
        stats.sort_stats(key).print_stats(45)
    path.write_text(out.getvalue())


def _child_sslyze(targets: list[Target], options: dict[str, Any]) -> dict[str, Any]:
    import sslyze  # noqa: F401  (imported before the clock starts, as tlsfleet's code is)

    from scanner.reference import sslyze_suites

    wall0, cpu0 = time.perf_counter(), time.process_time()
    refs = sslyze_suites(targets, timeout=int(options["timeout"]))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "scan_wall_s": wall,
        "scan_cpu_s": cpu,
        "results": [
            {
                "target": ref.target.to_dict(),
                "suites": ref.suites,
                "tested": {v: sorted(names) for v, names in ref.tested.items()},
                "error": ref.error,
            }
            for ref in refs
        ],
    }


def child_main(tool: str, input_file: Path, output_file: Path) -> None:
    spec = json.loads(input_file.read_text())
    targets = [Target(**t) for t in spec["targets"]]
    if tool == "sslyze":
        out = _child_sslyze(targets, spec["options"])
    else:
        out = _child_tlsfleet(targets, spec["options"], use_uvloop=tool == "tlsfleet-uvloop")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["process_cpu_s"] = usage.ru_utime + usage.ru_stime
    out["max_rss_mb"] = usage.ru_maxrss / 1024
    output_file.write_text(json.dumps(out))


# -- running and measuring --------------------------------------------------------------


@dataclass(slots=True)
class Run:
    tool: str
    endpoints: int
    scan_wall_s: float
    process_wall_s: float
    scan_cpu_s: float
    process_cpu_s: float
    children_cpu_s: float
    nginx_cpu_s: float
    server_connections_snmp: int
    server_connections_nginx: int
    own_connections: int | None
    max_rss_mb: float
    #: 1-minute load average when the run started: other work on the machine adds noise.
    load_before: float
    results: list[dict[str, Any]] = field(repr=False, default_factory=list)

    @property
    def throughput(self) -> float:
        return self.endpoints / self.scan_wall_s

    def figures(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "results"}
        n = self.endpoints
        data.update(
            # Connections other programs accepted during the run (noise indicator).
            foreign_connections=self.server_connections_snmp - self.server_connections_nginx,
            endpoints_per_s=self.throughput,
            endpoints_per_s_process=n / self.process_wall_s,
            scan_cpu_s_per_endpoint=self.scan_cpu_s / n,
            children_cpu_s_per_endpoint=self.children_cpu_s / n,
            nginx_cpu_s_per_endpoint=self.nginx_cpu_s / n,
            server_connections_per_endpoint_snmp=self.server_connections_snmp / n,
            server_connections_per_endpoint_nginx=self.server_connections_nginx / n,
            own_connections_per_endpoint=(
                None if self.own_connections is None else self.own_connections / n
            ),
        )
        return data


def run_tool(
    tool: Tool,
    endpoints: Sequence[Endpoint],
    nginx: NginxFleet,
    workdir: Path,
    options: dict[str, Any],
) -> Run:
    input_file = workdir / f"{tool}-input.json"
    output_file = workdir / f"{tool}-output.json"
    output_file.unlink(missing_ok=True)
    input_file.write_text(
        json.dumps({"targets": [e.target().to_dict() for e in endpoints], "options": options})
    )
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        tool,
        "--child-input",
        str(input_file),
        "--child-output",
        str(output_file),
    ]
    time.sleep(1.0)  # let the previous run's connections drain
    load = float(Path("/proc/loadavg").read_text().split()[0])
    accepts0 = nginx.accepts()
    nginx_cpu0 = nginx.cpu_seconds()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    opens0 = tcp_passive_opens()
    wall0 = time.perf_counter()
    with subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            _, stderr = proc.communicate()
        except BaseException:  # interrupted: do not leave the child scanning on its own
            proc.kill()
            raise
    process_wall = time.perf_counter() - wall0
    opens1 = tcp_passive_opens()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    nginx_cpu1 = nginx.cpu_seconds()
    accepts1 = nginx.accepts()
    if proc.returncode != 0 or not output_file.exists():
        raise SystemExit(f"{tool} run failed ({proc.returncode}):\n{stderr[-4000:]}")
    out = json.loads(output_file.read_text())
    results: list[dict[str, Any]] = out["results"]
    own = sum(r["connections"] for r in results) if tool != "sslyze" else None
    return Run(
        tool=tool,
        endpoints=len(endpoints),
        scan_wall_s=out["scan_wall_s"],
        process_wall_s=process_wall,
        scan_cpu_s=out["scan_cpu_s"],
        process_cpu_s=out["process_cpu_s"],
        children_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        nginx_cpu_s=nginx_cpu1 - nginx_cpu0,
        server_connections_snmp=opens1 - opens0,
        # The second status request is counted too.
        server_connections_nginx=accepts1 - accepts0 - 1,
        own_connections=own,
        max_rss_mb=out["max_rss_mb"],
        load_before=load,
        results=results,
    )


# -- checking ---------------------------------------------------------------------------


def _key(target: dict[str, Any]) -> tuple[str, int]:
    return target["ip"], int(target["port"])


def compare(ours: dict[str, Any], ref: dict[str, Any]) -> list[str]:
    """Disagreements of one endpoint, by the rule of the sslyze cross-check tests."""
    problems = []
    if ours["status"] != "ok":
        problems.append(f"tlsfleet failed: {ours['error']}")
    problems += [f"tlsfleet partial error: {e}" for e in ours["partial_errors"]]
    if ref["error"]:
        problems.append(f"sslyze failed: {ref['error']}")
    if ours["status"] != "ok" or ref["error"]:
        return problems
    for version in PROTOCOLS:
        accepted = ours["protocols"].get(version)
        ref_names = set(ref["suites"].get(version, []))
        if accepted != bool(ref_names):
            problems.append(f"{version}: tlsfleet says {accepted}, sslyze {bool(ref_names)}")
        ours_names = set(ours["cipher_suites"].get(version, []))
        tested = set(ref["tested"].get(version, []))
        if missing := ref_names - ours_names:
            problems.append(f"{version}: only sslyze found {sorted(missing)}")
        if extra := (ours_names - ref_names) & tested:
            problems.append(f"{version}: sslyze tested and refused {sorted(extra)}")
    return problems


def expected_problems(endpoint: Endpoint, protocols: dict[str, Any], tool: str) -> list[str]:
    """Does what a tool found match the nginx configuration of the endpoint?"""
    _, _, expected = PROFILES[endpoint.profile]
    found = {v for v in PROTOCOLS if protocols.get(v)}
    if found != expected:
        return [f"{tool}: versions {sorted(found)} but nginx is configured for {sorted(expected)}"]
    return []


@dataclass(slots=True)
class Check:
    endpoint: Endpoint
    tool: str
    connections: int
    accepted_suites: int
    budget: int
    beyond_sslyze: int
    problems: list[str]

    @property
    def within_budget(self) -> bool:
        return self.connections <= self.budget


def check_run(run: Run, reference: Run, endpoints: Sequence[Endpoint]) -> list[Check]:
    ours_by = {_key(r["target"]): r for r in run.results}
    refs_by = {_key(r["target"]): r for r in reference.results}
    checks = []
    for ep in endpoints:
        ours, ref = ours_by.get((ep.ip, ep.port)), refs_by.get((ep.ip, ep.port))
        if ours is None or ref is None:
            missing = "tlsfleet" if ours is None else "sslyze"
            checks.append(Check(ep, run.tool, 0, 0, BUDGET_EXTRA, 0, [f"no {missing} result"]))
            continue
        problems = compare(ours, ref)
        problems += expected_problems(ep, ours["protocols"], run.tool)
        ref_protocols = {v: bool(names) for v, names in ref["suites"].items()}
        problems += expected_problems(ep, ref_protocols, "sslyze")
        accepted = sum(len(names) for names in ours["cipher_suites"].values())
        beyond = sum(
            len(set(names) - set(ref["tested"].get(v, [])))
            for v, names in ours["cipher_suites"].items()
        )
        checks.append(
            Check(
                endpoint=ep,
                tool=run.tool,
                connections=ours["connections"],
                accepted_suites=accepted,
                budget=accepted + BUDGET_EXTRA,
                beyond_sslyze=beyond,
                problems=problems,
            )
        )
    return checks


# -- reporting --------------------------------------------------------------------------


def _version_of(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(nginx_binary: str) -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().split()
    ram_gib = int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024 / 1024
    cpu_model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    nginx_version = subprocess.run(
        [nginx_binary, "-v"], capture_output=True, text=True, check=False
    ).stderr.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model,
        "ram_gib": round(ram_gib, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "nginx": nginx_version.removeprefix("nginx version: "),
        "sslyze": _version_of("sslyze"),
        "nassl": _version_of("nassl"),
        "uvloop": _version_of("uvloop"),
    }


def _median_run(runs: list[Run]) -> Run:
    ordered = sorted(runs, key=lambda r: r.scan_wall_s)
    return ordered[(len(ordered) - 1) // 2]


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def render(runs: dict[str, Run], checks: dict[str, list[Check]], info: dict[str, Any]) -> None:
    table = Table(title="Quick sweep: tlsfleet vs sslyze (same nginx endpoints, same run)")
    columns = (
        "tool",
        "scan wall s",
        "endpoints/s",
        "CPU s",
        "CPU s/endpoint",
        "server conns/endpoint (nginx)",
        "(TcpPassiveOpens)",
        "own conns/endpoint",
        "nginx CPU s",
        "agree",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("tool", "agree") else "right")
    for tool, run in runs.items():
        n = run.endpoints
        tool_checks = checks.get(tool)
        agree = "reference"
        if tool_checks is not None:
            bad = sum(1 for c in tool_checks if c.problems)
            agree = "yes" if not bad else f"NO ({bad}/{n})"
        table.add_row(
            tool,
            _fmt(run.scan_wall_s),
            _fmt(run.throughput, 1),
            _fmt(run.scan_cpu_s),
            _fmt(run.scan_cpu_s / n, 4),
            _fmt(run.server_connections_nginx / n, 1),
            _fmt(run.server_connections_snmp / n, 1),
            "–" if run.own_connections is None else _fmt(run.own_connections / n, 1),
            _fmt(run.nginx_cpu_s),
            agree,
        )
    console.print(table)
    console.print(
        f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram_gib']} GiB, "
        f"Python {info['python']}, {info['openssl']}, nginx {info['nginx']}, "
        f"sslyze {info['sslyze']}"
    )
    ref = runs["sslyze"]
    for tool, run in runs.items():
        if tool == "sslyze":
            continue
        console.print(
            f"[bold]{tool}/sslyze[/]: throughput ×{run.throughput / ref.throughput:.1f} "
            f"(×{ref.process_wall_s / run.process_wall_s:.1f} counting process start-up), "
            f"CPU per endpoint ×{run.scan_cpu_s / ref.scan_cpu_s:.3f} "
            f"(sslyze uses ×{ref.scan_cpu_s / run.scan_cpu_s:.1f} as much), "
            f"server connections ×{run.server_connections_nginx / ref.server_connections_nginx:.3f}"
        )
    for tool, tool_checks in checks.items():
        over = [c for c in tool_checks if not c.within_budget]
        worst = max(tool_checks, key=lambda c: c.connections - c.budget)
        console.print(
            f"{tool} connection budget (accepted suites + {BUDGET_EXTRA}): "
            f"{len(tool_checks) - len(over)}/{len(tool_checks)} endpoints within; "
            f"tightest {worst.endpoint.name}: {worst.connections} of {worst.budget}"
        )
        for profile in PROFILES:
            mine = [c for c in tool_checks if c.endpoint.profile == profile]
            if mine:
                console.print(
                    f"  {profile}: {statistics.mean(c.connections for c in mine):.1f} "
                    f"connections/endpoint for "
                    f"{statistics.mean(c.accepted_suites for c in mine):.1f} accepted suites"
                )
        for c in tool_checks:
            for problem in c.problems:
                console.print(f"[red]DISAGREE[/] {tool} {c.endpoint.name}: {problem}")


# -- main -------------------------------------------------------------------------------


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="tlsfleet vs sslyze on the same local nginx endpoints, same run."
    )
    parser.add_argument("--legacy", type=int, default=50, help="legacy endpoints (50)")
    parser.add_argument("--modern", type=int, default=50, help="modern endpoints (50)")
    parser.add_argument("--uvloop", action="store_true", help="also run tlsfleet on uvloop")
    parser.add_argument("--json", type=Path, help="write all figures to this file")
    parser.add_argument("--concurrency", type=int, default=200, help="tlsfleet global limit")
    parser.add_argument("--per-ip", type=int, default=4, help="tlsfleet per-IP limit")
    parser.add_argument("--timeout", type=float, default=5.0, help="per-step timeout, both tools")
    parser.add_argument(
        "--repeat", type=int, default=5, help="tlsfleet runs per variant; the median is shown (5)"
    )
    parser.add_argument("--nginx-workers", type=int, default=2, help="nginx worker_processes")
    parser.add_argument(
        "--profile", type=Path, help="after the measured runs, cProfile one tlsfleet run to FILE"
    )
    parser.add_argument(
        "--install-nginx", action="store_true", help="apt-get install nginx-light if missing"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--child", choices=["tlsfleet", "tlsfleet-uvloop", "sslyze"])
    parser.add_argument("--child-input", type=Path)
    parser.add_argument("--child-output", type=Path)
    return parser.parse_args(argv)


def _on_sigterm(signum: int, frame: types.FrameType | None) -> None:
    del frame
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tlsfleet-bench-"))
    try:
        yield path
    finally:
        if keep:
            console.print(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.child:
        child_main(args.child, args.child_input, args.child_output)
        return 0
    if args.legacy < 0 or args.modern < 0 or args.legacy + args.modern == 0:
        raise SystemExit("need at least one endpoint")
    signal.signal(signal.SIGTERM, _on_sigterm)
    binary = find_nginx(args.install_nginx)
    info = machine_info(binary)
    endpoints = plan_endpoints(args.legacy, args.modern)
    options = {
        "timeout": args.timeout,
        "concurrency": args.concurrency,
        "per_ip": args.per_ip,
    }
    tools: list[Tool] = ["tlsfleet", "sslyze"]
    if args.uvloop:
        tools.append("tlsfleet-uvloop")
    with _workdir(args.keep) as workdir:
        nginx = NginxFleet(binary, workdir / "nginx", endpoints, workers=args.nginx_workers)
        nginx.root.mkdir()
        nginx.write_config(DemoCA(workdir / "pki"))
        all_runs: dict[str, list[Run]] = {}
        try:
            nginx.start()
            console.print(
                f"nginx {info['nginx']} serving {args.legacy} legacy + {args.modern} modern "
                f"endpoints ({args.nginx_workers} workers)"
            )
            for tool in tools:
                repeat = 1 if tool == "sslyze" else max(1, args.repeat)
                for i in range(repeat):
                    run = run_tool(tool, endpoints, nginx, workdir, options)
                    all_runs.setdefault(tool, []).append(run)
                    console.print(
                        f"  {tool} run {i + 1}/{repeat}: {run.scan_wall_s:.2f} s wall, "
                        f"{run.scan_cpu_s:.2f} CPU-s, {run.server_connections_nginx} connections "
                        f"(+{run.server_connections_snmp - run.server_connections_nginx} "
                        f"foreign), load {run.load_before:.2f}"
                    )
            if args.profile:
                profiled = run_tool(
                    "tlsfleet", endpoints, nginx, workdir, {**options, "profile": str(args.profile)}
                )
                console.print(
                    f"  profiled tlsfleet run (not counted): {profiled.scan_wall_s:.2f} s wall; "
                    f"profile in {args.profile}"
                )
        finally:
            nginx.stop()
    runs = {tool: _median_run(r) for tool, r in all_runs.items()}
    checks: dict[str, list[Check]] = {}
    for name, tool_runs in all_runs.items():
        if name == "sslyze":
            continue
        checks[name] = check_run(runs[name], runs["sslyze"], endpoints)
        # Every repetition must agree, not only the one whose figures are shown.
        for i, other in enumerate(tool_runs):
            if other is runs[name]:
                continue
            for mine, theirs in zip(
                checks[name], check_run(other, runs["sslyze"], endpoints), strict=True
            ):
                mine.problems += [f"(run {i + 1}) {p}" for p in theirs.problems]
                # The budget must hold in every repetition too: keep the worst count.
                if theirs.connections - theirs.budget > mine.connections - mine.budget:
                    mine.connections, mine.budget = theirs.connections, theirs.budget
    render(runs, checks, info)
    disagreements = sum(1 for cs in checks.values() for c in cs if c.problems)
    if args.json:
        ref = runs["sslyze"]
        report = {
            "command": " ".join([Path(sys.executable).name, "bench/bench_scan.py", *sys.argv[1:]]),
            "machine": info,
            "endpoints": {"legacy": args.legacy, "modern": args.modern},
            "options": {**options, "nginx_workers": args.nginx_workers, "repeat": args.repeat},
            "runs": {tool: run.figures() for tool, run in runs.items()},
            "all_runs": {t: [r.figures() for r in rs] for t, rs in all_runs.items()},
            "ratios": {
                tool: {
                    "throughput": run.throughput / ref.throughput,
                    "throughput_process": ref.process_wall_s / run.process_wall_s,
                    "cpu_per_endpoint": run.scan_cpu_s / ref.scan_cpu_s,
                    "server_connections": run.server_connections_nginx
                    / ref.server_connections_nginx,
                }
                for tool, run in runs.items()
                if tool != "sslyze"
            },
            "budget_extra": BUDGET_EXTRA,
            "checks": {
                tool: [
                    {
                        "endpoint": asdict(c.endpoint),
                        "connections": c.connections,
                        "accepted_suites": c.accepted_suites,
                        "budget": c.budget,
                        "within_budget": c.within_budget,
                        "suites_sslyze_cannot_test": c.beyond_sslyze,
                        "problems": c.problems,
                    }
                    for c in cs
                ]
                for tool, cs in checks.items()
            },
            "disagreements": disagreements,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"figures written to {args.json}")
    if disagreements:
        console.print(f"[red bold]{disagreements} endpoint results disagree: exit 1[/]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
