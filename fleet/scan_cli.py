"""``tlsfleet scan`` and ``tlsfleet demo``: endpoints and domains, scanned directly."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from fleet.console import err, error_line, fail
from fleet.report import render_results
from fleet.runtime import run
from fleet.settings import load_settings
from scanner.engine import Scanner, ScanOptions
from scanner.errors import ScanError, TargetError
from scanner.models import EndpointResult, ErrorInfo, Target
from scanner.net import LocalLimiter
from scanner.targets import TargetSpec, parse_target, resolve


def register(app: typer.Typer) -> None:
    """Add the scan and demo commands to ``app``."""
    app.command()(scan)
    app.command()(demo)


def scan(
    targets: Annotated[
        list[str], typer.Argument(help="host, host:port, [v6]:port or IP; several allowed")
    ],
    service: Annotated[
        str | None,
        typer.Option(
            help="smtp, submission, submissions, imap, imaps, pop3, pop3s, https; "
            "default: from the port"
        ),
    ] = None,
    sni: Annotated[str | None, typer.Option(help="server name to send (default: the host)")] = None,
    timeout: Annotated[float | None, typer.Option(help="seconds per step")] = None,
    ca_file: Annotated[
        Path | None, typer.Option(help="extra trusted CA certificates (PEM)")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="connections at once, in all")] = None,
    per_ip: Annotated[int | None, typer.Option(help="connections at once per IP")] = None,
    json_lines: Annotated[
        bool, typer.Option("--json", help="JSON Lines: one result document per endpoint")
    ] = False,
    allow_private: Annotated[bool, typer.Option(help="allow private and loopback targets")] = False,
    quick: Annotated[
        bool, typer.Option(help="versions, suites and STARTTLS facts only (no certificate)")
    ] = False,
    auth_check: Annotated[
        bool,
        typer.Option(help="try one login with random, non-existent credentials before TLS"),
    ] = False,
    source_address: Annotated[
        str | None, typer.Option(help="local address to connect from")
    ] = None,
) -> None:
    """Scan endpoints: protocol versions, cipher suites, certificate, STARTTLS and auth.

    Exit status: 0 when every endpoint was scanned, 1 when some scans failed (the
    results say why), 2 for invalid targets or options.
    """
    settings = load_settings()
    try:
        specs = [parse_target(t, service=service, sni=sni) for t in targets]
    except TargetError as exc:
        raise fail(exc.message) from None
    if ca_file is not None and not ca_file.is_file():
        raise fail(f"--ca-file {ca_file}: no such file")
    for name, value in (("--concurrency", concurrency), ("--per-ip", per_ip)):
        if value is not None and value < 1:
            raise fail(f"{name} must be at least 1")
    if timeout is not None and timeout <= 0:
        raise fail("--timeout must be positive")
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
    code = run(
        _scan(
            specs,
            options,
            allow_private=allow_private or settings.allow_private_targets,
            concurrency=concurrency or settings.global_limit,
            per_ip=per_ip or settings.per_ip_limit,
            json_lines=json_lines,
        )
    )
    raise typer.Exit(code)


async def _scan(
    specs: Sequence[TargetSpec],
    options: ScanOptions,
    *,
    allow_private: bool,
    concurrency: int,
    per_ip: int,
    json_lines: bool,
) -> int:
    targets: list[Target] = []
    failed: list[EndpointResult] = []
    for spec in specs:
        try:
            targets.extend(await resolve(spec, allow_private=allow_private))
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
    return await _scan_targets(
        targets,
        options,
        json_lines=json_lines,
        failed=failed,
        limiter=LocalLimiter(global_limit=concurrency, per_ip=per_ip),
    )


async def _scan_targets(
    targets: Sequence[Target],
    options: ScanOptions,
    *,
    json_lines: bool,
    failed: Sequence[EndpointResult] = (),
    limiter: LocalLimiter | None = None,
) -> int:
    scanner = Scanner(options, limiter=limiter)
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


def demo(
    json_lines: Annotated[
        bool, typer.Option("--json", help="JSON Lines instead of the table")
    ] = False,
) -> None:
    """Start a local demo fleet of varied TLS servers on loopback and scan it.

    Nothing outside this machine is touched: the servers bind 127.77.0.x.
    """
    import tempfile

    from fleet.demo.fleet import demo_fleet
    from scanner.services import service_named

    with (
        tempfile.TemporaryDirectory(prefix="tlsfleet-demo-") as tmp,
        demo_fleet(Path(tmp)) as (ca_file, endpoints),
    ):
        err.print(f"Demo fleet: {len(endpoints)} local servers; scanning…")
        targets = [
            Target(
                host=e.name,
                ip=e.ip,
                port=e.port,
                service=e.service,
                tls_mode=service_named(e.service).tls_mode,
                sni=e.name,
            )
            for e in endpoints
        ]
        options = ScanOptions(timeout=5.0, ca_file=str(ca_file))
        code = run(_scan_targets(targets, options, json_lines=json_lines))
        if not json_lines:
            for e in endpoints:
                err.print(f"  {e.name} ({e.ip}:{e.port}): {e.story}", highlight=False)
    raise typer.Exit(code)
