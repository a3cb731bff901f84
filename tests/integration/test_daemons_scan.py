"""Scan every port of the real Postfix, Dovecot and nginx fleet; compare with sslyze.

Expectations come from the fleet's own profile table (``PROFILES``), which the smoke
tests prove against the running daemons with the standard library's clients.
"""

from __future__ import annotations

import asyncio

import pytest

from scanner.engine import Scanner, ScanOptions
from scanner.models import EndpointResult, Target
from scanner.reference import sslyze_suites
from scanner.services import service_named
from tests.integration.daemons import PROFILES, DaemonEndpoint, DaemonFleet
from tests.integration.daemons.fixtures import daemon_fleet
from tests.integration.test_sslyze_crosscheck import assert_agree

pytestmark = pytest.mark.daemons

__all__ = ["daemon_fleet"]

_VERSION_NAMES = {
    "TLSv1": "TLSv1.0",
    "TLSv1.1": "TLSv1.1",
    "TLSv1.2": "TLSv1.2",
    "TLSv1.3": "TLSv1.3",
}


def as_target(endpoint: DaemonEndpoint) -> Target:
    return Target(
        host=endpoint.hostname,
        ip=endpoint.ip,
        port=endpoint.port,
        service=endpoint.service,
        tls_mode=service_named(endpoint.service).tls_mode,
        sni=endpoint.hostname,
    )


@pytest.fixture(scope="module")
def scanned(daemon_fleet: DaemonFleet) -> dict[tuple[str, str], EndpointResult]:
    """One full scan of the whole fleet, shared by the checks below."""
    options = ScanOptions(
        timeout=5.0,
        ca_file=daemon_fleet.ca_file,
        source_address=daemon_fleet.client_address,
        backoff=0.2,
    )

    async def scan_all() -> list[EndpointResult]:
        scanner = Scanner(options)
        return [r async for r in scanner.scan_many(as_target(e) for e in daemon_fleet.endpoints)]

    results = asyncio.run(scan_all())
    by_key: dict[tuple[str, str], EndpointResult] = {}
    for endpoint in daemon_fleet.endpoints:
        (res,) = [
            r for r in results if (r.target.ip, r.target.port) == (endpoint.ip, endpoint.port)
        ]
        by_key[(endpoint.profile, endpoint.service)] = res
    return by_key


def test_every_endpoint_is_scanned_cleanly(
    daemon_fleet: DaemonFleet, scanned: dict[tuple[str, str], EndpointResult]
) -> None:
    for endpoint in daemon_fleet.endpoints:
        res = scanned[(endpoint.profile, endpoint.service)]
        assert res.status == "ok", (endpoint, res.error)
        assert res.partial_errors == [], (endpoint, res.partial_errors)


def test_protocols_match_the_profiles(
    daemon_fleet: DaemonFleet, scanned: dict[tuple[str, str], EndpointResult]
) -> None:
    for endpoint in daemon_fleet.endpoints:
        spec = PROFILES[endpoint.profile]
        res = scanned[(endpoint.profile, endpoint.service)]
        accepted = {v for v, ok in res.protocols.items() if ok}
        assert accepted == {_VERSION_NAMES[v] for v in spec.tls_versions}, endpoint
        assert res.protocols["SSLv2"] is False
        assert res.protocols["SSLv3"] is False
        assert res.server_preference is spec.server_preference, endpoint


def test_certificates_are_valid_for_the_name(
    daemon_fleet: DaemonFleet, scanned: dict[tuple[str, str], EndpointResult]
) -> None:
    for endpoint in daemon_fleet.endpoints:
        cert = scanned[(endpoint.profile, endpoint.service)].certificate
        assert cert is not None, endpoint
        assert cert.status == "valid", (endpoint, cert.verify_message)
        assert endpoint.hostname in cert.san


def test_starttls_and_passwords_before_tls(
    daemon_fleet: DaemonFleet, scanned: dict[tuple[str, str], EndpointResult]
) -> None:
    for endpoint in daemon_fleet.endpoints:
        spec = PROFILES[endpoint.profile]
        res = scanned[(endpoint.profile, endpoint.service)]
        if endpoint.service == "https":
            assert res.auth is None
            continue
        assert res.auth is not None, endpoint
        assert "PLAIN" in res.auth.after_tls, endpoint
        if endpoint.tls_mode == "starttls":
            assert res.starttls is not None
            assert res.starttls.offered, endpoint
            assert res.starttls.injection_vulnerable is False, endpoint
            assert res.auth.plaintext_before_tls is spec.auth_before_tls, endpoint
        else:
            assert res.starttls is None
            assert res.auth.before_tls == ()
            assert res.auth.plaintext_before_tls is False


def test_imap_login_disabled_before_tls_only_in_modern(
    scanned: dict[tuple[str, str], EndpointResult],
) -> None:
    legacy, modern = scanned[("legacy", "imap")].auth, scanned[("modern", "imap")].auth
    assert legacy is not None
    assert modern is not None
    assert "IMAP-LOGIN" in legacy.before_tls
    assert "IMAP-LOGIN" not in modern.before_tls
    assert "IMAP-LOGIN" in modern.after_tls


def test_protocols_and_suites_agree_with_sslyze(
    daemon_fleet: DaemonFleet, scanned: dict[tuple[str, str], EndpointResult]
) -> None:
    # sslyze runs over the same endpoints, 5 connections at a time per server.
    targets = [as_target(e) for e in daemon_fleet.endpoints]
    for ref in sslyze_suites(targets):
        endpoint = next(
            e for e in daemon_fleet.endpoints if (e.ip, e.port) == (ref.target.ip, ref.target.port)
        )
        assert_agree(scanned[(endpoint.profile, endpoint.service)], ref)


@pytest.mark.parametrize(
    ("profile", "outcome", "plaintext"),
    [("legacy", "accepted", True), ("modern", None, False)],
)
async def test_active_login_check_on_submission(
    daemon_fleet: DaemonFleet, profile: str, outcome: str | None, plaintext: bool
) -> None:
    endpoint = next(
        e for e in daemon_fleet.endpoints if (e.profile, e.service) == (profile, "submission")
    )
    options = ScanOptions(
        timeout=5.0,
        source_address=daemon_fleet.client_address,
        auth_check=True,
        certificate=False,
        ciphers=False,
        groups=False,
        injection_check=False,
    )
    res = await Scanner(options).scan(as_target(endpoint))
    assert res.auth is not None
    assert res.auth.active_check == outcome
    assert res.auth.plaintext_before_tls is plaintext


async def test_quick_scan_stays_within_the_connection_budget(daemon_fleet: DaemonFleet) -> None:
    # Dovecot refuses versions by hanging up without an alert: that must not be taken
    # for a stack that chokes on long hellos (which would cost extra connections).
    options = ScanOptions(timeout=5.0, source_address=daemon_fleet.client_address).quick
    scanner = Scanner(options)
    results = [r async for r in scanner.scan_many(as_target(e) for e in daemon_fleet.endpoints)]
    for res in results:
        accepted = sum(len(v) for v in res.cipher_suites.values())
        assert res.status == "ok", res.error
        assert res.connections <= accepted + 6 + 3, (res.target, res.connections, accepted)
