"""``tlsfleet scan``: endpoints and domains, scanned directly (``tlsfleet demo`` is in
:mod:`fleet.demo_cli`)."""

from __future__ import annotations

import ipaddress
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from fleet import demo_cli
from fleet.console import err, error_line, fail
from fleet.report import render_domains, render_results
from fleet.runtime import run
from fleet.settings import load_settings
from scanner.deep import DeepChecker, DeepOptions
from scanner.discovery import normalise_domain
from scanner.dns import Resolver, parse_nameserver
from scanner.domains import DomainProgress, scan_domains
from scanner.engine import Scanner, ScanOptions
from scanner.errors import ScanError, TargetError
from scanner.models import DomainResult, EndpointResult, ErrorInfo, Target
from scanner.net import LocalLimiter
from scanner.targets import TargetSpec, parse_target, resolve


def register(app: typer.Typer) -> None:
    """Add the scan command to ``app``, and the demo command from :mod:`fleet.demo_cli`."""
    app.command()(scan)
    demo_cli.register(app)


def scan(
    targets: Annotated[
        list[str] | None,
        typer.Argument(
            help="a domain (discovered through DNS: MX, SRV, apex and www), or an endpoint: "
            "host:port, [v6]:port or an IP; several allowed",
            show_default=False,
        ),
    ] = None,
    from_file: Annotated[
        Path | None,
        typer.Option(help="domains to scan, one per line ('#' starts a comment)"),
    ] = None,
    service: Annotated[
        str | None,
        typer.Option(
            help="smtp, submission, submissions, imap, imaps, pop3, pop3s, https; "
            "makes every target an endpoint (default service: from the port)"
        ),
    ] = None,
    sni: Annotated[str | None, typer.Option(help="server name to send (default: the host)")] = None,
    resolver: Annotated[
        list[str] | None,
        typer.Option(help="DNS server host[:port] for domain discovery; repeatable"),
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="seconds per step")] = None,
    ca_file: Annotated[
        Path | None, typer.Option(help="extra trusted CA certificates (PEM)")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="connections at once, in all")] = None,
    per_ip: Annotated[int | None, typer.Option(help="connections at once per IP")] = None,
    json_lines: Annotated[
        bool,
        typer.Option(
            "--json", help="JSON Lines: one document per endpoint, or per domain for domains"
        ),
    ] = False,
    allow_private: Annotated[bool, typer.Option(help="allow private and loopback targets")] = False,
    quick: Annotated[
        bool, typer.Option(help="versions, suites and STARTTLS facts only (no certificate)")
    ] = False,
    deep: Annotated[
        bool,
        typer.Option(
            help="also run sslyze's deep checks (Heartbleed, ROBOT, renegotiation, trust "
            "stores, …) on every endpoint; slower"
        ),
    ] = False,
    auth_check: Annotated[
        bool,
        typer.Option(help="try one login with random, non-existent credentials before TLS"),
    ] = False,
    source_address: Annotated[
        str | None, typer.Option(help="local address to connect from")
    ] = None,
) -> None:
    """Scan domains or endpoints: protocol versions, cipher suites, certificate, STARTTLS
    and passwords before TLS.

    A bare name (no port, no --service) is a domain: its MX hosts (or implicit MX), its
    RFC 6186/8314 SRV mail hosts and its apex and www are discovered and every endpoint
    they lead to is scanned once. Exit status: 0 when everything was scanned, 1 when
    some scans failed (the results say why), 2 for invalid targets or options.
    """
    settings = load_settings()
    domains: list[str] = []
    endpoint_texts: list[str] = []
    for text in targets or []:
        (domains if _is_domain(text, service) else endpoint_texts).append(text)
    try:  # names on the command line must be right; a file's bad rows are reported
        for name in domains:
            normalise_domain(name)
    except TargetError as exc:
        raise fail(exc.message) from None
    if from_file is not None:
        domains.extend(_read_domains(from_file))
    if not domains and not endpoint_texts:
        raise fail("nothing to scan: give targets or --from-file")
    try:
        specs = [parse_target(t, service=service, sni=sni) for t in endpoint_texts]
    except TargetError as exc:
        raise fail(exc.message) from None
    if ca_file is not None and not ca_file.is_file():
        raise fail(f"--ca-file {ca_file}: no such file")
    for name, value in (("--concurrency", concurrency), ("--per-ip", per_ip)):
        if value is not None and value < 1:
            raise fail(f"{name} must be at least 1")
    if timeout is not None and timeout <= 0:
        raise fail("--timeout must be positive")
    nameservers = [*settings.resolvers, *(resolver or [])]
    try:
        for ns in nameservers:
            parse_nameserver(ns)
    except ScanError as exc:
        raise fail(f"--resolver: {exc.message}") from None
    options = ScanOptions(
        timeout=timeout or settings.timeout,
        connect_timeout=timeout or settings.timeout,
        greeting_timeout=max(timeout or 0, settings.greeting_timeout),
        ca_file=str(ca_file or settings.ca_file) if (ca_file or settings.ca_file) else None,
        ehlo_name=settings.ehlo_name,
        source_address=source_address,
    )
    if quick:
        options = options.quick
    if auth_check:
        options = replace(options, auth_check=True)
    plan = _Run(
        options=options,
        allow_private=allow_private or settings.allow_private_targets,
        limiter=LocalLimiter(
            global_limit=concurrency or settings.global_limit,
            per_ip=per_ip or settings.per_ip_limit,
        ),
        json_lines=json_lines,
        deep=deep,
        nameservers=nameservers,
        timeout=options.timeout,
    )
    code = run(plan.execute(specs, domains))
    raise typer.Exit(code)


def _is_domain(text: str, service: str | None) -> bool:
    """A bare name without port is a domain, unless --service makes it an endpoint."""
    text = text.strip()
    if service or ":" in text or text.startswith("["):
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return True
    return False


def _read_domains(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"--from-file {path}: {exc}") from None
    names = [line.split("#", 1)[0].strip() for line in lines]
    return [n for n in names if n]


@dataclass
class _Run:
    """One CLI scan: its options and the resources it opens and closes."""

    options: ScanOptions
    allow_private: bool
    limiter: LocalLimiter
    json_lines: bool
    deep: bool
    nameservers: list[str]
    timeout: float

    async def execute(self, specs: Sequence[TargetSpec], domains: Sequence[str]) -> int:
        checker = DeepChecker(DeepOptions(ca_file=self.options.ca_file)) if self.deep else None
        try:
            scanner = Scanner(self.options, limiter=self.limiter, deep=checker)
            code = 0
            if specs:
                code = max(code, await _scan(specs, scanner, self))
            if domains:
                code = max(code, await _scan_domains(domains, scanner, self))
            return code
        finally:
            if checker is not None:
                await checker.close()


async def _scan_domains(domains: Sequence[str], scanner: Scanner, how: _Run) -> int:
    resolver = Resolver(how.nameservers, timeout=min(how.timeout, 5.0))
    progress = DomainProgress()
    documents: list[DomainResult] = []
    out = sys.stdout
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        found = bar.add_task("discovering", total=None)
        scanned = bar.add_task("scanning endpoints", total=None)

        def show(p: DomainProgress) -> None:
            bar.update(found, completed=p.discovered, total=p.domains)
            bar.update(scanned, completed=p.endpoints_done, total=p.endpoints or None)

        progress.on_change = show
        async for document in scan_domains(
            domains,
            resolver=resolver,
            scanner=scanner,
            allow_private=how.allow_private,
            progress=progress,
        ):
            documents.append(document)
            if how.json_lines:
                out.write(json.dumps(document.to_dict()) + "\n")
                out.flush()
    if not how.json_lines:
        render_domains(Console(width=None if sys.stdout.isatty() else 200), documents)
    return 0 if all(_domain_ok(d) for d in documents) else 1


def _domain_ok(document: DomainResult) -> bool:
    return document.discovery.status in ("ok", "null_mx") and all(
        e.status == "ok" for e in document.endpoints
    )


async def _scan(specs: Sequence[TargetSpec], scanner: Scanner, how: _Run) -> int:
    targets: list[Target] = []
    failed: list[EndpointResult] = []
    for spec in specs:
        try:
            targets.extend(await resolve(spec, allow_private=how.allow_private))
        except ScanError as exc:
            if exc.kind == "private_target":
                error_line(exc.message)
                return 2
            unresolved = Target(
                host=spec.host,
                ip="",
                port=spec.port,
                service=spec.service.name,
                tls_mode=spec.service.tls_mode,
                sni=spec.sni,
            )
            failed.append(
                EndpointResult(
                    target=unresolved,
                    status="error",
                    error=ErrorInfo(exc.kind, exc.phase, exc.message),
                )
            )
    return await _scan_targets(targets, scanner, json_lines=how.json_lines, failed=failed)


async def _scan_targets(
    targets: Sequence[Target],
    scanner: Scanner,
    *,
    json_lines: bool,
    failed: Sequence[EndpointResult] = (),
) -> int:
    results: list[EndpointResult] = list(failed)
    out = sys.stdout
    if json_lines:
        for res in failed:
            out.write(json.dumps(res.to_dict()) + "\n")
        out.flush()
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=len(targets) < 2 or not err.is_terminal,
    ) as progress:
        task = progress.add_task("scanning", total=len(targets))
        async for res in scanner.scan_many(targets):
            results.append(res)
            progress.advance(task)
            if json_lines:
                out.write(json.dumps(res.to_dict()) + "\n")
                out.flush()
    if not json_lines:
        # Piped output gets a wide table instead of rich's 80-column default.
        render_results(Console(width=None if sys.stdout.isatty() else 200), results)
    return 0 if all(r.status == "ok" for r in results) else 1
