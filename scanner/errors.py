"""The scanner's error tree.

Every failure the scanner reports is one of these, so callers handle one family and
the result document can carry a stable ``kind`` and the ``phase`` it happened in::

    ScanError                      kind            typical phase
    ├── TargetError                invalid_target  plan        (bad host, port, service)
    │   └── PrivateTargetError     private_target  plan        (loopback/private, not allowed)
    ├── DnsError                   dns             dns
    ├── ConnectionFailed
    │   ├── RefusedError           refused         connect
    │   ├── ScanTimeout            timeout         any
    │   └── ResetError             reset           any
    ├── RateLimitedError           rate_limited    greeting, starttls, connect
    ├── StarttlsNotOfferedError    starttls_not_offered   starttls
    ├── StarttlsRefusedError       starttls_refused       starttls
    ├── TlsAlertError              tls_alert       tls_hello, tls_handshake
    ├── HandshakeError             handshake       tls_handshake  (OpenSSL full handshake)
    └── ProtocolError              protocol_error  any         (the peer broke the protocol)
        └── DecodeError            protocol_error  tls_hello   (bytes our codec rejects)

``ERROR_KINDS`` lists every kind the result document may contain.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ERROR_KINDS",
    "PHASES",
    "ConnectionFailed",
    "DecodeError",
    "DnsError",
    "HandshakeError",
    "PrivateTargetError",
    "ProtocolError",
    "RateLimitedError",
    "RefusedError",
    "ResetError",
    "ScanError",
    "ScanTimeout",
    "StarttlsNotOfferedError",
    "StarttlsRefusedError",
    "TargetError",
    "TlsAlertError",
]

#: Where in an endpoint scan a failure happened.
PHASES = (
    "plan",
    "dns",
    "connect",
    "greeting",
    "starttls",
    "tls_hello",
    "tls_handshake",
    "certificate",
    "auth",
    "deep",
    "scan",
)


class ScanError(Exception):
    """Base of every error the scanner raises on purpose."""

    kind: ClassVar[str] = "error"

    def __init__(self, message: str, *, phase: str = "connect") -> None:
        super().__init__(message)
        self.message = message
        self.phase = phase

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, phase={self.phase!r})"


class TargetError(ScanError):
    """The target itself is unusable: malformed host, port or unknown service."""

    kind = "invalid_target"

    def __init__(self, message: str, *, phase: str = "plan") -> None:
        super().__init__(message, phase=phase)


class PrivateTargetError(TargetError):
    """The target resolves to a private, loopback or otherwise internal address."""

    kind = "private_target"


class DnsError(ScanError):
    """A name did not resolve (NXDOMAIN, no address, resolver failure)."""

    kind = "dns"

    def __init__(self, message: str, *, phase: str = "dns") -> None:
        super().__init__(message, phase=phase)


class ConnectionFailed(ScanError):
    """The TCP connection could not be made or was lost."""

    kind = "connection"


class RefusedError(ConnectionFailed):
    """TCP connection refused (nothing listens)."""

    kind = "refused"


class ScanTimeout(ConnectionFailed):
    """A step did not finish within its timeout (connect, greeting, reply, handshake)."""

    kind = "timeout"


class ResetError(ConnectionFailed):
    """The peer reset or closed the connection where a reply was due."""

    kind = "reset"


class RateLimitedError(ScanError):
    """The server said, or showed, that we are connecting too often (421, 'too many')."""

    kind = "rate_limited"


class StarttlsNotOfferedError(ScanError):
    """A STARTTLS service does not advertise STARTTLS/STLS."""

    kind = "starttls_not_offered"

    def __init__(self, message: str, *, phase: str = "starttls") -> None:
        super().__init__(message, phase=phase)


class StarttlsRefusedError(ScanError):
    """STARTTLS was advertised but the command was refused."""

    kind = "starttls_refused"

    def __init__(self, message: str, *, phase: str = "starttls") -> None:
        super().__init__(message, phase=phase)


class TlsAlertError(ScanError):
    """The server answered a TLS handshake with an alert."""

    kind = "tls_alert"

    def __init__(
        self, message: str, *, description: int | None = None, phase: str = "tls_hello"
    ) -> None:
        super().__init__(message, phase=phase)
        self.description = description


class HandshakeError(ScanError):
    """A full OpenSSL handshake failed for a reason other than an alert we could read."""

    kind = "handshake"

    def __init__(self, message: str, *, phase: str = "tls_handshake") -> None:
        super().__init__(message, phase=phase)


class ProtocolError(ScanError):
    """The peer sent something that breaks the protocol (garbage, oversized, wrong order)."""

    kind = "protocol_error"


class DecodeError(ProtocolError):
    """Bytes the TLS codec cannot parse; raised by codecs only, never by I/O."""

    def __init__(self, message: str, *, phase: str = "tls_hello") -> None:
        super().__init__(message, phase=phase)


def _all_kinds() -> tuple[str, ...]:
    seen: list[str] = []
    stack: list[type[ScanError]] = [ScanError]
    while stack:
        cls = stack.pop(0)
        if cls.kind not in seen:
            seen.append(cls.kind)
        stack.extend(cls.__subclasses__())
    return tuple(seen)


#: Every ``error.kind`` a result document may carry.
ERROR_KINDS: tuple[str, ...] = _all_kinds()
