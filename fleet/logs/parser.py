"""One mail-server log line → one event. Pure: no files, no database, never raises.

Prefixes understood (the timestamp, then an optional host, then ``tag[pid]: ``):

- RFC 3164 syslog: ``Nov 28 03:00:00 mx1 postfix/submission/smtpd[123]: …`` (no year:
  :class:`Clock` supplies it, no zone: the configured one);
- ISO 8601 as journald's ``short-iso``/``short-iso-precise`` and rsyslog's
  ``RSYSLOG_FileFormat`` write it: ``2026-11-28T03:00:00+0100 mx1 dovecot[9]: …``;
- Dovecot's own log file (``log_path``): ``Nov 28 03:00:00 imap-login: Info: …`` (no
  host, a level word) and Postfix's own (``maillog_file``), which is syslog-shaped.

Events (everything else from Dovecot's login processes and Postfix's smtpd is
``IGNORED``; any other program is ``OTHER``; a line whose prefix or relevant message
cannot be read is ``MALFORMED`` — counted by the caller, never fatal):

- Dovecot 2.3 login processes (``imap-login``, ``pop3-login``, ``submission-login``):
  ``Login: user=<u>, method=PLAIN, rip=…, lip=…, mpid=…, TLS, TLSv1 with cipher X (…),
  session=<…>`` → :class:`DovecotLogin`; the protocol and cipher are there only when
  ``login_log_format_elements`` contains ``%k``. No ``TLS`` marker: a login without TLS
  (``secured``: a trusted network, not counted as plaintext). ``Disconnected …`` and
  ``Aborted login …`` → :class:`DovecotNoLogin`.
- Postfix 3.x smtpd: ``connect from``, ``… TLS connection established from …: TLSv1
  with cipher X``, ``QUEUEID: client=…, sasl_method=…, sasl_username=…``, ``disconnect
  from … auth=1 …`` → :class:`PostfixEvent`, joined per process by :mod:`fleet.logs.join`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from enum import Enum
from typing import Final, Literal
from zoneinfo import ZoneInfo

__all__ = [
    "LEGACY_PROTOCOLS",
    "Clock",
    "DovecotLogin",
    "DovecotNoLogin",
    "Kind",
    "Parsed",
    "PostfixEvent",
    "Transport",
    "normalise_protocol",
    "parse_line",
]

Transport = Literal["tls", "plaintext", "secured", "unknown"]

#: Protocol versions switched off at the cut-off (the normalised spelling).
LEGACY_PROTOCOLS: Final = frozenset({"SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"})

_PROTOCOLS = {
    "SSLv2": "SSLv2",
    "SSLv3": "SSLv3",
    "TLSv1": "TLSv1.0",
    "TLSv1.0": "TLSv1.0",
    "TLSv1.1": "TLSv1.1",
    "TLSv1.2": "TLSv1.2",
    "TLSv1.3": "TLSv1.3",
}


def normalise_protocol(name: str) -> str | None:
    """``TLSv1`` (OpenSSL's spelling) → ``TLSv1.0`` as the scan results spell it; None
    for something that is no protocol version."""
    return _PROTOCOLS.get(name)


class Kind(Enum):
    """What a line turned out to be."""

    EVENT = "event"
    IGNORED = "ignored"  # Dovecot or Postfix, but nothing about connections or logins
    OTHER = "other"  # another program's line (a syslog stream carries everything)
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class DovecotLogin:
    """A successful login to a Dovecot login process: one connection, complete."""

    time: dt.datetime
    host: str
    service: str
    user: str
    method: str | None
    client_ip: str
    transport: Transport
    protocol: str | None
    cipher: str | None
    session: str | None
    pid: int | None


@dataclass(frozen=True, slots=True)
class DovecotNoLogin:
    """A login-process connection that ended without a login (``failed``: a wrong
    password was tried)."""

    time: dt.datetime
    host: str
    service: str
    client_ip: str | None
    failed: bool
    user: str | None


PostfixKind = Literal["connect", "tls", "client", "disconnect"]


@dataclass(frozen=True, slots=True)
class PostfixEvent:
    """One smtpd line about a connection; ``process`` (host, tag, pid) joins them."""

    kind: PostfixKind
    time: dt.datetime
    process: tuple[str, str, int]
    service: str
    client_ip: str | None = None
    protocol: str | None = None
    cipher: str | None = None
    method: str | None = None
    user: str | None = None
    #: disconnect: True for ``auth=1``, False for a failed AUTH, None without AUTH.
    authenticated: bool | None = None


Event = DovecotLogin | DovecotNoLogin | PostfixEvent


@dataclass(frozen=True, slots=True)
class Parsed:
    kind: Kind
    event: Event | None = None


_MALFORMED: Final = Parsed(Kind.MALFORMED)
_IGNORED: Final = Parsed(Kind.IGNORED)
_OTHER: Final = Parsed(Kind.OTHER)

_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    )
}


class Clock:
    """Turns a line's timestamp into an aware UTC time.

    ``zone``: the zone of timestamps that carry none (RFC 3164, Dovecot's file). RFC
    3164 has no year either: the year of ``reference`` (a file's modification time, or
    now for a stream), or the year before when the date would lie more than a day after
    ``reference`` (a December line read in January).
    """

    def __init__(self, reference: dt.datetime, zone: str = "UTC") -> None:
        self.zone = ZoneInfo(zone)
        self._last_key = ""
        self._last: dt.datetime | None = None
        self.advance(reference)

    def advance(self, reference: dt.datetime) -> None:
        """Read later lines against a new reference time (a stream goes on)."""
        self.reference = reference.astimezone(self.zone)
        self._limit = self.reference + dt.timedelta(days=1)
        self._last_key = ""

    def syslog(self, month: str, day: int, hms: str) -> dt.datetime | None:
        key = f"{month}{day}{hms}"
        if key == self._last_key:
            return self._last
        number = _MONTHS.get(month)
        if number is None:
            return None
        try:
            hour, minute, second = int(hms[0:2]), int(hms[3:5]), int(hms[6:8])
            moment = dt.datetime(
                self.reference.year, number, day, hour, minute, second, tzinfo=self.zone
            )
            if moment > self._limit:
                moment = moment.replace(year=moment.year - 1)
        except ValueError:
            return None
        self._last_key, self._last = key, moment.astimezone(dt.UTC)
        return self._last

    def iso(self, text: str) -> dt.datetime | None:
        if text == self._last_key:
            return self._last
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self.zone)
        self._last_key, self._last = text, moment.astimezone(dt.UTC)
        return self._last


_SYSLOG_PREFIX = re.compile(r"([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d\d:\d\d:\d\d)(?:\.\d+)? ")
_ISO_PREFIX = re.compile(
    r"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d(?::?\d\d)?)?) "
)
_TAGGED = re.compile(r"(?:([^\s:\[]+) )?([^\s\[:]+)(?:\[(\d{1,10})\])?: (.*)", re.S)

_LOGIN_TAG = re.compile(r"(imap|pop3|submission|managesieve)-login")
_LEVEL = re.compile(r"(?:Info|Warning|Error|Debug|Fatal|Panic): ")
_USER = re.compile(r"user=<([^>]*)>")
_METHOD = re.compile(r"\bmethod=([A-Za-z0-9_-]+)")
_RIP = re.compile(r"\brip=([0-9A-Fa-f:.]+)")
_SESSION = re.compile(r"\bsession=<([^>]*)>")
_MPID = re.compile(r"\bmpid=(\d+)")
_DOVECOT_TLS = re.compile(r", (TLS|secured)(?=,|$| )")
_TLS_DETAIL = re.compile(r"\b(SSLv[23]|TLSv1(?:\.[0-3])?) with cipher ([A-Za-z0-9_.-]+)")

_PF_ADDRESS = r"[^\s\[]*\[([^\]\s]+)\](?::\d+)?"
_PF_CONNECT = re.compile(r"connect from " + _PF_ADDRESS + r"$")
_PF_DISCONNECT = re.compile(r"disconnect from " + _PF_ADDRESS + r"(.*)$")
_PF_TLS = re.compile(
    r"(?:Anonymous|Untrusted|Trusted|Verified) TLS connection established from "
    + _PF_ADDRESS
    + r": (\S+) with cipher (\S+)"
)
_PF_CLIENT = re.compile(r"[0-9A-Za-z]{5,20}: client=" + _PF_ADDRESS + r"(.*)$")
_SASL_METHOD = re.compile(r", sasl_method=([^,\s]+)")
_SASL_USER = re.compile(r", sasl_username=([^,]+)")
_AUTH_STAT = re.compile(r" auth=(\d+)(/\d+)?")

_DOVECOT_SERVICES = {"imap": "imap", "pop3": "pop3", "submission": "submission"}


def parse_line(line: str, clock: Clock) -> Parsed:
    """The event a line stands for (never raises)."""
    try:
        return _parse(line.rstrip("\r\n"), clock)
    except (ValueError, IndexError, OverflowError):  # pragma: no cover - a last net
        return _MALFORMED


def _parse(line: str, clock: Clock) -> Parsed:
    match = _SYSLOG_PREFIX.match(line)
    if match is not None:
        time = clock.syslog(match[1], int(match[2]), match[3])
    else:
        match = _ISO_PREFIX.match(line)
        if match is None:
            return _MALFORMED
        time = clock.iso(match[1])
    if time is None:
        return _MALFORMED
    tagged = _TAGGED.match(line, match.end())
    if tagged is None:
        return _MALFORMED
    host, tag, pid_text, message = tagged.groups()
    pid = int(pid_text) if pid_text is not None else None
    host = host or ""
    if tag.endswith("/smtpd"):
        if pid is None:
            return _MALFORMED
        return _postfix(time, host, tag, pid, message)
    if tag == "dovecot" or tag.startswith("dovecot/"):
        # syslog: "dovecot[9]: imap-login: Login: …"
        inner = message.split(": ", 1)
        if len(inner) != 2:
            return _IGNORED
        tag, message = inner
    login = _LOGIN_TAG.fullmatch(tag)
    if login is None:
        if "-login" in tag or tag in ("auth", "master") or tag.startswith(("imap(", "pop3(")):
            return _IGNORED
        return _OTHER
    level = _LEVEL.match(message)
    if level is not None:
        message = message[level.end() :]
    service = _DOVECOT_SERVICES.get(login[1], login[1])
    if message.startswith("Login: "):
        return _dovecot_login(time, host, service, pid, message)
    if message.startswith(("Disconnected", "Aborted login")):
        return _dovecot_no_login(time, host, service, message)
    return _IGNORED


def _dovecot_tls(rest: str) -> tuple[Transport, str | None, str | None]:
    marker = _DOVECOT_TLS.search(rest)
    detail = _TLS_DETAIL.search(rest)
    protocol = normalise_protocol(detail[1]) if detail is not None else None
    cipher = detail[2] if detail is not None else None
    if marker is None:
        # %k without %c would still say TLS was used.
        return ("tls" if detail is not None else "plaintext"), protocol, cipher
    return ("tls" if marker[1] == "TLS" else "secured"), protocol, cipher


def _dovecot_login(
    time: dt.datetime, host: str, service: str, pid: int | None, message: str
) -> Parsed:
    user = _USER.search(message)
    if user is None or not user[1]:
        return _MALFORMED
    rest = message[user.end() :]
    rip = _RIP.search(rest)
    if rip is None:
        return _MALFORMED
    method = _METHOD.search(rest)
    session = _SESSION.search(rest)
    mpid = _MPID.search(rest)
    transport, protocol, cipher = _dovecot_tls(rest)
    return Parsed(
        Kind.EVENT,
        DovecotLogin(
            time=time,
            host=host,
            service=service,
            user=user[1],
            method=method[1].upper() if method is not None else None,
            client_ip=rip[1],
            transport=transport,
            protocol=protocol,
            cipher=cipher,
            session=session[1] if session is not None else None,
            pid=int(mpid[1]) if mpid is not None else pid,
        ),
    )


def _dovecot_no_login(time: dt.datetime, host: str, service: str, message: str) -> Parsed:
    user = _USER.search(message)
    rest = message[user.end() :] if user is not None else message
    rip = _RIP.search(rest)
    if rip is None and user is None:
        # "Disconnected: Shutting down" and similar carry no connection.
        return _IGNORED
    failed = "auth failed" in message or "Aborted login (auth" in message
    return Parsed(
        Kind.EVENT,
        DovecotNoLogin(
            time=time,
            host=host,
            service=service,
            client_ip=rip[1] if rip is not None else None,
            failed=failed,
            user=(user[1] or None) if user is not None else None,
        ),
    )


def postfix_service(tag: str) -> str:
    """``postfix/submission/smtpd`` → ``submission``: the master.cf service's
    ``syslog_name`` names it (``submissions`` or ``smtps`` → ``submissions``)."""
    name = tag.rsplit("/", 1)[0]
    if "submissions" in name or "smtps" in name:
        return "submissions"
    if "submission" in name:
        return "submission"
    return "smtp"


def _postfix(time: dt.datetime, host: str, tag: str, pid: int, message: str) -> Parsed:
    process = (host, tag, pid)
    head = message[:12]
    if head.startswith("connect from"):
        match = _PF_CONNECT.match(message)
        if match is None:
            return _MALFORMED
        return Parsed(
            Kind.EVENT,
            PostfixEvent("connect", time, process, postfix_service(tag), client_ip=match[1]),
        )
    if head.startswith("disconnect f"):
        match = _PF_DISCONNECT.match(message)
        if match is None:
            return _MALFORMED
        stats = _AUTH_STAT.search(match[2])
        authenticated = None
        if stats is not None:
            authenticated = stats[2] is None and stats[1] != "0"
        return Parsed(
            Kind.EVENT,
            PostfixEvent(
                "disconnect",
                time,
                process,
                postfix_service(tag),
                client_ip=match[1],
                authenticated=authenticated,
            ),
        )
    if "TLS connection established from" in message:
        match = _PF_TLS.match(message)
        if match is None:
            return _MALFORMED
        protocol = normalise_protocol(match[2])
        if protocol is None:
            return _MALFORMED
        return Parsed(
            Kind.EVENT,
            PostfixEvent(
                "tls",
                time,
                process,
                postfix_service(tag),
                client_ip=match[1],
                protocol=protocol,
                cipher=match[3],
            ),
        )
    if ": client=" in message[:32]:
        match = _PF_CLIENT.match(message)
        if match is None:
            return _MALFORMED
        user = _SASL_USER.search(match[2])
        if user is None:
            return _IGNORED  # a message from an unauthenticated client (port 25)
        method = _SASL_METHOD.search(match[2])
        return Parsed(
            Kind.EVENT,
            PostfixEvent(
                "client",
                time,
                process,
                postfix_service(tag),
                client_ip=match[1],
                method=method[1].upper() if method is not None else None,
                user=user[1].strip(),
            ),
        )
    return _IGNORED
