"""Deep checks on the real Postfix, Dovecot and nginx fleet, STARTTLS included.

Every STARTTLS endpoint (SMTP, submission, IMAP, POP3) and nginx's HTTPS, in both
profiles, through the process pool; the oracle is sslyze run directly on each endpoint
with the same commands (``assert_matches_sslyze``), and the fleet's profile table.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from sslyze import AllScanCommandsAttempts

from scanner.deep import DeepChecker, DeepChecks, DeepOptions, SupportCheck, VulnerabilityCheck
from scanner.models import Target
from scanner.services import service_named
from tests.integration.daemons import PROFILES, DaemonEndpoint, DaemonFleet
from tests.integration.daemons.fixtures import daemon_fleet
from tests.integration.test_deep import assert_matches_sslyze, sslyze_directly

pytestmark = [
    pytest.mark.daemons,
    pytest.mark.sslyze,
    pytest.mark.filterwarnings(
        "ignore:Parsed a serial number:cryptography.utils.CryptographyDeprecationWarning"
    ),
]

__all__ = ["daemon_fleet"]

_SERVICES = ("smtp", "submission", "imap", "pop3", "https")
_EHLO = "deep.tlsfleet.test"

Key = tuple[str, str]


def as_target(endpoint: DaemonEndpoint) -> Target:
    return Target(
        host=endpoint.hostname,
        ip=endpoint.ip,
        port=endpoint.port,
        service=endpoint.service,
        tls_mode=service_named(endpoint.service).tls_mode,
        sni=endpoint.hostname,
    )


def checked_endpoints(fleet: DaemonFleet) -> list[DaemonEndpoint]:
    return [e for e in fleet.endpoints if e.service in _SERVICES]


@pytest.fixture(scope="module")
def deep(daemon_fleet: DaemonFleet) -> dict[Key, DeepChecks]:
    """The deep checks of every checked endpoint, through one checker."""
    endpoints = checked_endpoints(daemon_fleet)
    options = DeepOptions(ca_file=daemon_fleet.ca_file, ehlo_name=_EHLO)

    async def check_all() -> list[DeepChecks]:
        async with DeepChecker(options, max_workers=2) as checker:
            return await asyncio.gather(*(checker.check(as_target(e)) for e in endpoints))

    results = asyncio.run(check_all())
    return {(e.profile, e.service): r for e, r in zip(endpoints, results, strict=True)}


@pytest.fixture(scope="module")
def direct(daemon_fleet: DaemonFleet) -> dict[Key, AllScanCommandsAttempts]:
    """sslyze's own results for the same endpoints, two endpoints at a time."""
    endpoints = checked_endpoints(daemon_fleet)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(
            pool.map(
                lambda e: sslyze_directly(
                    as_target(e), ca_file=daemon_fleet.ca_file, ehlo_name=_EHLO
                ),
                endpoints,
            )
        )
    return {(e.profile, e.service): r for e, r in zip(endpoints, results, strict=True)}


def test_starttls_and_https_endpoints_agree_with_sslyze(
    daemon_fleet: DaemonFleet,
    deep: dict[Key, DeepChecks],
    direct: dict[Key, AllScanCommandsAttempts],
) -> None:
    for endpoint in checked_endpoints(daemon_fleet):
        key = (endpoint.profile, endpoint.service)
        assert_matches_sslyze(deep[key], direct[key])


def test_findings_follow_the_profiles(
    daemon_fleet: DaemonFleet, deep: dict[Key, DeepChecks]
) -> None:
    for endpoint in checked_endpoints(daemon_fleet):
        result = deep[(endpoint.profile, endpoint.service)]
        assert result.heartbleed == VulnerabilityCheck(False), endpoint
        assert result.ccs_injection == VulnerabilityCheck(False), endpoint
        assert result.compression == SupportCheck(False), endpoint
        assert result.renegotiation is not None
        assert result.renegotiation.secure_renegotiation is True, endpoint
        # The legacy profile offers RSA key exchange, the modern one only ECDHE.
        assert result.robot is not None
        rsa_kex = PROFILES[endpoint.profile].name == "legacy"
        expected = "NOT_VULNERABLE_NO_ORACLE" if rsa_kex else "NOT_VULNERABLE_RSA_NOT_SUPPORTED"
        assert result.robot.result == expected, endpoint


def test_certificates_are_the_fleets_and_checked_against_every_store(
    daemon_fleet: DaemonFleet, deep: dict[Key, DeepChecks]
) -> None:
    for endpoint in checked_endpoints(daemon_fleet):
        certificate = deep[(endpoint.profile, endpoint.service)].certificate
        assert certificate is not None
        assert certificate.sni == endpoint.hostname
        (deployment,) = certificate.deployments
        assert f"CN={endpoint.hostname}" in deployment.subject, endpoint
        stores = [v.store for v in deployment.trust]
        assert stores == ["mozilla", "apple", "microsoft", "android", "java", "custom"]
        # A private test CA: no public store trusts it. (The custom store does not
        # either: trustme marks subjectAltName critical next to a non-empty subject,
        # which sslyze's RFC 5280 verifier rejects; see test_deep.py for a chain it
        # accepts.)
        assert not any(v.trusted for v in deployment.trust), endpoint
