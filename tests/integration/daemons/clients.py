"""Stdlib clients for the fleet's endpoints, for tests that check the daemons directly.

Each client connects to the endpoint's IP from a chosen source address (the fleet's
``client_address``; see :class:`~.model.DaemonFleet`) while using the endpoint's host
name for SNI and certificate checks, for implicit TLS and after STARTTLS alike.
"""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
import ssl

from .model import DaemonEndpoint, TlsVersionName

_TLS_VERSIONS: dict[TlsVersionName, ssl.TLSVersion] = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}

# A client that can speak everything Debian's OpenSSL 3 still has, so that whatever a
# handshake refuses was refused by the server.
PERMISSIVE_CIPHERS = "ALL:@SECLEVEL=0"


def tls_context(ca_file: str, version: TlsVersionName | None = None) -> ssl.SSLContext:
    """A verifying client context at OpenSSL security level 0.

    With ``version`` the context offers exactly that version; without, TLS 1.0 to 1.3.
    """
    context = ssl.create_default_context(cafile=ca_file)
    context.set_ciphers(PERMISSIVE_CIPHERS)
    if version is None:
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_3
    else:
        # Set the maximum first: a minimum above the current maximum is rejected.
        context.maximum_version = _TLS_VERSIONS[version]
        context.minimum_version = _TLS_VERSIONS[version]
    return context


def connect(
    endpoint: DaemonEndpoint,
    source_address: str,
    timeout: float | None = 10.0,
    implicit_tls: ssl.SSLContext | None = None,
) -> socket.socket:
    """A TCP connection to ``endpoint`` from ``source_address``, TLS-wrapped if asked.

    With ``implicit_tls`` the handshake uses the endpoint's host name for SNI and
    verification; a failed handshake closes the socket.
    """
    sock = socket.create_connection(
        (endpoint.ip, endpoint.port), timeout=timeout, source_address=(source_address, 0)
    )
    if implicit_tls is None:
        return sock
    try:
        return implicit_tls.wrap_socket(sock, server_hostname=endpoint.hostname)
    except BaseException:
        sock.close()
        raise


class EndpointSMTP(smtplib.SMTP):
    """:class:`smtplib.SMTP` for one endpoint; ``tls`` is used for implicit TLS."""

    def __init__(
        self,
        endpoint: DaemonEndpoint,
        source_address: str,
        tls: ssl.SSLContext | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._endpoint = endpoint
        self._source_address = source_address
        self._implicit_tls = tls if endpoint.tls_mode == "implicit" else None
        # The host name is what starttls() sends as SNI; _get_socket dials the IP. An
        # explicit EHLO name: the default would look up this machine's FQDN.
        super().__init__(
            endpoint.hostname,
            endpoint.port,
            local_hostname="client.tlsfleet.test",
            timeout=timeout,
            source_address=(source_address, 0),
        )

    def _get_socket(self, host: str, port: int, timeout: float | None) -> socket.socket:
        if (host, port) != (self._endpoint.hostname, self._endpoint.port):
            raise ValueError(f"{host}:{port} is not this client's endpoint")
        return connect(self._endpoint, self._source_address, timeout, self._implicit_tls)


class EndpointIMAP4(imaplib.IMAP4):
    """:class:`imaplib.IMAP4` for one endpoint; ``tls`` is used for implicit TLS."""

    def __init__(
        self,
        endpoint: DaemonEndpoint,
        source_address: str,
        tls: ssl.SSLContext | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._endpoint = endpoint
        self._source_address = source_address
        self._implicit_tls = tls if endpoint.tls_mode == "implicit" else None
        # The host name is what starttls() sends as SNI; _create_socket dials the IP.
        super().__init__(endpoint.hostname, endpoint.port, timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        return connect(self._endpoint, self._source_address, timeout, self._implicit_tls)


class EndpointPOP3(poplib.POP3):
    """:class:`poplib.POP3` for one endpoint; ``tls`` is used for implicit TLS."""

    def __init__(
        self,
        endpoint: DaemonEndpoint,
        source_address: str,
        tls: ssl.SSLContext | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._endpoint = endpoint
        self._source_address = source_address
        self._implicit_tls = tls if endpoint.tls_mode == "implicit" else None
        # The host name is what stls() sends as SNI; _create_socket dials the IP.
        try:
            super().__init__(endpoint.hostname, endpoint.port, timeout)
        except BaseException:
            if getattr(self, "sock", None) is not None:
                self.close()
            raise

    def _create_socket(self, timeout: float) -> socket.socket:
        return connect(self._endpoint, self._source_address, timeout, self._implicit_tls)
