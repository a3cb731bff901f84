"""Asynchronous DNS for discovery: typed answers, retries, a per-run cache, bounded load.

:class:`Resolver` wraps dnspython's stub resolver (:mod:`dns.asyncresolver`). It is built
by the caller — nothing here happens at import time — and lives for one run (a sweep,
a CLI invocation): its cache is never expired, so a long-lived process should build a
new one per run.

What it adds to dnspython:

* **Nameservers** as ``host[:port]`` strings (``192.0.2.53``, ``192.0.2.53:5353``,
  ``2001:db8::53``, ``[2001:db8::53]:5353``); none means the system's ``resolv.conf``.
* **Retries**: a query that times out or is answered with SERVFAIL is sent again, up to
  ``retries`` more times, within ``lifetime`` seconds in all; each attempt waits at most
  ``timeout`` seconds per nameserver. REFUSED and malformed answers are not retried.
* **A cache for one run**, keyed by ``(name, type)``, including negative answers
  (NXDOMAIN, no data). Identical queries that are in flight at the same time share one
  query on the wire, which is what makes thousands of domains sharing a few MX hosts
  cheap. Failures (timeouts, SERVFAIL) are shared by the queries in flight but not
  cached, so a transient failure does not poison the rest of the run.
* **Bounded concurrency**: at most ``max_concurrency`` queries on the wire at once.
* **Typed results** (:class:`RecordSet`, :class:`HostLookup`) whose status tells
  NXDOMAIN from "no data" (NOERROR, empty answer) from timeout, SERVFAIL and REFUSED.
* **CNAME chains** are followed; a chain an authoritative server cut at its zone's edge
  (no SOA for the final name) is continued with a query for the final name.

Truncated UDP answers are repeated over TCP by dnspython itself (``Truncated`` makes its
resolution loop retry the same nameserver with TCP). EDNS0 with a 1232-byte payload
(DNS flag day 2020) is advertised by default, so most answers fit in one datagram.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdata
import dns.rdatatype
import dns.resolver
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.IN.SRV import SRV

from scanner.errors import DnsError
from scanner.models import HostAddresses
from scanner.targets import normalise_hostname

__all__ = [
    "DnsLookupError",
    "HostLookup",
    "LookupStatus",
    "MxData",
    "Record",
    "RecordSet",
    "Resolver",
    "ResolverStats",
    "SrvData",
    "parse_nameserver",
]

#: ``ok`` (records found), ``nxdomain`` (the name does not exist), ``no_data`` (the name
#: exists but has no records of this type), or why the lookup failed.
LookupStatus = Literal["ok", "nxdomain", "no_data", "timeout", "servfail", "refused", "error"]

#: Failures worth asking again about.
_RETRYABLE: frozenset[LookupStatus] = frozenset({"timeout", "servfail"})
#: Outcomes the cache keeps for the rest of the run.
_CACHEABLE: frozenset[LookupStatus] = frozenset({"ok", "nxdomain", "no_data"})
#: The longest CNAME chain followed across queries (dnspython follows 16 within one).
_MAX_FOLLOW = 8

T = TypeVar("T")


class DnsLookupError(DnsError):
    """A lookup that found nothing or failed; ``reason`` says which (a :data:`LookupStatus`).

    Its ``kind`` is still ``dns``: the result document does not distinguish further, the
    message does.
    """

    def __init__(self, message: str, *, name: str, rdtype: str, reason: LookupStatus) -> None:
        super().__init__(message)
        self.name = name
        self.rdtype = rdtype
        self.reason = reason


@dataclass(frozen=True, slots=True)
class MxData:
    """One MX record as published: ``exchange`` is ``"."`` for a null MX (RFC 7505)."""

    preference: int
    exchange: str

    @property
    def is_null(self) -> bool:
        return self.exchange == "."


@dataclass(frozen=True, slots=True)
class SrvData:
    """One SRV record as published: ``target`` is ``"."`` for "service not offered"."""

    priority: int
    weight: int
    port: int
    target: str

    @property
    def offered(self) -> bool:
        return self.target != "."


@dataclass(frozen=True, slots=True)
class RecordSet(Generic[T]):
    """The answer to one ``(name, type)`` question.

    ``records`` is empty unless ``status`` is ``ok``. ``canonical_name`` is set when
    ``name`` is an alias (a CNAME chain led elsewhere). ``error`` explains every status
    other than ``ok``, ready to be raised or reported.
    """

    name: str
    rdtype: str
    status: LookupStatus
    records: tuple[T, ...] = ()
    canonical_name: str | None = None
    error: DnsLookupError | None = None

    @property
    def failed(self) -> bool:
        """True when the resolver could not tell (timeout, SERVFAIL, REFUSED, …)."""
        return self.status not in _CACHEABLE

    def records_or_raise(self) -> tuple[T, ...]:
        """The records; empty for "no data"; :class:`DnsLookupError` for anything else."""
        if self.status in ("ok", "no_data"):
            return self.records
        assert self.error is not None
        raise self.error


HostStatus = Literal["ok", "nxdomain", "no_address", "error"]


@dataclass(frozen=True, slots=True)
class HostLookup:
    """A host name's A and AAAA records together.

    ``status``: ``ok`` (at least one address; a failed half is listed in ``errors``),
    ``nxdomain``, ``no_address`` (the name exists, neither A nor AAAA) or ``error`` (no
    address and at least one of the two lookups failed). IPv4 addresses come first,
    each family in numeric order.
    """

    host: str
    status: HostStatus
    addresses: tuple[str, ...] = ()
    canonical_name: str | None = None
    errors: tuple[DnsLookupError, ...] = ()

    @property
    def is_alias(self) -> bool:
        return self.canonical_name is not None

    def describe(self) -> str | None:
        """A short note for reports: the alias and any failure, or None."""
        parts: list[str] = []
        if self.canonical_name is not None:
            parts.append(f"alias for {self.canonical_name}")
        parts.extend(e.message for e in self.errors)
        return "; ".join(parts) or None

    def to_host_addresses(self) -> HostAddresses:
        """The :class:`~scanner.models.HostAddresses` form, the alias noted in ``note``."""
        return HostAddresses(
            host=self.host, addresses=self.addresses, status=self.status, note=self.describe()
        )


@dataclass(slots=True)
class ResolverStats:
    """Counters for one run: what was asked, what the cache saved, what went wrong."""

    lookups: int = 0  #: calls for a (name, type), whether or not they reached the wire
    cache_hits: int = 0  #: answered from the cache or by joining a query in flight
    queries: int = 0  #: attempts sent to dnspython (each may try every nameserver)
    retries: int = 0  #: attempts after a timeout or SERVFAIL
    failures: int = 0  #: lookups that ended in timeout, SERVFAIL, REFUSED or error
    max_in_flight: int = 0  #: most attempts on the wire at the same time

    def as_dict(self) -> dict[str, int]:
        return {
            "lookups": self.lookups,
            "cache_hits": self.cache_hits,
            "queries": self.queries,
            "retries": self.retries,
            "failures": self.failures,
            "max_in_flight": self.max_in_flight,
        }


def parse_nameserver(text: str) -> tuple[str, int]:
    """``host[:port]`` → ``(ip, port)``; IPv6 with a port needs brackets: ``[::1]:5353``.

    Only IP addresses are accepted (a resolver's own name would need a resolver).
    Bad input raises :class:`~scanner.errors.DnsError` with phase ``plan``.
    """
    raw = text.strip()
    host, port_text = raw, None
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0 or (raw[end + 1 :] and not raw[end + 1 :].startswith(":")):
            raise DnsError(f"invalid resolver address {text!r}: use [v6]:port", phase="plan")
        host = raw[1:end]
        port_text = raw[end + 2 :] if raw[end + 1 :] else None
    elif raw.count(":") == 1:
        host, port_text = raw.split(":")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise DnsError(
            f"invalid resolver address {text!r}: not an IP address", phase="plan"
        ) from None
    port = 53
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise DnsError(f"invalid port in resolver address {text!r}", phase="plan")
        port = int(port_text)
    return ip.compressed, port


def _key_text(name: str) -> str:
    """The cache's spelling of a name: lower case, no final dot (the root is ``"."``)."""
    text = name.strip()
    if not text.isascii():
        # Callers pass A-labels; convert stray U-labels rather than query garbage.
        text = normalise_hostname(text)
    return text.rstrip(".").lower() or "."


def _absolute(text: str) -> dns.name.Name:
    """An absolute dnspython name for a :func:`_key_text` name."""
    try:
        return dns.name.from_text(text if text == "." else text + ".")
    except dns.exception.DNSException as exc:
        raise DnsLookupError(
            f"invalid DNS name {text!r}: {exc}", name=text, rdtype="-", reason="error"
        ) from None


def _text(name: dns.name.Name) -> str:
    """Lower-case text without the final dot (the root is ``"."``), interned: the same
    MX and SRV targets come back for thousands of domains in a run."""
    if name == dns.name.root:
        return "."
    return sys.intern(name.to_text(omit_final_dot=True).lower())


#: A record as the cache keeps it: an address, an MX or SRV record, or other types' text.
Record = str | MxData | SrvData


def _record(rdata: dns.rdata.Rdata) -> Record:
    if isinstance(rdata, A | AAAA):
        return ipaddress.ip_address(rdata.address).compressed
    if isinstance(rdata, MX):
        return MxData(rdata.preference, _text(rdata.exchange))
    if isinstance(rdata, SRV):
        return SrvData(rdata.priority, rdata.weight, rdata.port, _text(rdata.target))
    return rdata.to_text()


def _order(record: Record) -> tuple[object, ...]:
    """Addresses numerically; MX by preference; SRV by priority, heaviest weight first."""
    if isinstance(record, MxData):
        return (record.preference, record.exchange)
    if isinstance(record, SrvData):
        return (record.priority, -record.weight, record.target, record.port)
    try:
        return (ipaddress.ip_address(record).packed,)
    except ValueError:
        return (b"", record)


_Key = tuple[str, int]


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What one (name, type) lookup found — the unit the cache stores, kept small
    (plain values, no dnspython objects): a sweep holds 100,000 of them."""

    status: LookupStatus
    records: tuple[Record, ...] = ()
    canonical: str | None = None
    message: str = ""


class Resolver:
    """Asynchronous DNS resolver for one run: retries, cache, bounded concurrency.

    ``nameservers``: ``host[:port]`` strings; empty → the system's ``resolv.conf``.
    ``timeout``: seconds to wait for one nameserver's answer to one attempt.
    ``lifetime``: seconds one lookup may take in all, retries included (time spent
    waiting for a concurrency slot is not counted).
    ``retries``: further attempts after a timeout or SERVFAIL.
    ``max_concurrency``: queries on the wire at once.
    ``edns_payload``: the UDP payload size advertised with EDNS0; 0 disables EDNS
    (answers over 512 bytes then always come back over TCP).
    """

    def __init__(
        self,
        nameservers: Sequence[str] = (),
        *,
        timeout: float = 2.0,
        lifetime: float = 8.0,
        retries: int = 2,
        max_concurrency: int = 100,
        edns_payload: int = 1232,
        resolv_conf: str = "/etc/resolv.conf",
    ) -> None:
        if timeout <= 0 or lifetime <= 0:
            raise ValueError("timeout and lifetime must be positive")
        if retries < 0:
            raise ValueError("retries must be zero or more")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        servers = [parse_nameserver(s) for s in nameservers]
        if servers:
            self._dns = dns.asyncresolver.Resolver(configure=False)
            self._dns.nameservers = [
                dns.nameserver.Do53Nameserver(ip, port) for ip, port in servers
            ]
        else:
            try:
                self._dns = dns.asyncresolver.Resolver(filename=resolv_conf)
            except (OSError, dns.resolver.NoResolverConfiguration) as exc:
                raise DnsError(
                    f"no nameservers configured in {resolv_conf} ({exc}); "
                    "give resolver addresses explicitly",
                    phase="plan",
                ) from None
        self._dns.cache = None  # ours is below: typed, in-flight aware, never expires
        self._dns.retry_servfail = False  # we retry ourselves, with a bound
        self._dns.timeout = timeout
        self._dns.lifetime = lifetime
        if edns_payload:
            self._dns.use_edns(0, 0, edns_payload)
        else:
            self._dns.use_edns(-1)
        self.timeout = timeout
        self.lifetime = lifetime
        self.retries = retries
        self.max_concurrency = max_concurrency
        self.stats = ResolverStats()
        self._slots = asyncio.Semaphore(max_concurrency)
        self._in_flight = 0
        # (name, type) → the answer, or the task still looking for it (askers join it).
        self._cache: dict[_Key, _Outcome | asyncio.Task[_Outcome]] = {}

    @property
    def nameservers(self) -> tuple[str, ...]:
        """The nameservers in use, as ``ip:port`` / ``[ip]:port`` strings."""
        out: list[str] = []
        for ns in self._dns.nameservers:
            if isinstance(ns, dns.nameserver.AddressAndPortNameserver):
                ip, port = ns.address, ns.port
            else:
                ip, port = str(ns), self._dns.port
            out.append(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}")
        return tuple(out)

    # -- typed queries ------------------------------------------------------------------

    async def mx(self, domain: str) -> RecordSet[MxData]:
        """The domain's MX records, sorted by preference, then exchange name."""
        answer = await self.lookup(domain, "MX")
        return _retyped(answer, tuple(r for r in answer.records if isinstance(r, MxData)))

    async def srv(self, name: str) -> RecordSet[SrvData]:
        """SRV records of ``name`` (``_imaps._tcp.example.com``), by priority, then weight
        (heaviest first), then target."""
        answer = await self.lookup(name, "SRV")
        return _retyped(answer, tuple(r for r in answer.records if isinstance(r, SrvData)))

    async def addresses(self, name: str, rdtype: Literal["A", "AAAA"]) -> RecordSet[str]:
        """The A or AAAA records of ``name`` as address strings, in numeric order."""
        answer = await self.lookup(name, rdtype)
        return _retyped(answer, tuple(r for r in answer.records if isinstance(r, str)))

    async def host(self, name: str) -> HostLookup:
        """A and AAAA of ``name``, asked concurrently, combined into one status."""
        v4, v6 = await asyncio.gather(self.addresses(name, "A"), self.addresses(name, "AAAA"))
        host = _key_text(name)
        canonical = v4.canonical_name or v6.canonical_name
        addresses = v4.records + v6.records
        failed = tuple(r.error for r in (v4, v6) if r.failed and r.error is not None)
        status: HostStatus
        if addresses:
            status = "ok"
        elif "nxdomain" in (v4.status, v6.status):
            # NXDOMAIN says the name has no records of any type (RFC 8020).
            status, failed = "nxdomain", ()
        elif failed:
            status = "error"
        else:
            status = "no_address"
        return HostLookup(
            host=host, status=status, addresses=addresses, canonical_name=canonical, errors=failed
        )

    async def a_aaaa(self, name: str) -> HostAddresses:
        """A and AAAA of ``name`` as :class:`~scanner.models.HostAddresses` (aliases noted)."""
        return (await self.host(name)).to_host_addresses()

    # -- the cache and the wire ---------------------------------------------------------

    async def lookup(self, name: str, rdtype: str) -> RecordSet[Record]:
        """Any ``(name, type)`` question, through the cache; CNAME chains followed.

        Records are address strings (A, AAAA), :class:`MxData`, :class:`SrvData`, or the
        presentation text of other types, in a stable order.
        """
        qtype = dns.rdatatype.RdataType.make(rdtype)
        key = (_key_text(name), int(qtype))
        self.stats.lookups += 1
        entry = self._cache.get(key)
        if isinstance(entry, _Outcome):
            self.stats.cache_hits += 1
            outcome = entry
        else:
            if entry is None:
                qname = _absolute(key[0])
                entry = asyncio.get_running_loop().create_task(self._follow(qname, qtype))
                self._cache[key] = entry
                entry.add_done_callback(functools.partial(self._settle, key))
            else:
                self.stats.cache_hits += 1
            # Shielded: one asker giving up (cancelled) must not cancel everyone's answer.
            outcome = await asyncio.shield(entry)
        return _record_set(key[0], dns.rdatatype.to_text(qtype), outcome)

    def _settle(self, key: _Key, task: asyncio.Task[_Outcome]) -> None:
        """Keep answers for the run (the task replaced by its small result); forget
        failures once everyone in flight has them."""
        if self._cache.get(key) is not task:
            return
        if task.cancelled() or task.exception() is not None:
            del self._cache[key]
        elif task.result().status in _CACHEABLE:
            self._cache[key] = task.result()
        else:
            del self._cache[key]

    async def _follow(self, qname: dns.name.Name, qtype: dns.rdatatype.RdataType) -> _Outcome:
        """Resolve, continuing a CNAME chain the server stopped at a zone's edge."""
        outcome, complete = await self._resolve(qname, qtype)
        seen = {_text(qname)}
        while not complete and outcome.canonical is not None:
            target = outcome.canonical
            if len(seen) > _MAX_FOLLOW or target in seen:
                return _Outcome(
                    "error",
                    canonical=target,
                    message=f"CNAME chain too long or looping at {target}",
                )
            seen.add(target)
            outcome, complete = await self._resolve(_absolute(target), qtype)
            if outcome.canonical is None:
                outcome = _Outcome(outcome.status, outcome.records, target, outcome.message)
        return outcome

    async def _resolve(
        self, qname: dns.name.Name, qtype: dns.rdatatype.RdataType
    ) -> tuple[_Outcome, bool]:
        """Ask the nameservers, retrying timeouts and SERVFAIL. Returns the outcome and
        whether it is final for ``qname`` (False: a CNAME chain left to follow)."""
        loop = asyncio.get_running_loop()
        per_attempt = self.timeout * max(1, len(self._dns.nameservers))
        deadline: float | None = None
        attempt = 0
        while True:
            async with self._slots:
                now = loop.time()
                if deadline is None:
                    deadline = now + self.lifetime
                budget = min(deadline - now, per_attempt)
                self.stats.queries += 1
                self._in_flight += 1
                self.stats.max_in_flight = max(self.stats.max_in_flight, self._in_flight)
                try:
                    result = await self._attempt(qname, qtype, budget)
                finally:
                    self._in_flight -= 1
            outcome, complete = result
            if outcome.status not in _RETRYABLE or attempt >= self.retries:
                break
            backoff = 0.05 * 2**attempt
            if loop.time() + backoff + 0.01 >= deadline:
                break
            attempt += 1
            self.stats.retries += 1
            await asyncio.sleep(backoff)
        if outcome.status not in _CACHEABLE:
            self.stats.failures += 1
            if attempt:
                outcome = _Outcome(
                    outcome.status,
                    canonical=outcome.canonical,
                    message=f"{outcome.message} (after {attempt + 1} attempts)",
                )
        return outcome, complete

    async def _attempt(
        self, qname: dns.name.Name, qtype: dns.rdatatype.RdataType, budget: float
    ) -> tuple[_Outcome, bool]:
        try:
            answer = await self._dns.resolve(
                qname, qtype, search=False, raise_on_no_answer=False, lifetime=budget
            )
        except dns.resolver.NXDOMAIN as exc:
            alias = exc.canonical_name
            return _Outcome("nxdomain", canonical=_text(alias) if alias != qname else None), True
        except dns.resolver.LifetimeTimeout:
            servers = ", ".join(self.nameservers)
            return _Outcome(
                "timeout", message=f"no answer from {servers} within {budget:.1f} s"
            ), True
        except dns.resolver.NoNameservers as exc:
            return _classify_failure(exc), True
        except dns.exception.DNSException as exc:
            return _Outcome("error", message=f"{type(exc).__name__}: {exc}"), True
        alias = answer.canonical_name
        canonical = _text(alias) if alias != qname else None
        if answer.rrset is not None:
            records = tuple(sorted(map(_record, answer.rrset), key=_order))
            return _Outcome("ok", records, canonical), True
        complete = canonical is None or _has_soa_for(answer.response, alias)
        return _Outcome("no_data", canonical=canonical), complete


def _has_soa_for(response: dns.message.Message, name: dns.name.Name) -> bool:
    """True when the authority section holds the SOA of a zone containing ``name`` —
    the server spoke for ``name``, so "no data" is final."""
    return any(
        rrset.rdtype == dns.rdatatype.SOA and name.is_subdomain(rrset.name)
        for rrset in response.authority
    )


def _server_text(server: str | None) -> str:
    """dnspython's ``Do53:192.0.2.53@53`` → ``192.0.2.53:53`` (``[v6]:53``)."""
    text = (server or "?").removeprefix("Do53:")
    address, at, port = text.rpartition("@")
    if not at:
        return text
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _classify_failure(exc: dns.resolver.NoNameservers) -> _Outcome:
    """Every nameserver failed: say how (SERVFAIL wins, it is the one worth retrying)."""
    errors = exc.kwargs.get("errors") or []
    texts: list[str] = []
    rcodes: set[str] = set()
    for server, tcp, _port, error, _response in errors:
        server = _server_text(server)
        transport = "TCP" if tcp else "UDP"
        if isinstance(error, str):
            rcodes.add(error)
            texts.append(f"{server} answered {error} over {transport}")
        else:
            texts.append(f"{server} over {transport}: {error or type(error).__name__}")
    detail = "; ".join(dict.fromkeys(texts)) or "no nameserver answered"
    if "SERVFAIL" in rcodes:
        return _Outcome("servfail", message=f"SERVFAIL ({detail})")
    if "REFUSED" in rcodes:
        return _Outcome("refused", message=f"REFUSED ({detail})")
    if any(isinstance(e[3], dns.exception.Timeout) for e in errors):
        return _Outcome("timeout", message=f"timed out ({detail})")
    return _Outcome("error", message=detail)


_REASON_TEXT: dict[LookupStatus, str] = {
    "nxdomain": "NXDOMAIN (the name does not exist)",
    "no_data": "no {rdtype} records (the name exists)",
}


def _record_set(name: str, rdtype: str, outcome: _Outcome) -> RecordSet[Record]:
    canonical = outcome.canonical
    error = None
    if outcome.status != "ok":
        what = _REASON_TEXT.get(outcome.status, "{message}").format(
            rdtype=rdtype, message=outcome.message
        )
        via = f" (alias for {canonical})" if canonical else ""
        error = DnsLookupError(
            f"{name} {rdtype}{via}: {what}", name=name, rdtype=rdtype, reason=outcome.status
        )
    return RecordSet(
        name=name,
        rdtype=rdtype,
        status=outcome.status,
        records=outcome.records,
        canonical_name=canonical,
        error=error,
    )


def _retyped(answer: RecordSet[Record], records: tuple[T, ...]) -> RecordSet[T]:
    return RecordSet(
        name=answer.name,
        rdtype=answer.rdtype,
        status=answer.status,
        records=records,
        canonical_name=answer.canonical_name,
        error=answer.error,
    )
