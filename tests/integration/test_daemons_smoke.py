"""The daemon fleet is what it claims to be, checked with the standard library alone.

Scanner integration tests take the fleet's profiles (``PROFILES``) as their expected
results; these tests prove those expectations against the running daemons, from the
fleet's client address, with clients that can speak every TLS version Debian's
OpenSSL still has (security level 0), so that every refusal is the server's.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import os
import poplib
import smtplib
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.daemons import (
    PROFILES,
    DaemonEndpoint,
    DaemonError,
    DaemonFleet,
    DaemonsNotInstalledError,
    check_installed,
    running_fleet,
)
from tests.integration.daemons.clients import (
    EndpointIMAP4,
    EndpointPOP3,
    EndpointSMTP,
    connect,
    tls_context,
)
from tests.integration.daemons.fixtures import daemon_fleet
from tests.integration.daemons.model import ALL_TLS_VERSIONS, Profile, Service, TlsVersionName
from tests.integration.daemons.process import DaemonProcess, session_members

pytestmark = pytest.mark.daemons

# Pytest finds fixtures among a module's names; listing it here marks the import used.
__all__ = ["daemon_fleet"]

SERVICES: tuple[Service, ...] = (
    "smtp",
    "submission",
    "submissions",
    "imap",
    "imaps",
    "pop3",
    "pop3s",
    "https",
)
ENDPOINTS = [
    pytest.param(profile, service, id=f"{profile}-{service}")
    for profile in PROFILES
    for service in SERVICES
]
SMTP_SERVICES = {"smtp", "submission", "submissions"}
IMAP_SERVICES = {"imap", "imaps"}
POP3_SERVICES = {"pop3", "pop3s"}


@contextlib.contextmanager
def tls_session(
    fleet: DaemonFleet, endpoint: DaemonEndpoint, context: ssl.SSLContext
) -> Iterator[ssl.SSLSocket]:
    """Reach TLS on ``endpoint`` (STARTTLS or implicit) and yield the TLS socket."""
    source = fleet.client_address
    starttls = endpoint.tls_mode == "starttls"
    if endpoint.service in SMTP_SERVICES:
        with EndpointSMTP(endpoint, source, tls=context) as smtp:
            if starttls:
                smtp.ehlo()
                smtp.starttls(context=context)
            yield _as_tls(smtp.sock)
    elif endpoint.service in IMAP_SERVICES:
        imap = EndpointIMAP4(endpoint, source, tls=context)
        try:
            if starttls:
                imap.starttls(context)
            yield _as_tls(imap.sock)
        finally:
            _close_imap(imap)
    elif endpoint.service in POP3_SERVICES:
        pop3 = EndpointPOP3(endpoint, source, tls=context)
        try:
            if starttls:
                pop3.stls(context)
            yield _as_tls(pop3.sock)
        finally:
            _close_pop3(pop3)
    else:
        with connect(endpoint, source, implicit_tls=context) as sock:
            yield _as_tls(sock)


def _as_tls(sock: object) -> ssl.SSLSocket:
    assert isinstance(sock, ssl.SSLSocket), f"not a TLS socket: {sock!r}"
    return sock


def _close_imap(imap: imaplib.IMAP4) -> None:
    # After a failed STARTTLS the socket is already gone: LOGOUT fails.
    with contextlib.suppress(OSError, imaplib.IMAP4.error):
        imap.logout()
    with contextlib.suppress(OSError, ValueError):
        imap.shutdown()


def _close_pop3(pop3: poplib.POP3) -> None:
    # After a failed STLS the socket is already gone: closing it again may fail.
    with contextlib.suppress(OSError, poplib.error_proto):
        pop3.quit()
    with contextlib.suppress(OSError):
        pop3.close()


# How each daemon refuses a handshake (an unsupported version, no shared suite): with
# OpenSSL's alert, except that Dovecot may close the connection before sending it.
REFUSALS = {
    "postfix": {"TLSV1_ALERT_PROTOCOL_VERSION", "SSLV3_ALERT_HANDSHAKE_FAILURE"},
    "nginx": {"TLSV1_ALERT_PROTOCOL_VERSION", "SSLV3_ALERT_HANDSHAKE_FAILURE"},
    "dovecot": {
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "SSLV3_ALERT_HANDSHAKE_FAILURE",
        "UNEXPECTED_EOF_WHILE_READING",
    },
}


@dataclass(frozen=True)
class Handshake:
    """What one TLS handshake ended with: a version and suite, or the SSL error."""

    version: str | None = None
    cipher: str | None = None
    error: str | None = None


def handshake(fleet: DaemonFleet, endpoint: DaemonEndpoint, context: ssl.SSLContext) -> Handshake:
    """Reach TLS on ``endpoint`` with ``context`` and report the outcome."""
    try:
        with tls_session(fleet, endpoint, context) as sock:
            cipher = sock.cipher()
            return Handshake(version=sock.version(), cipher=cipher[0] if cipher else None)
    except ssl.SSLError as exc:
        return Handshake(error=exc.reason)


@pytest.mark.parametrize("version", ALL_TLS_VERSIONS)
@pytest.mark.parametrize(("profile", "service"), ENDPOINTS)
def test_accepts_exactly_the_profiles_tls_versions(
    daemon_fleet: DaemonFleet, profile: Profile, service: Service, version: TlsVersionName
) -> None:
    endpoint = daemon_fleet.endpoint(profile, service)

    outcome = handshake(daemon_fleet, endpoint, tls_context(daemon_fleet.ca_file, version))

    if version in PROFILES[profile].tls_versions:
        assert outcome.version == version, outcome
    else:
        # Refused by the server, not the client: the client allows every version.
        assert outcome.version is None
        assert outcome.error in REFUSALS[endpoint.daemon] - {"SSLV3_ALERT_HANDSHAKE_FAILURE"}


@pytest.mark.parametrize(("profile", "service"), ENDPOINTS)
def test_certificate_verifies_against_the_test_ca_for_the_host_name(
    daemon_fleet: DaemonFleet, profile: Profile, service: Service
) -> None:
    endpoint = daemon_fleet.endpoint(profile, service)

    with tls_session(daemon_fleet, endpoint, tls_context(daemon_fleet.ca_file)) as sock:
        certificate = sock.getpeercert()

    assert certificate is not None
    names = certificate["subjectAltName"]
    assert ("DNS", endpoint.hostname) in names
    assert ("IP Address", endpoint.ip) in names
    # Without the test CA the same chain does not verify: verification is real.
    untrusting = ssl.create_default_context()
    untrusting.set_ciphers("ALL:@SECLEVEL=0")
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        tls_session(daemon_fleet, endpoint, untrusting),
    ):
        pass


@pytest.mark.parametrize(("profile", "service"), ENDPOINTS)
def test_weak_suites_only_in_the_legacy_profile(
    daemon_fleet: DaemonFleet, profile: Profile, service: Service
) -> None:
    # Given a client offering only RSA key exchange, then only (1024-bit) DHE
    endpoint = daemon_fleet.endpoint(profile, service)
    outcomes = []
    for suite in ("AES128-SHA", "DHE-RSA-AES128-SHA"):
        context = tls_context(daemon_fleet.ca_file, "TLSv1.2")
        context.set_ciphers(f"{suite}:@SECLEVEL=0")
        # When it connects
        outcomes.append(handshake(daemon_fleet, endpoint, context))

    # Then only the legacy profile accepts them
    if PROFILES[profile].dhe:
        assert [o.cipher for o in outcomes] == ["AES128-SHA", "DHE-RSA-AES128-SHA"]
    else:
        assert [o.cipher for o in outcomes] == [None, None]
        assert {o.error for o in outcomes} <= REFUSALS[endpoint.daemon] - {
            "TLSV1_ALERT_PROTOCOL_VERSION"
        }


@pytest.mark.parametrize(("profile", "service"), ENDPOINTS)
def test_cipher_order_follows_the_profile(
    daemon_fleet: DaemonFleet, profile: Profile, service: Service
) -> None:
    # Given a client preferring CHACHA20 over AES-GCM (the servers' first choice)
    endpoint = daemon_fleet.endpoint(profile, service)
    context = tls_context(daemon_fleet.ca_file, "TLSv1.2")
    context.set_ciphers("ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:@SECLEVEL=0")

    outcome = handshake(daemon_fleet, endpoint, context)

    if PROFILES[profile].server_preference:
        assert outcome.cipher == "ECDHE-RSA-AES128-GCM-SHA256", outcome
    else:
        assert outcome.cipher == "ECDHE-RSA-CHACHA20-POLY1305", outcome


@pytest.mark.parametrize("service", ["smtp", "submission"])
@pytest.mark.parametrize("profile", list(PROFILES))
def test_smtp_offers_auth_before_starttls_only_in_legacy(
    daemon_fleet: DaemonFleet, profile: Profile, service: Service
) -> None:
    endpoint = daemon_fleet.endpoint(profile, service)
    context = tls_context(daemon_fleet.ca_file)

    with EndpointSMTP(endpoint, daemon_fleet.client_address) as smtp:
        smtp.ehlo()
        before = smtp.esmtp_features.copy()
        smtp.starttls(context=context)
        smtp.ehlo()
        after = smtp.esmtp_features.copy()

    assert "starttls" in before
    if PROFILES[profile].auth_before_tls:
        assert set(before["auth"].split()) >= {"PLAIN", "LOGIN"}
    else:
        assert "auth" not in before
    assert set(after["auth"].split()) >= {"PLAIN", "LOGIN"}


@pytest.mark.parametrize(
    ("profile", "service", "expected"),
    [
        ("legacy", "smtp", 235),
        ("legacy", "submission", 235),
        # smtpd_tls_auth_only: "authentication not enabled" before STARTTLS
        ("modern", "smtp", 503),
        # The modern submission port requires STARTTLS for everything
        ("modern", "submission", 530),
    ],
)
def test_smtp_password_before_tls_only_in_legacy(
    daemon_fleet: DaemonFleet, profile: Profile, service: Service, expected: int
) -> None:
    endpoint = daemon_fleet.endpoint(profile, service)
    credentials = f"\0{daemon_fleet.test_user}\0{daemon_fleet.test_password}"
    initial = base64.b64encode(credentials.encode()).decode()

    with EndpointSMTP(endpoint, daemon_fleet.client_address) as smtp:
        smtp.ehlo()
        code, message = smtp.docmd("AUTH", f"PLAIN {initial}")

    assert code == expected, message


@pytest.mark.parametrize("profile", list(PROFILES))
def test_imap_logindisabled_before_starttls_only_in_modern(
    daemon_fleet: DaemonFleet, profile: Profile
) -> None:
    endpoint = daemon_fleet.endpoint(profile, "imap")

    with EndpointIMAP4(endpoint, daemon_fleet.client_address) as imap:
        before = set(imap.capabilities)
        imap.starttls(tls_context(daemon_fleet.ca_file))
        after = set(imap.capabilities)

    assert "STARTTLS" in before
    if PROFILES[profile].auth_before_tls:
        assert "LOGINDISABLED" not in before
        assert {"AUTH=PLAIN", "AUTH=LOGIN"} <= before
    else:
        assert "LOGINDISABLED" in before
    assert "LOGINDISABLED" not in after
    assert {"AUTH=PLAIN", "AUTH=LOGIN"} <= after


@pytest.mark.parametrize("profile", list(PROFILES))
def test_imap_password_before_tls_only_in_legacy(
    daemon_fleet: DaemonFleet, profile: Profile
) -> None:
    endpoint = daemon_fleet.endpoint(profile, "imap")

    with EndpointIMAP4(endpoint, daemon_fleet.client_address) as imap:
        if PROFILES[profile].auth_before_tls:
            status, _ = imap.login(daemon_fleet.test_user, daemon_fleet.test_password)
            assert status == "OK"
        else:
            with pytest.raises(imaplib.IMAP4.error, match=r"(?i)plaintext"):
                imap.login(daemon_fleet.test_user, daemon_fleet.test_password)


@pytest.mark.parametrize("profile", list(PROFILES))
def test_pop3_user_before_stls_only_in_legacy(daemon_fleet: DaemonFleet, profile: Profile) -> None:
    endpoint = daemon_fleet.endpoint(profile, "pop3")

    pop3 = EndpointPOP3(endpoint, daemon_fleet.client_address)
    try:
        capabilities = pop3.capa()
        if PROFILES[profile].auth_before_tls:
            assert "USER" in capabilities
            pop3.user(daemon_fleet.test_user)
            assert pop3.pass_(daemon_fleet.test_password).startswith(b"+OK")
        else:
            assert "USER" not in capabilities
            with pytest.raises(poplib.error_proto, match=r"(?i)plaintext"):
                pop3.user(daemon_fleet.test_user)
    finally:
        _close_pop3(pop3)
    assert "STLS" in capabilities


@pytest.mark.parametrize("profile", list(PROFILES))
def test_real_logins_over_tls_check_the_password(
    daemon_fleet: DaemonFleet, profile: Profile
) -> None:
    user, password = daemon_fleet.test_user, daemon_fleet.test_password
    context = tls_context(daemon_fleet.ca_file)
    source = daemon_fleet.client_address

    # IMAPS: a real login opens the mailbox (a mail process as the test user)
    imaps = daemon_fleet.endpoint(profile, "imaps")
    with EndpointIMAP4(imaps, source, tls=context) as imap:
        assert imap.login(user, password)[0] == "OK"
        assert imap.select("INBOX")[0] == "OK"
    with (
        EndpointIMAP4(imaps, source, tls=context) as imap,
        pytest.raises(imaplib.IMAP4.error, match=r"(?i)authentication failed"),
    ):
        imap.login(user, password + "-wrong")

    # POP3S
    pop3s = daemon_fleet.endpoint(profile, "pop3s")
    pop3 = EndpointPOP3(pop3s, source, tls=context)
    try:
        pop3.user(user)
        assert pop3.pass_(password).startswith(b"+OK")
    finally:
        _close_pop3(pop3)
    pop3 = EndpointPOP3(pop3s, source, tls=context)
    try:
        pop3.user(user)
        with pytest.raises(poplib.error_proto, match=r"(?i)authentication failed"):
            pop3.pass_(password + "-wrong")
    finally:
        _close_pop3(pop3)

    # SMTP submissions: Postfix asks Dovecot's auth socket
    submissions = daemon_fleet.endpoint(profile, "submissions")
    with EndpointSMTP(submissions, source, tls=context) as smtp:
        assert smtp.login(user, password)[0] == 235
    with (
        EndpointSMTP(submissions, source, tls=context) as smtp,
        pytest.raises(smtplib.SMTPAuthenticationError),
    ):
        smtp.login(user, password + "-wrong")


@pytest.mark.parametrize("profile", list(PROFILES))
def test_https_serves_a_page(daemon_fleet: DaemonFleet, profile: Profile) -> None:
    endpoint = daemon_fleet.endpoint(profile, "https")

    with tls_session(daemon_fleet, endpoint, tls_context(daemon_fleet.ca_file)) as sock:
        sock.sendall(f"GET / HTTP/1.0\r\nHost: {endpoint.hostname}\r\n\r\n".encode())
        response = b""
        while chunk := sock.recv(4096):
            response += chunk

    assert response.startswith(b"HTTP/1.1 200")
    assert response.endswith(f"tlsfleet {profile}\n".encode())


def _wait_for_log(path: Path, *needles: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        for line in lines:
            if all(needle in line for needle in needles):
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no line with {needles} in {path}:\n" + "\n".join(lines[-20:]))
        time.sleep(0.05)


def test_logs_record_logins_and_tls_details(daemon_fleet: DaemonFleet) -> None:
    # Given a login on legacy IMAPS at TLS 1.0, an SMTP session at TLS 1.1 and an HTTPS
    # request at TLS 1.0 (this test's own: the others may run in another test process,
    # against another daemon fleet)
    source = daemon_fleet.client_address
    imaps = daemon_fleet.endpoint("legacy", "imaps")
    with EndpointIMAP4(imaps, source, tls=tls_context(daemon_fleet.ca_file, "TLSv1")) as imap:
        imap.login(daemon_fleet.test_user, daemon_fleet.test_password)
    submissions = daemon_fleet.endpoint("legacy", "submissions")
    with EndpointSMTP(
        submissions, source, tls=tls_context(daemon_fleet.ca_file, "TLSv1.1")
    ) as smtp:
        smtp.ehlo()
    https = daemon_fleet.endpoint("legacy", "https")
    with tls_session(daemon_fleet, https, tls_context(daemon_fleet.ca_file, "TLSv1")) as sock:
        sock.sendall(f"GET /logged HTTP/1.0\r\nHost: {https.hostname}\r\n\r\n".encode())
        while sock.recv(4096):
            pass

    # Then the logs in log_dir say who logged in, from where, and with which TLS
    logs = Path(daemon_fleet.log_dir)
    _wait_for_log(
        logs / "dovecot-legacy.log",
        f"Login: user=<{daemon_fleet.test_user}>",
        f"rip={source}",
        "TLSv1 with cipher",
    )
    _wait_for_log(logs / "postfix-legacy.log", "TLS connection established", "TLSv1.1")
    _wait_for_log(logs / "nginx-legacy-access.log", '"GET /logged HTTP/1.0"', " TLSv1 ")


def test_missing_binaries_fail_with_the_install_hint() -> None:
    with pytest.raises(DaemonsNotInstalledError, match=r"\.ci/install-daemons\.sh"):
        check_installed(binaries=("/nonexistent/sbin/postfix",))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_a_daemon_that_dies_at_start_is_reported_with_its_output(tmp_path: Path) -> None:
    # Given a "daemon" that fails the way a bad config does
    endpoint = DaemonEndpoint("legacy", "nginx", "https", "127.0.10.1", 1, "implicit", "x.test")
    process = DaemonProcess(
        name="broken",
        command=("/bin/sh", "-c", "echo 'emerg: unknown directive boom'; exit 1"),
        logs=(tmp_path / "missing.log",),
        console_log=tmp_path / "console.log",
        endpoints=(endpoint,),
    )
    deadline = time.monotonic() + 10
    try:
        # When it starts, Then the error carries its output
        process.start(deadline)
        with pytest.raises(DaemonError, match="unknown directive boom"):
            process.wait_ready(deadline, "127.0.10.100", str(tmp_path / "ca.pem"))
    finally:
        process.stop()


def test_stop_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    # Given a process tree that ignores SIGTERM
    process = DaemonProcess(
        name="stubborn",
        command=("/bin/sh", "-c", "trap '' TERM; sleep 60 & sleep 60 & wait"),
        logs=(),
        console_log=tmp_path / "console.log",
        endpoints=(),
    )
    process.start(time.monotonic() + 10)
    deadline = time.monotonic() + 5
    while len(process.pids()) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    pids = process.pids()
    assert len(pids) == 3

    # When it is stopped
    process.stop(timeout=0.5)

    # Then nothing of it is left
    assert not any(_alive(pid) for pid in pids)


def test_fleet_leaves_no_process_behind(tmp_path: Path) -> None:
    # Given a second, private fleet (the session's one keeps running)
    with running_fleet(tmp_path) as fleet:
        assert len(fleet.endpoints) == 16
        runtime_root = Path(fleet.log_dir).parent
        leaders = {
            pid
            for pid in (int(name) for name in os.listdir("/proc") if name.isdigit())
            if f"{runtime_root}/" in _cmdline(pid)
        }
        # Dovecot, Postfix's master and nginx per profile lead a session each
        assert len(leaders) == 6
        pids = session_members(leaders)
        assert len(pids) > len(leaders)

    # When the fleet has stopped, Then none of its processes runs
    assert not any(_alive(pid) for pid in pids)
    # And its configs and logs were kept, its runtime directory removed
    assert (tmp_path / "legacy" / "postfix" / "etc" / "main.cf").is_file()
    assert (tmp_path / "logs" / "dovecot-modern.log").is_file()
    assert not runtime_root.exists()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
