"""A small authoritative DNS server for the demo fleet, the discovery tests and benchmark.

Built on dnspython's message, zone and rrset types, answering over UDP and TCP on an
address and port it binds itself (port 0: the kernel picks). It serves zones given as
zone-file text and answers the way an authoritative server does:

* NXDOMAIN (the name does not exist, SOA in the authority section) is kept apart from
  NOERROR with no data (the name exists, or is an empty non-terminal such as
  ``_tcp.example.test`` when only ``_imaps._tcp.example.test`` has records);
* CNAMEs are chased within the answer, into any served zone (as a recursive resolver
  would) or, with ``chase_out_of_zone=False``, only within the alias's own zone (as a
  strict authoritative server does: the client must follow the rest itself); a chain
  ending at a missing name gives NXDOMAIN with the chain in the answer (RFC 6604);
* names outside every served zone are REFUSED;
* UDP answers larger than the client's EDNS payload (512 bytes without EDNS, and never
  more than ``udp_limit`` when set) are truncated (TC, empty sections) so that the
  client has to repeat the query over TCP.

Faults for timeout and retry tests: :meth:`DnsServer.add_fault` drops, delays, SERVFAILs
or REFUSEs matching queries, always or for the first *n* matches. Counters record every
query by name, type and transport, and the most UDP answers held back at once (a
measure of the client's concurrency while queries are delayed).

Run as a program for the benchmark (``python -m fleet.demo.dnsserver --help``, or
``python -m tests.integration.dnsserver``, its old name, which re-exports it):
it prints ``ready <host> <port>`` once listening and serves until killed; with
``--reuse-port`` several processes share one port and the kernel spreads queries.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import select
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

__all__ = ["DnsServer", "Fault", "ZoneData", "serve_forever"]

FaultAction = Literal["drop", "delay", "servfail", "refused"]
Transport = Literal["udp", "tcp"]

#: Added to zone text that has no SOA of its own.
_DEFAULT_APEX = (
    "@ 300 IN SOA ns.{origin} hostmaster.{origin} 1 3600 600 86400 300\n@ 300 IN NS ns.{origin}\n"
)
_MAX_CHAIN = 12


@dataclass
class Fault:
    """What to do to queries for ``name`` (and ``rdtype`` / ``transport`` when set).

    ``times`` None: every matching query; otherwise only the first ``times`` of them.
    ``delay`` applies to ``delay`` (seconds before the real answer is sent).
    """

    name: str
    action: FaultAction
    rdtype: str | None = None
    transport: Transport | None = None
    times: int | None = None
    delay: float = 0.0
    hits: int = 0
    _qname: dns.name.Name = field(init=False, repr=False)
    _qtype: int | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._qname = dns.name.from_text(self.name)
        self._qtype = dns.rdatatype.from_text(self.rdtype) if self.rdtype else None

    def matches(self, qname: dns.name.Name, qtype: int, transport: Transport) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self._qname != qname or self._qtype not in (None, qtype):
            return False
        return self.transport in (None, transport)


class ZoneData:
    """Every served zone flattened into lookup tables: node → rdatasets, names that
    exist (with empty non-terminals), and each zone's SOA."""

    def __init__(self, zones: Mapping[str, str]) -> None:
        self.soa: dict[dns.name.Name, dns.rrset.RRset] = {}
        self.nodes: dict[dns.name.Name, dict[int, dns.rrset.RRset]] = {}
        self.existing: set[dns.name.Name] = set()
        for origin_text, text in zones.items():
            self.add_zone(origin_text, text)

    def add_zone(self, origin_text: str, text: str) -> None:
        origin = dns.name.from_text(origin_text)
        text = "$TTL 300\n" + text  # a default, so that records may omit theirs
        zone = dns.zone.from_text(text, origin=origin, relativize=False, check_origin=False)
        if zone.get_rdataset(origin, dns.rdatatype.SOA) is None:
            apex = _DEFAULT_APEX.format(origin=origin.to_text())
            zone = dns.zone.from_text(
                apex + text, origin=origin, relativize=False, check_origin=False
            )
        for name, node in zone.nodes.items():
            assert isinstance(name, dns.name.Name)
            entries = self.nodes.setdefault(name, {})
            for rdataset in node.rdatasets:
                entries[rdataset.rdtype] = dns.rrset.from_rdata_list(
                    name, rdataset.ttl, list(rdataset)
                )
            # The name and every ancestor up to the origin exist (empty non-terminals).
            walk = name
            while walk != origin and walk.is_subdomain(origin) and walk not in self.existing:
                self.existing.add(walk)
                walk = walk.parent()
            self.existing.add(origin)
        soa = self.nodes[origin][dns.rdatatype.SOA]
        self.soa[origin] = soa

    def zone_of(self, name: dns.name.Name) -> dns.name.Name | None:
        """The closest served zone containing ``name``."""
        walk = name
        while True:
            if walk in self.soa:
                return walk
            if walk == dns.name.root:
                return None
            walk = walk.parent()

    def answer(self, query: dns.message.Message, *, chase_out_of_zone: bool) -> dns.message.Message:
        """The authoritative response to ``query`` (one question)."""
        response = dns.message.make_response(query)
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        zone = self.zone_of(qname)
        if zone is None or question.rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.REFUSED)
            return response
        response.flags |= dns.flags.AA
        name = qname
        for _ in range(_MAX_CHAIN):
            entries = self.nodes.get(name)
            if entries is None and name not in self.existing:
                response.set_rcode(dns.rcode.NXDOMAIN)
                response.authority.append(self.soa[zone])
                return response
            entries = entries or {}
            if qtype in entries:
                response.answer.append(entries[qtype])
                return response
            cname = entries.get(dns.rdatatype.CNAME)
            if cname is None or qtype == dns.rdatatype.CNAME:
                response.authority.append(self.soa[zone])  # no data
                return response
            response.answer.append(cname)
            name = next(iter(cname)).target
            next_zone = self.zone_of(name)
            if next_zone is None or (next_zone != zone and not chase_out_of_zone):
                return response  # the client follows the rest of the chain
            zone = next_zone
        return response  # a chain this long is the client's problem


@dataclass(order=True)
class _Held:
    due: float
    seq: int
    data: bytes = field(compare=False)
    address: tuple[str, int] = field(compare=False)


class DnsServer:
    """An authoritative DNS server on ``host:port`` (UDP and TCP), run in threads.

    ``zones``: origin → zone text (names relative to the origin or absolute; an SOA and
    NS are added when missing). Use as a context manager, or :meth:`start`/:meth:`stop`.
    """

    def __init__(
        self,
        zones: Mapping[str, str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        udp_limit: int | None = None,
        chase_out_of_zone: bool = True,
        reuse_port: bool = False,
        data: ZoneData | None = None,
    ) -> None:
        self.data = data if data is not None else ZoneData(zones)
        self.host = host
        self.udp_limit = udp_limit
        self.chase_out_of_zone = chase_out_of_zone
        self.faults: list[Fault] = []
        self.queries: Counter[tuple[str, str, Transport]] = Counter()
        self.max_held = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._udp, self._tcp = self._bind(host, port, reuse_port=reuse_port)
        self.port: int = self._udp.getsockname()[1]
        self._held: list[_Held] = []
        self._seq = itertools.count()

    @staticmethod
    def _bind(host: str, port: int, *, reuse_port: bool) -> tuple[socket.socket, socket.socket]:
        """UDP and TCP sockets on the same port; with port 0, retry until the port the
        kernel picked for UDP is free for TCP too."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _ in range(50):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                for sock in (udp, tcp):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if reuse_port:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                udp.bind((host, port))
                tcp.bind((host, udp.getsockname()[1]))
                tcp.listen(128)
            except OSError:
                udp.close()
                tcp.close()
                if port:
                    raise
                continue
            return udp, tcp
        raise OSError(f"no port free for both UDP and TCP on {host}")

    # -- public -------------------------------------------------------------------------

    @property
    def nameserver(self) -> str:
        """This server as a ``host:port`` resolver address."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def add_fault(
        self,
        name: str,
        action: FaultAction,
        *,
        rdtype: str | None = None,
        transport: Transport | None = None,
        times: int | None = None,
        delay: float = 0.0,
    ) -> Fault:
        """Drop, delay, SERVFAIL or REFUSE queries for ``name`` (see :class:`Fault`)."""
        fault = Fault(name, action, rdtype, transport, times, delay)
        with self._lock:
            self.faults.append(fault)
        return fault

    def count(
        self, name: str, rdtype: str | None = None, transport: Transport | None = None
    ) -> int:
        """Queries received for ``name`` (absolute or not), by type and transport."""
        wanted = dns.name.from_text(name).to_text().lower()
        with self._lock:
            return sum(
                n
                for (qname, qtype, trans), n in self.queries.items()
                if qname == wanted
                and (rdtype is None or qtype == rdtype)
                and (transport is None or trans == transport)
            )

    def total(self, transport: Transport | None = None) -> int:
        with self._lock:
            return sum(n for (_, _, t), n in self.queries.items() if transport in (None, t))

    def reset_counters(self) -> None:
        with self._lock:
            self.queries.clear()
            self.max_held = 0

    def start(self) -> DnsServer:
        for target, name in ((self._serve_udp, "udp"), (self._serve_tcp, "tcp")):
            thread = threading.Thread(target=target, name=f"dns-{name}-{self.port}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._udp.close()
        self._tcp.close()

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- answering ----------------------------------------------------------------------

    def _handle(self, wire: bytes, transport: Transport) -> tuple[bytes | None, float]:
        """The answer's bytes (None: drop) and how long to hold it back."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None, 0.0
        if not query.question:
            return None, 0.0
        question = query.question[0]
        fault = self._fault_for(question.name, question.rdtype, transport)
        with self._lock:
            key = (
                question.name.to_text().lower(),
                dns.rdatatype.to_text(question.rdtype),
                transport,
            )
            self.queries[key] += 1
        delay = 0.0
        if fault is not None:
            if fault.action == "drop":
                return None, 0.0
            if fault.action in ("servfail", "refused"):
                response = dns.message.make_response(query)
                response.set_rcode(
                    dns.rcode.SERVFAIL if fault.action == "servfail" else dns.rcode.REFUSED
                )
                return response.to_wire(max_size=65535), 0.0
            delay = fault.delay
        response = self.data.answer(query, chase_out_of_zone=self.chase_out_of_zone)
        if transport == "tcp":
            return response.to_wire(max_size=65535), delay
        limit = max(512, query.payload) if query.edns >= 0 else 512
        if self.udp_limit is not None:
            limit = min(limit, self.udp_limit)
        try:
            return response.to_wire(max_size=limit), delay
        except dns.exception.TooBig:
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.TC | (response.flags & dns.flags.AA)
            truncated.set_rcode(response.rcode())
            return truncated.to_wire(), delay

    def _fault_for(self, qname: dns.name.Name, qtype: int, transport: Transport) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(qname, qtype, transport):
                    fault.hits += 1
                    return fault
        return None

    def _serve_udp(self) -> None:
        sock = self._udp
        while not self._stop.is_set():
            wait = 0.1
            if self._held:
                wait = max(0.0, min(wait, self._held[0].due - time.monotonic()))
            readable, _, _ = select.select([sock], [], [], wait)
            now = time.monotonic()
            while self._held and self._held[0].due <= now:
                held = heapq.heappop(self._held)
                with contextlib.suppress(OSError):
                    sock.sendto(held.data, held.address)
            if not readable:
                continue
            try:
                wire, address = sock.recvfrom(65535)
            except OSError:
                continue
            data, delay = self._handle(wire, "udp")
            if data is None:
                continue
            if delay > 0:
                heapq.heappush(self._held, _Held(now + delay, next(self._seq), data, address))
                with self._lock:
                    self.max_held = max(self.max_held, len(self._held))
                continue
            with contextlib.suppress(OSError):
                sock.sendto(data, address)

    def _serve_tcp(self) -> None:
        self._tcp.settimeout(0.1)
        workers: list[threading.Thread] = []
        while not self._stop.is_set():
            try:
                conn, _ = self._tcp.accept()
            except TimeoutError:
                workers = [w for w in workers if w.is_alive()]
                continue
            except OSError:
                break
            worker = threading.Thread(target=self._serve_connection, args=(conn,), daemon=True)
            worker.start()
            workers.append(worker)
        for worker in workers:
            worker.join(timeout=5)

    def _serve_connection(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        with conn:
            buffer = b""
            idle_since = time.monotonic()
            while not self._stop.is_set() and time.monotonic() - idle_since < 10:
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                idle_since = time.monotonic()
                buffer += chunk
                while len(buffer) >= 2:
                    (size,) = struct.unpack("!H", buffer[:2])
                    if len(buffer) < 2 + size:
                        break
                    wire, buffer = buffer[2 : 2 + size], buffer[2 + size :]
                    data, delay = self._handle(wire, "tcp")
                    if data is None:
                        continue
                    if delay > 0 and self._stop.wait(delay):
                        return
                    try:
                        conn.sendall(struct.pack("!H", len(data)) + data)
                    except OSError:
                        return


def serve_forever(zones: Mapping[str, str], host: str, port: int, *, reuse_port: bool) -> None:
    """Serve until interrupted, after printing ``ready <host> <port>`` on stdout."""
    server = DnsServer(zones, host=host, port=port, reuse_port=reuse_port)
    with server:
        print(f"ready {host} {server.port}", flush=True)  # noqa: T201 - the parent reads it
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


def _parse_zone_args(values: Iterable[str]) -> dict[str, str]:
    zones: dict[str, str] = {}
    for value in values:
        origin, _, path = value.partition("=")
        with open(path, encoding="utf-8") as handle:
            zones[origin] = handle.read()
    return zones


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--zone", action="append", required=True, metavar="ORIGIN=FILE", help="a zone to serve"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reuse-port", action="store_true", help="share the port (SO_REUSEPORT)")
    args = parser.parse_args(argv)
    serve_forever(_parse_zone_args(args.zone), args.host, args.port, reuse_port=args.reuse_port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
