"""Deep checks (sslyze in a recycled process pool) against real local TLS servers.

The oracle is sslyze itself, run directly in the test on the same server with the same
commands: every mapped field must equal what the plain sslyze API reports. The profile
expectations on top (ROBOT verdicts, tickets, client renegotiation) show the servers
really differ, so agreement is not agreement on nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sslyze import (
    AllScanCommandsAttempts,
    CertificateDeploymentAnalysisResult,
    CertificateInfoExtraArgument,
    ProtocolWithOpportunisticTlsEnum,
    ScanCommand,
    ScanCommandAttempt,
    ScanCommandsExtraArguments,
    Scanner,
    ServerNetworkConfiguration,
    ServerNetworkLocation,
    ServerScanRequest,
    ServerScanStatusEnum,
)

from scanner.deep import (
    ALL_CHECKS,
    DeepChecker,
    DeepChecks,
    DeepOptions,
    RenegotiationCheck,
    ResumptionRate,
    RobotCheck,
    SupportCheck,
    VulnerabilityCheck,
    run_deep_checks,
)
from scanner.models import EndpointResult, Target
from scanner.services import TlsMode
from tests.integration.servers import (
    LEGACY,
    MODERN,
    BaseServer,
    Pki,
    SmtpBehaviour,
    SmtpServer,
    TlsProfile,
    TlsServer,
    running,
)
from tests.ports import free_port

pytestmark = [
    pytest.mark.sslyze,
    # sslyze's bundled trust stores hold a root with a non-positive serial number; the
    # direct sslyze runs below load them in this process.
    pytest.mark.filterwarnings(
        "ignore:Parsed a serial number:cryptography.utils.CryptographyDeprecationWarning"
    ),
]

_R = TypeVar("_R")

# OpenSSL 3 refuses client-initiated renegotiation unless the server sets this option
# (SSL_OP_ALLOW_CLIENT_RENEGOTIATION), which Python's ssl module does not name.
_OP_ALLOW_CLIENT_RENEGOTIATION = 1 << 8

# sslyze's trust store names, as the document spells them (an independent table).
_STORE_KEYS = {
    "Mozilla": "mozilla",
    "Apple": "apple",
    "Windows": "microsoft",
    "Android": "android",
    "Java": "java",
    "Supplied CA file": "custom",
}

_SSLYZE_STARTTLS = {"smtp": "SMTP", "submission": "SMTP", "imap": "IMAP", "pop3": "POP3"}


# -- the oracle: sslyze, straight ----------------------------------------------------------


def sslyze_directly(
    target: Target, *, ca_file: str | None = None, ehlo_name: str = "tlsfleet.invalid"
) -> AllScanCommandsAttempts:
    """Every command the deep checks use, through the plain sslyze API."""
    starttls = None
    if target.tls_mode == "starttls":
        starttls = ProtocolWithOpportunisticTlsEnum(_SSLYZE_STARTTLS[target.service])
    sni = target.sni or target.host
    extra = ScanCommandsExtraArguments()
    if ca_file:
        extra = ScanCommandsExtraArguments(
            certificate_info=CertificateInfoExtraArgument(custom_ca_file=Path(ca_file))
        )
    request = ServerScanRequest(
        server_location=ServerNetworkLocation(sni, target.port, target.ip),
        network_configuration=ServerNetworkConfiguration(
            tls_server_name_indication=sni,
            tls_opportunistic_encryption=starttls,
            smtp_ehlo_hostname=ehlo_name
            if starttls == ProtocolWithOpportunisticTlsEnum.SMTP
            else None,
        ),
        scan_commands={
            ScanCommand.HEARTBLEED,
            ScanCommand.OPENSSL_CCS_INJECTION,
            ScanCommand.ROBOT,
            ScanCommand.SESSION_RENEGOTIATION,
            ScanCommand.TLS_COMPRESSION,
            ScanCommand.TLS_FALLBACK_SCSV,
            ScanCommand.SESSION_RESUMPTION,
            ScanCommand.CERTIFICATE_INFO,
        },
        scan_commands_extra_arguments=extra,
    )
    scanner = Scanner(per_server_concurrent_connections_limit=2)
    scanner.queue_scans([request])
    (result,) = list(scanner.get_results())
    assert result.scan_status == ServerScanStatusEnum.COMPLETED, result.connectivity_error_trace
    assert result.scan_result is not None
    return result.scan_result


def _trust(deployment: CertificateDeploymentAnalysisResult) -> dict[str, tuple[bool, str | None]]:
    return {
        _STORE_KEYS[p.trust_store.name]: (p.was_validation_successful, p.validation_error)
        for p in deployment.path_validation_results
    }


def _leaf(deployment: CertificateDeploymentAnalysisResult) -> tuple[str, str, int]:
    chain = deployment.received_certificate_chain
    return (
        chain[0].subject.rfc4514_string(),
        chain[0].fingerprint(hashes.SHA256()).hex(),
        len(chain),
    )


def result_of(attempt: ScanCommandAttempt[_R]) -> _R:
    assert attempt.result is not None, attempt.error_trace
    return attempt.result


def _resumes(verdict: str) -> bool:
    return verdict in ("FULLY_SUPPORTED", "PARTIALLY_SUPPORTED")


def assert_matches_sslyze(deep: DeepChecks, raw: AllScanCommandsAttempts) -> None:
    """Every field of ``deep`` says what sslyze's own result objects say."""
    assert deep.status == "ok", deep.to_dict()
    hb, ccs = result_of(raw.heartbleed), result_of(raw.openssl_ccs_injection)
    robot, reneg = result_of(raw.robot), result_of(raw.session_renegotiation)
    comp, scsv = result_of(raw.tls_compression), result_of(raw.tls_fallback_scsv)
    res, cert = result_of(raw.session_resumption), result_of(raw.certificate_info)
    assert deep.heartbleed == VulnerabilityCheck(hb.is_vulnerable_to_heartbleed)
    assert deep.ccs_injection == VulnerabilityCheck(ccs.is_vulnerable_to_ccs_injection)
    assert deep.robot == RobotCheck(robot.robot_result.value)
    assert deep.renegotiation == RenegotiationCheck(
        reneg.supports_secure_renegotiation,
        reneg.is_vulnerable_to_client_renegotiation_dos,
        reneg.client_renegotiations_success_count,
    )
    assert deep.compression == SupportCheck(comp.supports_compression)
    assert deep.fallback_scsv == SupportCheck(scsv.supports_fallback_scsv)
    # Session-ID resumption depends on the server's session cache and on timing, so two
    # runs (ours and sslyze's) may resume 4 or 5 of 5: compare what the verdict means.
    resumption = deep.session_resumption
    assert resumption is not None
    assert resumption.session_id is not None
    assert resumption.session_id.attempted == res.session_id_attempted_resumptions_count
    assert _resumes(resumption.session_id.result) == _resumes(
        res.session_id_resumption_result.value
    )
    assert resumption.tls_ticket == ResumptionRate(
        res.tls_ticket_resumption_result.value,
        res.tls_ticket_attempted_resumptions_count,
        res.tls_ticket_successful_resumptions_count,
    )
    assert deep.certificate is not None
    assert deep.certificate.sni == cert.hostname_used_for_server_name_indication
    ours = deep.certificate.deployments
    assert [(d.subject, d.fingerprint_sha256, d.chain_length) for d in ours] == [
        _leaf(d) for d in cert.certificate_deployments
    ]
    for mine, theirs in zip(ours, cert.certificate_deployments, strict=True):
        assert {v.store: (v.trusted, v.error) for v in mine.trust} == _trust(theirs)
        assert mine.extended_validation == theirs.leaf_certificate_is_ev
        assert mine.ocsp_must_staple == theirs.leaf_certificate_has_must_staple_extension
        assert mine.sct_count == theirs.leaf_certificate_signed_certificate_timestamps_count
        assert mine.ocsp_stapled == (theirs.ocsp_response is not None)
        assert mine.chain_order_valid == theirs.received_chain_has_valid_order
        assert mine.chain_has_sha1_signature == theirs.verified_chain_has_sha1_signature
    no_sni = cert.certificate_deployment_with_sni_disabled
    if no_sni is None:
        assert deep.certificate.without_sni is None
    else:
        assert deep.certificate.without_sni is not None
        assert deep.certificate.without_sni.fingerprint_sha256 == _leaf(no_sni)[1]


# -- servers of our own ----------------------------------------------------------------------


@dataclass(frozen=True)
class OwnPki:
    """A CA and leaf that a strict RFC 5280 verifier (sslyze's) accepts.

    trustme's leaves carry a critical subjectAltName next to a non-empty subject, which
    sslyze's verifier (cryptography's) rejects whatever the trust store.
    """

    ca_file: str
    chain_file: str
    key_file: str
    fingerprint: str

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.chain_file, self.key_file)
        return ctx


@pytest.fixture(scope="module")
def own_pki(tmp_path_factory: pytest.TempPathFactory) -> OwnPki:
    directory = tmp_path_factory.mktemp("own-pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key, leaf_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tlsfleet deep test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tls.test")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("tls.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_file, chain_file, key_file = (directory / n for n in ("ca.pem", "chain.pem", "key.pem"))
    ca_file.write_bytes(ca.public_bytes(pem))
    chain_file.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    key_file.write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return OwnPki(
        str(ca_file), str(chain_file), str(key_file), leaf.fingerprint(hashes.SHA256()).hex()
    )


def serve_until_client_leaves(tls: ssl.SSLSocket) -> None:
    """Serve TLS until the client closes, then send close_notify.

    With ``OP_IGNORE_UNEXPECTED_EOF`` on the context, a client that just closes its
    socket (sslyze does) ends the session cleanly, and our close_notify keeps it in
    OpenSSL's cache. Otherwise OpenSSL drops the session, racing sslyze's next
    connection, and session-ID resumption comes out differently from run to run.
    """
    with contextlib.suppress(OSError):
        while tls.recv(4096):  # renegotiations happen in here
            pass
    with contextlib.suppress(OSError):
        tls.unwrap()


class TidyTlsServer(BaseServer):
    """Implicit TLS whose answers do not depend on timing (see serve_until_client_leaves)."""

    def __init__(self, ctx: ssl.SSLContext, ip: str) -> None:
        super().__init__(ip)
        self.ctx = ctx
        ctx.options |= ssl.OP_IGNORE_UNEXPECTED_EOF

    def handle(self, conn: socket.socket) -> None:
        tls = self.adopt(
            self.ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        )
        tls.do_handshake()
        serve_until_client_leaves(tls)


class RecordingSmtpServer(BaseServer):
    """SMTP with STARTTLS that records the EHLO names and SNI names it is sent."""

    def __init__(self, ctx: ssl.SSLContext, ip: str) -> None:
        super().__init__(ip)
        self.ctx = ctx
        self.ehlo_names: list[str] = []
        self.sni_names: list[str] = []
        ctx.sni_callback = self._note_sni
        ctx.options |= ssl.OP_IGNORE_UNEXPECTED_EOF

    def _note_sni(self, _sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        if name is not None:
            self.sni_names.append(name)

    def handle(self, conn: socket.socket) -> None:
        conn.sendall(b"220 mail.test ESMTP recording\r\n")
        reader = conn.makefile("rb")
        while line := reader.readline(4096):
            verb, _, argument = line.strip().partition(b" ")
            if verb.upper() in (b"EHLO", b"HELO"):
                self.ehlo_names.append(argument.decode())
                conn.sendall(b"250-mail.test\r\n250 STARTTLS\r\n")
            elif verb.upper() == b"STARTTLS":
                conn.sendall(b"220 2.0.0 Ready to start TLS\r\n")
                reader.close()
                tls = self.adopt(
                    self.ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
                )
                tls.do_handshake()
                serve_until_client_leaves(tls)
                return
            else:
                conn.sendall(b"502 5.5.2 Error: command not recognized\r\n")


class TricklingServer(BaseServer):
    """Answers a ClientHello with a 16 KiB handshake record, one byte at a time.

    Each byte arrives well within any socket timeout, so a TLS client hangs for hours:
    the kind of server only a wall-clock limit can end.
    """

    def handle(self, conn: socket.socket) -> None:
        conn.recv(4096)
        conn.sendall(bytes([0x16, 0x03, 0x03, 0x40, 0x00]))
        while True:
            conn.sendall(b"\x02")
            time.sleep(0.2)


class GatedSmtpServer(SmtpServer):
    """An SMTP server whose greeting waits until the test opens the gate."""

    def __init__(self, ctx: ssl.SSLContext, ip: str) -> None:
        super().__init__(ctx, SmtpBehaviour(), ip=ip)
        self.gate = threading.Event()
        self.arrived = threading.Event()

    def handle(self, conn: socket.socket) -> None:
        self.arrived.set()
        self.gate.wait(timeout=30)
        super().handle(conn)


@contextlib.contextmanager
def modern_servers(pki: Pki, ips: list[str]) -> Iterator[list[BaseServer]]:
    """One modern TLS server per address, for the duration of a ``with`` block."""
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(running(TlsServer(pki.server_context(MODERN), ip=ip))) for ip in ips
        ]


def tls_target(server: BaseServer, name: str = "tls.test", service: str = "https") -> Target:
    mode: TlsMode = "starttls" if service in ("smtp", "submission", "imap", "pop3") else "implicit"
    return Target(name, server.ip, server.port, service, mode, name)


def context(pki: Pki, profile: TlsProfile, *, options: int = 0) -> ssl.SSLContext:
    ctx = pki.server_context(profile)
    ctx.options |= options
    return ctx


@pytest.fixture
def quick() -> DeepOptions:
    """One cheap check, for tests about the pool rather than about TLS."""
    return DeepOptions(checks=("compression",), network_timeout=5)


# -- agreement with sslyze -------------------------------------------------------------------

_PROFILES = {
    # name: (profile, extra OpenSSL options, expected ROBOT verdict, tickets, client reneg)
    "modern": (MODERN, 0, "NOT_VULNERABLE_RSA_NOT_SUPPORTED", "FULLY_SUPPORTED", False),
    "legacy": (LEGACY, 0, "NOT_VULNERABLE_NO_ORACLE", "FULLY_SUPPORTED", False),
    "legacy-no-tickets": (
        LEGACY,
        ssl.OP_NO_TICKET,
        "NOT_VULNERABLE_NO_ORACLE",
        "NOT_SUPPORTED",
        False,
    ),
    "legacy-client-renegotiation": (
        LEGACY,
        _OP_ALLOW_CLIENT_RENEGOTIATION,
        "NOT_VULNERABLE_NO_ORACLE",
        "FULLY_SUPPORTED",
        True,
    ),
    "tls13-only": (
        replace(MODERN, min_version=ssl.TLSVersion.TLSv1_3),
        0,
        "NOT_VULNERABLE_RSA_NOT_SUPPORTED",
        "SERVER_IS_TLS_1_3_ONLY",
        False,
    ),
}


@pytest.mark.parametrize("name", list(_PROFILES))
async def test_implicit_tls_agrees_with_sslyze(pki: Pki, name: str) -> None:
    profile, extra, robot, tickets, client_reneg = _PROFILES[name]
    with running(TidyTlsServer(context(pki, profile, options=extra), ip="127.0.41.1")) as server:
        target = tls_target(server)
        async with DeepChecker(DeepOptions(ca_file=pki.ca_file)) as checker:
            deep = await checker.check(target)
        raw = await asyncio.to_thread(sslyze_directly, target, ca_file=pki.ca_file)

    assert_matches_sslyze(deep, raw)
    assert deep.heartbleed == VulnerabilityCheck(False)
    assert deep.ccs_injection == VulnerabilityCheck(False)
    assert deep.compression == SupportCheck(False)
    assert deep.robot is not None
    assert deep.robot.result == robot
    assert deep.robot.vulnerable is False
    assert deep.session_resumption is not None
    assert deep.session_resumption.tls_ticket is not None
    assert deep.session_resumption.tls_ticket.result == tickets
    assert deep.session_resumption.session_id is not None
    session_ids = "SERVER_IS_TLS_1_3_ONLY" if name == "tls13-only" else "FULLY_SUPPORTED"
    assert deep.session_resumption.session_id.result == session_ids
    assert deep.renegotiation is not None
    assert deep.renegotiation.client_renegotiation_dos is client_reneg
    # The custom store (our --ca-file) is listed next to sslyze's five.
    assert deep.certificate is not None
    stores = [v.store for v in deep.certificate.deployments[0].trust]
    assert stores == ["mozilla", "apple", "microsoft", "android", "java", "custom"]


async def test_custom_ca_file_makes_the_chain_trusted(own_pki: OwnPki) -> None:
    with running(TidyTlsServer(own_pki.server_context(), ip="127.0.41.2")) as server:
        target = tls_target(server)
        async with DeepChecker(DeepOptions(ca_file=own_pki.ca_file)) as checker:
            deep = await checker.check(target)
        raw = await asyncio.to_thread(sslyze_directly, target, ca_file=own_pki.ca_file)

    assert_matches_sslyze(deep, raw)
    assert deep.certificate is not None
    (deployment,) = deep.certificate.deployments
    assert deployment.fingerprint_sha256 == own_pki.fingerprint
    assert deployment.chain_length == 2
    verdicts = {v.store: v for v in deployment.trust}
    assert verdicts["custom"].trusted is True
    assert verdicts["custom"].error is None
    for store in ("mozilla", "apple", "microsoft", "android", "java"):
        assert verdicts[store].trusted is False
        assert verdicts[store].error, store


async def test_smtp_starttls_sends_sni_and_ehlo_name_and_agrees_with_sslyze(pki: Pki) -> None:
    ehlo = "deep.tlsfleet.test"
    ctx = context(pki, replace(LEGACY, hostnames=("mail.test",)))
    with running(RecordingSmtpServer(ctx, ip="127.0.41.3")) as server:
        assert isinstance(server, RecordingSmtpServer)
        target = tls_target(server, "mail.test", "submission")
        async with DeepChecker(DeepOptions(ca_file=pki.ca_file, ehlo_name=ehlo)) as checker:
            deep = await checker.check(target)
        ours_ehlo, ours_sni = set(server.ehlo_names), set(server.sni_names)
        raw = await asyncio.to_thread(sslyze_directly, target, ca_file=pki.ca_file, ehlo_name=ehlo)

    assert_matches_sslyze(deep, raw)
    assert ours_ehlo == {ehlo}
    assert ours_sni == {"mail.test"}
    assert deep.certificate is not None
    assert deep.certificate.sni == "mail.test"


async def test_result_document_carries_the_deep_section(pki: Pki) -> None:
    with running(TlsServer(pki.server_context(MODERN), ip="127.0.41.4")) as server:
        target = tls_target(server)
        async with DeepChecker() as checker:
            deep = await checker.check(target, DeepOptions(checks=("heartbleed", "robot")))

    doc = json.loads(json.dumps(EndpointResult(target, "ok", deep=deep).to_dict()))
    assert doc["deep"]["status"] == "ok"
    assert doc["deep"]["heartbleed"] == {"vulnerable": False, "error": None}
    assert doc["deep"]["robot"] == {
        "result": "NOT_VULNERABLE_RSA_NOT_SUPPORTED",
        "vulnerable": False,
        "error": None,
    }
    # Checks that were not requested are null, not "not vulnerable".
    assert doc["deep"]["ccs_injection"] is None
    assert doc["deep"]["certificate"] is None
    assert EndpointResult(target, "ok").to_dict()["deep"] is None


# -- failures: each check carries the error ------------------------------------------------------


def assert_every_check_failed(deep: DeepChecks, kind: str, phase: str) -> None:
    assert deep.status == "error"
    assert deep.error is not None
    assert (deep.error.kind, deep.error.phase) == (kind, phase), deep.error
    for check in ALL_CHECKS:
        part: Any = getattr(deep, check)
        assert part is not None, check
        assert part.error == deep.error, check
    assert deep.heartbleed == VulnerabilityCheck(None, deep.error)
    assert deep.robot == RobotCheck(None, deep.error)
    assert deep.compression == SupportCheck(None, deep.error)


async def test_refused_connection_is_an_error_on_every_check() -> None:
    ip = "127.0.41.5"
    target = Target("tls.test", ip, free_port(ip), "https", "implicit", "tls.test")
    async with DeepChecker(DeepOptions(network_timeout=2, network_max_retries=0)) as checker:
        deep = await checker.check(target)
    assert_every_check_failed(deep, "refused", "connect")


async def test_smtp_without_starttls_is_starttls_not_offered(pki: Pki) -> None:
    behaviour = SmtpBehaviour(starttls=False)
    with running(SmtpServer(pki.server_context(MODERN), behaviour, ip="127.0.41.6")) as server:
        async with DeepChecker() as checker:
            deep = await checker.check(tls_target(server, "mail.test", "smtp"))
    assert_every_check_failed(deep, "starttls_not_offered", "starttls")


def test_a_service_without_tls_is_an_invalid_target() -> None:
    # Decided before sslyze opens any connection, so no pool is needed to show it.
    target = Target("tls.test", "127.0.41.7", 80, "https", "none", "tls.test")
    deep = run_deep_checks(target)
    assert_every_check_failed(deep, "invalid_target", "plan")


# -- the pool: timeouts, kills, recycling --------------------------------------------------------


async def wait_until(event: threading.Event) -> None:
    while not event.is_set():
        await asyncio.sleep(0.02)


async def test_hung_check_times_out_and_spares_the_others(pki: Pki, quick: DeepOptions) -> None:
    # Given a check hung on a trickling server, and another check running beside it
    # (held at its server's greeting until the hung one has been dealt with)
    with (
        running(TricklingServer(ip="127.0.41.8")) as tarpit,
        running(GatedSmtpServer(pki.server_context(MODERN), ip="127.0.41.9")) as gated,
    ):
        assert isinstance(gated, GatedSmtpServer)
        async with DeepChecker(quick, max_workers=2) as checker:
            bystander = asyncio.create_task(
                checker.check(tls_target(gated, "mail.test", "smtp"), replace(quick, timeout=60))
            )
            await wait_until(gated.arrived)

            # When the hung check exceeds its wall-clock limit
            hung = await checker.check(tls_target(tarpit), replace(quick, timeout=2))
            gated.gate.set()
            spared = await bystander
            stats = checker.stats()

    # Then it returns a timeout on every requested check, and nothing else
    assert hung.status == "error"
    assert hung.error is not None
    assert (hung.error.kind, hung.error.phase) == ("timeout", "deep")
    assert hung.compression == SupportCheck(None, hung.error)
    assert hung.heartbleed is None
    # and the check that shared the killed pool was retried on a fresh one.
    assert spared.status == "ok", spared.to_dict()
    assert spared.compression == SupportCheck(False)
    assert (stats.timed_out, stats.retried, stats.pool_restarts) == (1, 1, 1)


async def test_cancelled_check_stops_its_worker(pki: Pki, quick: DeepOptions) -> None:
    with (
        running(TricklingServer(ip="127.0.41.10")) as tarpit,
        running(TlsServer(pki.server_context(MODERN), ip="127.0.41.11")) as healthy,
    ):
        async with DeepChecker(quick, max_workers=1) as checker:
            task = asyncio.create_task(checker.check(tls_target(tarpit)))
            while tarpit.connections == 0:
                await asyncio.sleep(0.02)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            after = await checker.check(tls_target(healthy))
            stats = checker.stats()

    assert after.status == "ok"
    assert stats.pool_restarts == 1


async def test_workers_are_recycled_after_max_tasks(pki: Pki, quick: DeepOptions) -> None:
    with running(TlsServer(pki.server_context(MODERN), ip="127.0.41.12")) as server:
        async with DeepChecker(quick, max_workers=1, max_tasks_per_child=2) as checker:
            results = [await checker.check(tls_target(server)) for _ in range(5)]
            stats = checker.stats()

    assert [r.status for r in results] == ["ok"] * 5
    # Five checks, two per worker: three worker processes, in turn.
    assert [count for _, count in stats.workers] == [2, 2, 1]
    assert len({pid for pid, _ in stats.workers}) == 3
    assert stats.pool_restarts == 0


async def test_recycling_pool_keeps_up_under_concurrency(pki: Pki, quick: DeepOptions) -> None:
    # More checks than workers, workers recycled every two: the pattern that can
    # deadlock CPython 3.11's ProcessPoolExecutor when work queues up (gh-115634).
    ips = [f"127.0.41.{n}" for n in range(20, 24)]
    with modern_servers(pki, ips) as servers:
        async with DeepChecker(quick, max_workers=2, max_tasks_per_child=2) as checker:
            results = await asyncio.gather(
                *(checker.check(tls_target(s)) for s in servers for _ in range(3))
            )
            stats = checker.stats()

    assert [r.status for r in results] == ["ok"] * 12
    assert all(count <= 2 for _, count in stats.workers)
    assert sum(count for _, count in stats.workers) == 12
    assert (stats.timed_out, stats.retried) == (0, 0)


async def test_closed_checker_refuses_work(quick: DeepOptions) -> None:
    checker = DeepChecker(quick)
    await checker.close()
    target = Target("tls.test", "127.0.41.13", 443, "https", "implicit", "tls.test")
    with pytest.raises(RuntimeError, match="closed"):
        await checker.check(target)


def test_options_reject_unknown_checks_and_bad_limits() -> None:
    with pytest.raises(ValueError, match="unknown deep checks"):
        DeepOptions(checks=("heartbleed", "poodle"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="CA file not found"):
        DeepOptions(ca_file="/nonexistent/ca.pem")
    with pytest.raises(ValueError, match="concurrency"):
        DeepChecker(max_workers=2, concurrency=3)
