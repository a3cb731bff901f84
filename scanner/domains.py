"""Scanning domains: discover → plan (each endpoint once) → scan → fan out per domain.

Thousands of hosted domains share a few MX clusters, so every (ip, port, service) is
scanned once and its result shared by every domain that uses it; certificates are
fetched once per (ip, port, SNI name). Domain documents stream out as soon as all of
their endpoints are done.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field, replace

from scanner.discovery import (
    EndpointKey,
    EndpointPlan,
    PortProfile,
    discover,
    endpoint_key,
    normalise_domain,
    plan_endpoints,
)
from scanner.dns import Resolver
from scanner.engine import Scanner
from scanner.errors import PrivateTargetError, TargetError
from scanner.models import (
    CertificateInfo,
    Discovery,
    DomainResult,
    EndpointResult,
    ErrorInfo,
    Target,
)
from scanner.services import service_named

__all__ = [
    "DISCOVERIES_IN_FLIGHT",
    "DomainProgress",
    "domain_result",
    "invalid_domain",
    "scan_domains",
]

#: Domains discovered at once (see fleet.sweeps for what unbounded fan-out did).
DISCOVERIES_IN_FLIGHT = 200


@dataclass(slots=True)
class DomainProgress:
    """Counters a caller can show while :func:`scan_domains` runs."""

    domains: int = 0
    discovered: int = 0
    endpoints: int = 0
    endpoints_done: int = 0
    certificates: int = 0
    certificates_done: int = 0
    domains_done: int = 0
    on_change: Callable[[DomainProgress], None] | None = field(default=None, repr=False)

    def changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)


def invalid_domain(name: str, exc: TargetError) -> DomainResult:
    """The document of a domain name that cannot be scanned at all."""
    error = ErrorInfo(kind=exc.kind, phase=exc.phase, message=exc.message)
    discovery = Discovery(domain=name, status="error", errors=(error,))
    return DomainResult(domain=name, discovery=discovery)


async def scan_domains(
    domains: Iterable[str],
    *,
    resolver: Resolver,
    scanner: Scanner,
    profile: PortProfile | None = None,
    allow_private: bool = False,
    progress: DomainProgress | None = None,
) -> AsyncIterator[DomainResult]:
    """Scan every domain's mail and web endpoints; yield one document per domain.

    Invalid names come back first, as documents with an ``invalid_target`` error.
    Endpoints on private addresses are refused unless ``allow_private`` (they appear as
    ``private_target`` errors in the documents of the domains that use them).
    """
    progress = progress or DomainProgress()
    names: dict[str, None] = {}
    for raw in domains:
        try:
            names[normalise_domain(raw)] = None
        except TargetError as exc:
            yield invalid_domain(raw.strip(), exc)
    progress.domains = len(names)
    progress.changed()

    slots = asyncio.Semaphore(DISCOVERIES_IN_FLIGHT)
    profile = profile or PortProfile()

    async def discovered(name: str) -> Discovery:
        async with slots:  # thousands at once would stall the loop into DNS timeouts
            found = await discover(name, resolver, **profile.looks_up)
        progress.discovered += 1
        progress.changed()
        return found

    discoveries = await asyncio.gather(*(discovered(n) for n in names))
    plan = plan_endpoints(discoveries, profile, allow_private=allow_private)
    async for document in _scan_plan(plan, scanner, progress):
        yield document


async def _scan_plan(
    plan: EndpointPlan, scanner: Scanner, progress: DomainProgress
) -> AsyncIterator[DomainResult]:
    results: dict[EndpointKey, EndpointResult] = {}
    certificates: dict[tuple[EndpointKey, str], CertificateInfo | None] = {}
    # What each domain still waits for: endpoint keys and (key, name) certificates.
    waiting: dict[str, set[object]] = {}
    waiters: dict[object, list[str]] = {}
    jobs: list[asyncio.Task[tuple[object, object]]] = []

    async def scan_one(key: EndpointKey) -> tuple[object, object]:
        return key, await scanner.scan(plan.target(key))

    async def cert_one(key: EndpointKey, name: str) -> tuple[object, object]:
        target = replace(plan.target(key), host=name, sni=name)
        return (key, name), await scanner.certificate(target)

    for target in plan.targets:
        key = endpoint_key(target)
        jobs.append(asyncio.ensure_future(scan_one(key)))
        progress.endpoints += 1
        if scanner.options.certificate:
            for name in sorted(plan.cert_names(key) - {target.sni or ""}):
                jobs.append(asyncio.ensure_future(cert_one(key, name)))
                progress.certificates += 1
    for discovery in plan.discoveries:
        needs: set[object] = set()
        for key, host in plan.endpoints(discovery.domain).items():
            if key in plan.rejected:
                continue
            needs.add(key)
            if scanner.options.certificate and host != plan.target(key).sni:
                needs.add((key, host))
        waiting[discovery.domain] = needs
        for need in needs:
            waiters.setdefault(need, []).append(discovery.domain)
    by_domain = {d.domain: d for d in plan.discoveries}
    progress.changed()

    def finished(domain: str) -> DomainResult:
        progress.domains_done += 1
        progress.changed()
        return domain_result(plan, by_domain[domain], results, certificates=certificates)

    for domain, needs in waiting.items():
        if not needs:
            yield finished(domain)
    try:
        for next_done in asyncio.as_completed(jobs):
            done_key, value = await next_done
            if isinstance(value, EndpointResult):
                assert isinstance(done_key, EndpointKey)
                results[done_key] = value
                progress.endpoints_done += 1
            else:
                assert isinstance(done_key, tuple)
                assert len(done_key) == 2
                assert value is None or isinstance(value, CertificateInfo)
                certificates[done_key] = value
                progress.certificates_done += 1
            progress.changed()
            for domain in waiters.pop(done_key, []):
                needs = waiting[domain]
                needs.discard(done_key)
                if not needs:
                    yield finished(domain)
    finally:
        for job in jobs:
            job.cancel()


def domain_result(
    plan: EndpointPlan,
    discovery: Discovery,
    results: dict[EndpointKey, EndpointResult],
    *,
    certificates: dict[tuple[EndpointKey, str], CertificateInfo | None],
) -> DomainResult:
    """One domain's document from the shared endpoint results.

    Where the domain reaches an endpoint under another name than the one it was scanned
    under, its copy carries that name and the certificate fetched for it (None when
    that handshake failed).
    """
    endpoints: list[EndpointResult] = []
    for key, host in plan.endpoints(discovery.domain).items():
        if key in plan.rejected:
            service = service_named(key.service)
            target = Target(host, key.ip, key.port, service.name, service.tls_mode, host)
            exc = PrivateTargetError(f"{host} ({key.ip}): {plan.rejected[key]}", phase="plan")
            error = ErrorInfo(kind=exc.kind, phase=exc.phase, message=exc.message)
            endpoints.append(EndpointResult(target=target, status="error", error=error))
            continue
        result = results[key]
        if host != result.target.sni and (key, host) in certificates:
            result = replace(
                result,
                target=replace(result.target, host=host, sni=host),
                certificate=certificates[(key, host)],
            )
        endpoints.append(result)
    return DomainResult(discovery.domain, discovery, tuple(endpoints))
