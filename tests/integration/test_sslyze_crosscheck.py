"""Cross-check: on the same real servers, our protocols and suites equal sslyze's."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from scanner.engine import Scanner, ScanOptions
from scanner.models import PROTOCOLS, EndpointResult, Target
from scanner.reference import ReferenceResult, sslyze_suites
from tests.integration.servers import (
    LEGACY,
    MODERN,
    OLD_ONLY,
    Pki,
    SmtpBehaviour,
    SmtpServer,
    TlsServer,
    running,
)

pytestmark = pytest.mark.sslyze


def assert_agree(ours: EndpointResult, ref: ReferenceResult) -> None:
    """Same accepted versions; per version, the same suites among those sslyze can test."""
    assert ours.status == "ok", ours.error
    assert ref.error is None, ref.error
    for version in PROTOCOLS:
        assert ours.protocols[version] == ref.protocols[version], version
        ours_names = set(ours.cipher_suites.get(version, []))
        assert ours_names & ref.tested[version] == set(ref.suites[version]), version
        # Whatever we found beyond sslyze, sslyze could not test it (not a disagreement).
        assert not (ours_names - set(ref.suites[version])) & ref.tested[version]


async def scan_both(target: Target) -> tuple[EndpointResult, ReferenceResult]:
    ours = await Scanner(ScanOptions(timeout=5.0).quick).scan(target)
    (ref,) = await asyncio.to_thread(sslyze_suites, [target])
    return ours, ref


@pytest.mark.parametrize(
    "profile",
    [
        MODERN,
        LEGACY,
        OLD_ONLY,
        replace(LEGACY, server_preference=False),
        replace(LEGACY, ciphers="kRSA:@SECLEVEL=0", ec_key=False),
        replace(
            MODERN, ec_key=True, ciphers="aECDSA+ECDHE:@SECLEVEL=0", min_version=LEGACY.min_version
        ),
    ],
    ids=["modern", "legacy", "old-only", "legacy-client-order", "rsa-kex-only", "ecdsa"],
)
async def test_implicit_tls_agrees_with_sslyze(pki: Pki, profile: object) -> None:
    assert isinstance(profile, type(MODERN))
    with running(TlsServer(pki.server_context(profile), ip="127.0.31.1")) as server:
        target = Target("tls.test", server.ip, server.port, "https", "implicit", "tls.test")
        ours, ref = await scan_both(target)
    assert_agree(ours, ref)


async def test_smtp_starttls_agrees_with_sslyze(pki: Pki) -> None:
    ctx = pki.server_context(replace(LEGACY, hostnames=("mail.test",)))
    with running(SmtpServer(ctx, SmtpBehaviour(), ip="127.0.31.2")) as server:
        target = Target("mail.test", server.ip, server.port, "smtp", "starttls", "mail.test")
        ours, ref = await scan_both(target)
    assert_agree(ours, ref)
