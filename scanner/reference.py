"""sslyze as the reference: the same endpoint's protocols and suites, as sslyze sees them.

Used to cross-check our own probes (tests, ``bench/``). sslyze is threaded and blocking:
call :func:`sslyze_suites` from a worker thread or process, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scanner.models import Target
from scanner.services import SERVICES

__all__ = ["ReferenceResult", "sslyze_suites"]

_COMMANDS = {
    "SSLv2": ("SSL_2_0_CIPHER_SUITES", "ssl_2_0_cipher_suites"),
    "SSLv3": ("SSL_3_0_CIPHER_SUITES", "ssl_3_0_cipher_suites"),
    "TLSv1.0": ("TLS_1_0_CIPHER_SUITES", "tls_1_0_cipher_suites"),
    "TLSv1.1": ("TLS_1_1_CIPHER_SUITES", "tls_1_1_cipher_suites"),
    "TLSv1.2": ("TLS_1_2_CIPHER_SUITES", "tls_1_2_cipher_suites"),
    "TLSv1.3": ("TLS_1_3_CIPHER_SUITES", "tls_1_3_cipher_suites"),
}

_STARTTLS = {"smtp": "SMTP", "imap": "IMAP", "pop3": "POP3"}


@dataclass(frozen=True, slots=True)
class ReferenceResult:
    """What sslyze found for one endpoint: accepted suites per version, or its error."""

    target: Target
    #: IANA suite names per protocol version; a version sslyze found no suite for is [].
    suites: dict[str, list[str]]
    #: Names of the suites sslyze tested per version (it cannot test what it lacks).
    tested: dict[str, set[str]]
    error: str | None = None

    @property
    def protocols(self) -> dict[str, bool]:
        return {v: bool(names) for v, names in self.suites.items()}


def sslyze_suites(
    targets: Sequence[Target], *, per_server_limit: int = 5, timeout: int = 5
) -> list[ReferenceResult]:
    """Run sslyze's six cipher-suite commands on each target; results in input order."""
    from sslyze import (
        ProtocolWithOpportunisticTlsEnum,
        ScanCommand,
        Scanner,
        ServerNetworkConfiguration,
        ServerNetworkLocation,
        ServerScanRequest,
        ServerScanStatusEnum,
    )

    commands = {getattr(ScanCommand, cmd) for cmd, _ in _COMMANDS.values()}
    requests = []
    for t in targets:
        dialogue = SERVICES[t.service].dialogue if t.tls_mode == "starttls" else None
        starttls = ProtocolWithOpportunisticTlsEnum(_STARTTLS[dialogue]) if dialogue else None
        requests.append(
            ServerScanRequest(
                server_location=ServerNetworkLocation(
                    hostname=t.sni or t.host, port=t.port, ip_address=t.ip
                ),
                network_configuration=ServerNetworkConfiguration(
                    tls_server_name_indication=t.sni or t.host,
                    tls_opportunistic_encryption=starttls,
                    network_timeout=timeout,
                ),
                scan_commands=commands,
            )
        )
    scanner = Scanner(per_server_concurrent_connections_limit=per_server_limit)
    scanner.queue_scans(requests)
    by_key: dict[tuple[str, int], ReferenceResult] = {}
    for result in scanner.get_results():
        loc = result.server_location
        target = next(t for t in targets if (t.ip, t.port) == (loc.ip_address, loc.port))
        if result.scan_status != ServerScanStatusEnum.COMPLETED or result.scan_result is None:
            error = str(result.connectivity_error_trace or result.scan_status)
            by_key[(target.ip, target.port)] = ReferenceResult(target, {}, {}, error)
            continue
        suites: dict[str, list[str]] = {}
        tested: dict[str, set[str]] = {}
        errors: list[str] = []
        for version, (_, attr) in _COMMANDS.items():
            attempt: Any = getattr(result.scan_result, attr)
            if attempt.result is None:
                errors.append(f"{version}: {attempt.error_reason}")
                continue
            suites[version] = [a.cipher_suite.name for a in attempt.result.accepted_cipher_suites]
            tested[version] = {
                s.cipher_suite.name
                for s in (
                    *attempt.result.accepted_cipher_suites,
                    *attempt.result.rejected_cipher_suites,
                )
            }
        by_key[(target.ip, target.port)] = ReferenceResult(
            target, suites, tested, "; ".join(errors) or None
        )
    return [by_key[(t.ip, t.port)] for t in targets]
