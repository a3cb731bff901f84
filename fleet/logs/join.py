"""Events → connections. Pure, bounded memory, and its open state can be saved.

Dovecot logs a login as one line (user, method, client address, TLS details), so a
:class:`~fleet.logs.parser.DovecotLogin` is a connection by itself. Postfix spreads a
connection over the lines of one smtpd process: ``connect from`` → ``TLS connection
established`` (before any queue id exists) → ``QUEUEID: client=…, sasl_username=…`` (one
per accepted message) → ``disconnect from … auth=1``. smtpd serves one connection at a
time, so (host, syslog tag, pid) joins them; the connection is complete at
``disconnect``, or when the same process logs ``connect`` again (the disconnect was
lost), or when it is evicted as the oldest of more than ``max_open`` open ones, or when
a Postfix event more than ``horizon`` (an hour) later than its start has been read (a
lost disconnect must not keep it open for ever). All of these depend on the events
alone, never on when the caller takes :attr:`Joiner.done`, so the counts do not depend
on where an ingest flushes.

A connection's ``key`` identifies it in any replay of the same log lines (Dovecot: its
session id; Postfix: process and connect time, with a count of the connections the
process began in that second), for deduplicating streams.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from fleet.logs.parser import DovecotLogin, DovecotNoLogin, Event, PostfixEvent, Transport

__all__ = ["MAX_OPEN", "OPEN_HORIZON", "Connection", "Joiner"]

#: Open Postfix connections kept at most (the oldest is completed when one more opens).
MAX_OPEN = 10_000
#: An open Postfix connection older than this (log time) is completed.
OPEN_HORIZON = dt.timedelta(hours=1)
_SEQUENCES = 50_000


@dataclass(frozen=True, slots=True)
class Connection:
    """One client connection as the logs tell it.

    ``authenticated``: a login succeeded (Postfix: ``auth=1``, or a message sent with a
    SASL user; Dovecot: the ``Login`` line); ``account`` is known only when the log
    names it (Postfix names the SASL user only on an accepted message). ``transport``:
    ``tls``, ``plaintext``, ``secured`` (Dovecot: a trusted network, not TLS) or
    ``unknown`` (Postfix: the connection began before the lines read).
    """

    time: dt.datetime
    host: str
    service: str
    client_ip: str | None
    account: str | None
    method: str | None
    transport: Transport
    protocol: str | None
    cipher: str | None
    authenticated: bool
    failed: bool
    key: bytes


def _key(*parts: object) -> bytes:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=16).digest()


class _Open:
    __slots__ = (
        "authenticated",
        "cipher",
        "client_ip",
        "connected",
        "key",
        "method",
        "protocol",
        "service",
        "time",
        "user",
    )

    def __init__(self, event: PostfixEvent, key: bytes, connected: bool) -> None:
        self.time = event.time
        self.service = event.service
        self.client_ip = event.client_ip
        self.connected = connected
        self.protocol: str | None = None
        self.cipher: str | None = None
        self.method: str | None = None
        self.user: str | None = None
        self.authenticated: bool | None = None
        self.key = key

    def to_dict(self, process: tuple[str, str, int]) -> dict[str, Any]:
        return {
            "process": list(process),
            "time": self.time.isoformat(),
            "service": self.service,
            "client_ip": self.client_ip,
            "connected": self.connected,
            "protocol": self.protocol,
            "cipher": self.cipher,
            "method": self.method,
            "user": self.user,
            "key": self.key.hex(),
        }


class Joiner:
    """Feed events in log order; completed connections collect in :attr:`done`."""

    def __init__(self, max_open: int = MAX_OPEN, horizon: dt.timedelta = OPEN_HORIZON) -> None:
        self.max_open = max_open
        self.horizon = horizon
        self.done: list[Connection] = []
        self.evicted = 0
        self._open: OrderedDict[tuple[str, str, int], _Open] = OrderedDict()
        self._sequence: dict[tuple[object, ...], tuple[dt.datetime, int]] = {}
        self._latest: dt.datetime | None = None

    @property
    def open_count(self) -> int:
        return len(self._open)

    def feed(self, event: Event) -> None:
        """Take one event; a connection it completes is appended to :attr:`done`."""
        if isinstance(event, PostfixEvent):
            self._postfix(event)
        elif isinstance(event, DovecotLogin):
            self.done.append(
                Connection(
                    time=event.time,
                    host=event.host,
                    service=event.service,
                    client_ip=event.client_ip,
                    account=event.user.strip().lower(),
                    method=event.method,
                    transport=event.transport,
                    protocol=event.protocol,
                    cipher=event.cipher,
                    authenticated=True,
                    failed=False,
                    key=self._dovecot_key(event),
                )
            )
        elif isinstance(event, DovecotNoLogin):
            self.done.append(
                Connection(
                    time=event.time,
                    host=event.host,
                    service=event.service,
                    client_ip=event.client_ip,
                    account=None,
                    method=None,
                    transport="unknown",
                    protocol=None,
                    cipher=None,
                    authenticated=False,
                    failed=event.failed,
                    key=b"",
                )
            )

    def _next(self, identity: tuple[object, ...], time: dt.datetime) -> int:
        """How many connections ``identity`` began in ``time``'s second before this one."""
        last = self._sequence.get(identity)
        n = last[1] + 1 if last is not None and last[0] == time else 0
        if len(self._sequence) >= _SEQUENCES and identity not in self._sequence:
            self._sequence.clear()
        self._sequence[identity] = (time, n)
        return n

    def _dovecot_key(self, event: DovecotLogin) -> bytes:
        if event.session:
            return _key("d", event.host, event.service, event.session)
        identity = ("d", event.host, event.service, event.pid)
        n = self._next(identity, event.time)
        return _key(*identity, event.time.isoformat(), event.user, event.client_ip, n)

    def _begin(self, event: PostfixEvent, connected: bool) -> _Open:
        n = self._next(event.process, event.time)
        state = _Open(event, _key("p", *event.process, event.time.isoformat(), n), connected)
        self._open[event.process] = state
        if len(self._open) > self.max_open:
            oldest_process, oldest = self._open.popitem(last=False)
            self.evicted += 1
            self._complete(oldest_process, oldest)
        return state

    def expire(self, horizon: dt.timedelta) -> None:
        """Complete the open connections that began more than ``horizon`` before the
        latest Postfix event (a lost disconnect must not keep one open for ever)."""
        if self._latest is None:
            return
        limit = self._latest - horizon
        while self._open:
            process, state = next(iter(self._open.items()))
            if state.time >= limit:
                break
            del self._open[process]
            self._complete(process, state)

    def close(self) -> None:
        """Complete every open connection (the end of a stream)."""
        while self._open:
            process, state = self._open.popitem(last=False)
            self._complete(process, state)

    def _postfix(self, event: PostfixEvent) -> None:
        self._join(event)
        if self._latest is None or event.time > self._latest:
            self._latest = event.time
            if self._open and next(iter(self._open.values())).time < event.time - self.horizon:
                self.expire(self.horizon)

    def _join(self, event: PostfixEvent) -> None:
        process = event.process
        state = self._open.get(process)
        if event.kind == "connect":
            if state is not None:  # its disconnect was lost
                del self._open[process]
                self._complete(process, state)
            self._begin(event, connected=True)
            return
        if state is None:
            if event.kind == "disconnect":
                return  # nothing known about it
            state = self._begin(event, connected=False)
        if event.kind == "tls":
            state.protocol = event.protocol
            state.cipher = event.cipher
        elif event.kind == "client":
            state.user = event.user
            state.method = event.method
            state.client_ip = state.client_ip or event.client_ip
        elif event.kind == "disconnect":
            state.authenticated = event.authenticated
            del self._open[process]
            self._complete(process, state)

    def _complete(self, process: tuple[str, str, int], state: _Open) -> None:
        transport: Transport
        if state.protocol is not None:
            transport = "tls"
        elif state.connected:
            transport = "plaintext"
        else:
            transport = "unknown"
        self.done.append(
            Connection(
                time=state.time,
                host=process[0],
                service=state.service,
                client_ip=state.client_ip,
                account=state.user.strip().lower() if state.user else None,
                method=state.method,
                transport=transport,
                protocol=state.protocol,
                cipher=state.cipher,
                authenticated=bool(state.authenticated) or state.user is not None,
                failed=state.authenticated is False and state.user is None,
                key=state.key,
            )
        )

    def state(self) -> list[dict[str, Any]]:
        """The open connections as JSON-able data (to resume a file later)."""
        return [s.to_dict(process) for process, s in self._open.items()]

    def restore(self, saved: list[dict[str, Any]]) -> None:
        """Reopen the connections :meth:`state` saved (bad entries are dropped)."""
        for item in saved[-self.max_open :]:
            try:
                host, tag, pid = item["process"]
                process = (str(host), str(tag), int(pid))
                event = PostfixEvent(
                    "connect",
                    dt.datetime.fromisoformat(item["time"]),
                    process,
                    str(item["service"]),
                    client_ip=item.get("client_ip"),
                )
                state = _Open(event, bytes.fromhex(item["key"]), bool(item.get("connected")))
            except (KeyError, TypeError, ValueError):
                continue
            state.protocol = item.get("protocol")
            state.cipher = item.get("cipher")
            state.method = item.get("method")
            state.user = item.get("user")
            self._open[process] = state
