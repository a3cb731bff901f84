"""The endpoint scan: protocol probes, cipher elimination, certificate, STARTTLS facts.

One :class:`Scanner` scans many endpoints concurrently under one connection limiter.
Per endpoint the work is:

1. a first probe (TLS 1.2 ClientHello) that also runs the STARTTLS dialogue and learns
   what the server offers before TLS; a connection-level failure here ends the scan
   of that endpoint with a classified error;
2. one ClientHello per remaining protocol version, concurrently;
3. per accepted version, cipher elimination: offer everything not yet chosen until
   the server refuses (accepted + 1 connections, the first being the version probe);
4. one connection to decide whether the server enforces its own suite order;
5. optionally TLS 1.3 group enumeration through HelloRetryRequest, one full OpenSSL
   handshake for the certificate (and the capabilities offered after TLS), the opt-in
   plaintext login check and the STARTTLS injection check.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from scanner import ciphers, starttls
from scanner.certificate import analyse_certificate, nocheck_context, verify_context
from scanner.deep import DeepChecker
from scanner.errors import (
    HandshakeError,
    ProtocolError,
    RateLimitedError,
    ResetError,
    ScanError,
    ScanTimeout,
    StarttlsNotOfferedError,
    TlsAlertError,
)
from scanner.hello.codec import (
    GROUP_NAMES,
    TLS13_GROUPS,
    VERSION_CODES,
    Alert,
    HelloReader,
    ServerHello,
    ServerResponse,
    SSLv2ServerHello,
    client_hello,
    sslv2_client_hello,
)
from scanner.models import (
    PROTOCOLS,
    AuthInfo,
    CertificateInfo,
    EndpointResult,
    ErrorInfo,
    StarttlsInfo,
    Target,
)
from scanner.net import ConnectionLimiter, Connector, LocalLimiter, map_os_error
from scanner.services import SERVICES, Service
from scanner.starttls import DialogueOptions, PlaintextFacts

__all__ = ["ScanOptions", "Scanner"]

#: Most bytes we read while waiting for one ServerHello (a flood is a protocol error).
_MAX_HELLO_BYTES = 1 << 17
#: First probe: the version nearly every server speaks, so its failure means "endpoint".
_FIRST_VERSION = "TLSv1.2"


@dataclass(frozen=True, slots=True)
class ScanOptions:
    """What to scan and how patiently. Timeouts are per step, in seconds."""

    timeout: float = 5.0
    connect_timeout: float = 5.0
    #: Greeting wait for STARTTLS services; postscreen-style tarpits delay it by seconds.
    greeting_timeout: float = 15.0
    protocols: tuple[str, ...] = PROTOCOLS
    ciphers: bool = True
    groups: bool = True
    certificate: bool = True
    #: Opt-in: one login attempt with random, non-existent credentials before TLS.
    auth_check: bool = False
    injection_check: bool = True
    ca_file: str | None = None
    ehlo_name: str = "tlsfleet.invalid"
    source_address: str | None = None
    #: Attempts for a connection that is rate limited or reset before the hello.
    attempts: int = 3
    backoff: float = 1.0

    @property
    def quick(self) -> ScanOptions:
        """The quick-sweep variant: versions, suites and STARTTLS facts only."""
        return replace(self, groups=False, certificate=False, injection_check=False)

    def dialogue(self) -> DialogueOptions:
        return DialogueOptions(
            ehlo_name=self.ehlo_name,
            timeout=self.timeout,
            greeting_timeout=self.greeting_timeout,
        )


# A probe's outcome: the server's answer, or None when it closed without one.
_Answer = ServerResponse | None


@dataclass(slots=True)
class _EndpointRun:
    """Mutable state of one endpoint scan (kept out of the frozen result until the end)."""

    target: Target
    service: Service
    options: ScanOptions
    connector: Connector
    facts: PlaintextFacts | None = None
    protocols: dict[str, bool | None] = field(default_factory=dict)
    suites: dict[str, list[str]] = field(default_factory=dict)
    errors: list[ScanError] = field(default_factory=list)
    #: Versions whose probe met a hang-up without an alert, with that hello's length.
    silent: dict[str, int] = field(default_factory=dict)
    #: The longest hello the server answered (with a ServerHello or an alert).
    answered: int = 0
    #: How the server answered the probes: hang-ups, alerts, ServerHellos (any version).
    hangups: int = 0
    alerts: list[Alert] = field(default_factory=list)
    hellos: int = 0

    def note(self, exc: ScanError) -> None:
        """Remember a failure of one part; the rest of the scan goes on."""
        self.errors.append(exc)

    @property
    def partial(self) -> list[ErrorInfo]:
        infos: list[ErrorInfo] = []
        for exc in self.errors:
            info = ErrorInfo(kind=exc.kind, phase=exc.phase, message=exc.message)
            if info not in infos:
                infos.append(info)
        return infos

    @contextlib.asynccontextmanager
    async def plain(self) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        """A TCP connection; for STARTTLS services, upgraded and ready for TLS bytes."""
        async with self.connector.open(self.target.ip, self.target.port) as (reader, writer):
            if self.service.tls_mode == "starttls":
                opts = self.options.dialogue()
                facts = await starttls.read_capabilities(
                    self.service.dialogue, reader, writer, opts
                )
                if self.facts is None:
                    self.facts = facts
                await starttls.start_tls(self.service.dialogue, reader, writer, opts, facts)
            yield reader, writer

    async def exchange(self, hello: bytes, *, sslv2: bool = False) -> _Answer:
        """Send one hello on a fresh connection and read the answer, retrying politely.

        A reset in answer to the hello is a refusal (some stacks reset instead of
        alerting); a rate limit or a reset before the hello is retried with backoff.
        """
        attempts = max(1, self.options.attempts)
        for attempt in range(attempts):
            try:
                answer = await self._exchange_once(hello, sslv2=sslv2)
            except ResetError as exc:
                if exc.phase == "tls_hello":
                    self.hangups += 1
                    return None
                if attempt + 1 >= attempts:
                    raise
            except RateLimitedError:
                if attempt + 1 >= attempts:
                    raise
            else:
                if answer is None:
                    self.hangups += 1
                elif isinstance(answer, Alert):
                    self.alerts.append(answer)
                else:
                    self.hellos += 1
                return answer
            await asyncio.sleep(self.options.backoff * (2**attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    async def _exchange_once(self, hello: bytes, *, sslv2: bool) -> _Answer:
        async with self.plain() as (reader, writer):
            phase = "tls_hello"
            try:
                writer.write(hello)
                parser = HelloReader(accept_sslv2=sslv2)
                total = 0
                async with asyncio.timeout(self.options.timeout):
                    while True:
                        data = await reader.read(16384)
                        if not data:
                            return None
                        total += len(data)
                        if total > _MAX_HELLO_BYTES:
                            raise ProtocolError("server flooded the handshake", phase=phase)
                        answer = parser.feed(data)
                        if answer is not None:
                            return answer
            except ScanError:
                raise
            except Exception as exc:
                raise map_os_error(exc, phase) from exc

    def hello(
        self,
        version: str,
        suites: Sequence[int],
        *,
        groups: Sequence[int] | None = None,
        key_share_groups: Sequence[int] = (29,),
    ) -> bytes:
        return client_hello(
            version,
            suites,
            server_name=self.target.sni,
            groups=groups,
            key_share_groups=key_share_groups,
        )


def _accepted(answer: _Answer, version: str) -> ServerHello | None:
    """The ServerHello if it accepts ``version``.

    A HelloRetryRequest accepts TLS 1.3 too: it names the suite the server chose and
    only asks for another key share (a server that supports only P-256 answers our
    X25519 share with one).
    """
    if isinstance(answer, ServerHello) and answer.version == VERSION_CODES[version]:
        return answer
    return None


class Scanner:
    """Scans endpoints. Build one per run; it owns the connection limiter."""

    def __init__(
        self,
        options: ScanOptions | None = None,
        *,
        limiter: ConnectionLimiter | None = None,
        deep: DeepChecker | None = None,
    ) -> None:
        """``deep``: when given, every endpoint that scanned ``ok`` also gets sslyze's
        deep checks (the caller owns the checker's process pool and closes it)."""
        self.options = options or ScanOptions()
        self.limiter = limiter or LocalLimiter()
        self.deep = deep
        self._verify_ctx: ssl.SSLContext | None = None
        self._nocheck_ctx: ssl.SSLContext | None = None

    async def scan_many(self, targets: Iterable[Target]) -> AsyncIterator[EndpointResult]:
        """Scan all targets concurrently; yield each result as soon as it is done."""
        tasks = [asyncio.ensure_future(self.scan(t)) for t in targets]
        try:
            for fut in asyncio.as_completed(tasks):
                yield await fut
        finally:
            for task in tasks:
                task.cancel()

    def _connector(self) -> Connector:
        return Connector(
            self.limiter,
            connect_timeout=self.options.connect_timeout,
            source_address=self.options.source_address,
            close_timeout=min(1.0, self.options.timeout),
        )

    async def certificate(self, target: Target) -> CertificateInfo | None:
        """Only the certificate served for ``target.sni`` (one or two connections).

        For endpoints reached under several names: the full scan fetched the
        certificate for one name, this fetches it for each other one. None when no
        handshake succeeded.
        """
        service = SERVICES.get(target.service)
        if service is None:
            return None
        run = _EndpointRun(target, service, self.options, self._connector())
        try:
            info, _ = await self._certificate(run)
        except ScanError:
            return None
        return info

    async def scan(self, target: Target) -> EndpointResult:
        """Scan one endpoint. Never raises for what the endpoint does: errors are results."""
        result = await self._scan(target)
        if self.deep is not None and result.status == "ok" and target.tls_mode != "none":
            result = replace(result, deep=await self.deep.check(target))
        return result

    async def _scan(self, target: Target) -> EndpointResult:
        started = time.monotonic()
        scanned_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        service = SERVICES.get(target.service)
        connector = self._connector()
        if service is None:
            unknown = ErrorInfo("invalid_target", "plan", f"unknown service {target.service!r}")
            return EndpointResult(target=target, status="error", error=unknown)
        run = _EndpointRun(target, service, self.options, connector)
        error: ErrorInfo | None = None
        server_preference: bool | None = None
        groups: list[str] | None = None
        certificate: CertificateInfo | None = None
        after_tls: tuple[str, ...] = ()
        active: Literal["accepted", "refused"] | None = None
        injection: bool | None = None
        try:
            await self._protocols(run)
            if self.options.ciphers:
                server_preference = await self._preference(run)
            if self.options.groups and run.protocols.get("TLSv1.3"):
                groups = await self._groups(run)
            if self.options.certificate:
                certificate, after_tls = await self._certificate(run)
            if self.options.auth_check and service.tls_mode == "starttls" and run.facts:
                active = await self._login_check(run)
            if (
                self.options.injection_check
                and service.tls_mode == "starttls"
                and run.facts is not None
                and run.facts.starttls_offered
            ):
                injection = await self._injection(run, handshake_works=certificate is not None)
        except ScanError as exc:
            error = ErrorInfo(kind=exc.kind, phase=exc.phase, message=exc.message)
        except Exception as exc:  # a bug must not take the whole sweep down with it
            error = ErrorInfo(kind="internal", phase="scan", message=f"{type(exc).__name__}: {exc}")
        facts = run.facts
        starttls_info = None
        auth = None
        if service.tls_mode == "starttls" and facts is not None:
            starttls_info = StarttlsInfo(
                offered=facts.starttls_offered, injection_vulnerable=injection
            )
        if service.is_mail and (facts is not None or after_tls):
            before = facts.mechanisms if facts else ()
            plaintext = bool(facts and facts.plaintext_login)
            if active == "refused":
                plaintext = False
            auth = AuthInfo(
                before_tls=before,
                after_tls=after_tls,
                plaintext_before_tls=plaintext,
                active_check=active,
            )
        return EndpointResult(
            target=target,
            status="error" if error else "ok",
            error=error,
            protocols=dict(run.protocols),
            cipher_suites=run.suites,
            server_preference=server_preference,
            tls13_groups=groups,
            starttls=starttls_info,
            auth=auth,
            certificate=certificate,
            partial_errors=run.partial,
            connections=connector.opened,
            duration_ms=int((time.monotonic() - started) * 1000),
            scanned_at=scanned_at,
        )

    # -- protocols and suites -------------------------------------------------------

    async def _protocols(self, run: _EndpointRun) -> None:
        versions = [v for v in PROTOCOLS if v in self.options.protocols]
        first = _FIRST_VERSION if _FIRST_VERSION in versions else versions[0]
        # The first probe stands alone: if the endpoint is down, refuses STARTTLS or
        # tarpits, we learn it from one connection instead of six. As soon as it has
        # answered, every other version and the first one's elimination run at once.
        parts: list[list[int]] = []
        hello: ServerHello | None = None
        try:
            parts, hello = await self._probe(run, first)
        except StarttlsNotOfferedError:
            for v in versions:
                run.protocols[v] = None
            raise
        except (ProtocolError, ScanTimeout) as exc:
            if exc.phase != "tls_hello":
                raise
            run.protocols[first] = None
            run.note(exc)
        jobs: dict[str, Coroutine[Any, Any, None]] = {
            v: self._version(run, v) for v in versions if v != first
        }
        if hello is not None:
            jobs[first] = self._finish(run, first, parts, hello)
        await self._run_versions(run, jobs)
        # A silent hang-up on a hello longer than any the server answered may be a stack
        # that chokes on long suite lists (not a refusal): offer each half on its own.
        # Servers that refuse versions by hanging up (Dovecot) answered longer hellos.
        retry = [v for v, size in run.silent.items() if size > run.answered and v != "SSLv2"]
        await self._run_versions(run, {v: self._version(run, v, split=True) for v in retry})
        if run.errors and all(run.protocols.get(v) is None for v in versions):
            raise run.errors[0]  # not one version could be decided: the endpoint failed
        if set(versions) == set(PROTOCOLS) and not any(run.protocols.values()) and not run.hellos:
            # A TLS endpoint accepts some version: refusing all of them is a failure to
            # report as such, never as "every old protocol switched off".
            if run.alerts:
                names = sorted({a.description_name for a in run.alerts})
                raise TlsAlertError(
                    f"every ClientHello was refused with a TLS alert ({', '.join(names)})",
                    description=run.alerts[0].description,
                    phase="tls_hello",
                )
            if run.hangups:
                raise ResetError(
                    "the server hung up on every ClientHello without a TLS answer",
                    phase="tls_hello",
                )

    async def _run_versions(
        self, run: _EndpointRun, jobs: dict[str, Coroutine[Any, Any, None]]
    ) -> None:
        results = await asyncio.gather(*jobs.values(), return_exceptions=True)
        for version, res in zip(jobs, results, strict=True):
            if isinstance(res, ScanError):
                run.protocols[version] = None
                run.note(res)
            elif isinstance(res, BaseException):
                raise res

    async def _version(self, run: _EndpointRun, version: str, *, split: bool = False) -> None:
        parts, hello = await self._probe(run, version, split=split)
        if hello is not None:
            await self._finish(run, version, parts, hello)

    async def _probe(
        self, run: _EndpointRun, version: str, *, split: bool = False
    ) -> tuple[list[list[int]], ServerHello | None]:
        """One hello offering every suite of ``version``; sets ``protocols[version]``.

        Returns the suite list(s) offered — the two halves of it with ``split`` — and
        the accepting ServerHello, if any.
        """
        if version == "SSLv2":
            specs = list(ciphers.SSLV2_CIPHER_SPECS)
            answer = await run.exchange(sslv2_client_hello(specs), sslv2=True)
            ok = isinstance(answer, SSLv2ServerHello) and bool(answer.cipher_specs)
            run.protocols[version] = ok
            if ok and isinstance(answer, SSLv2ServerHello):
                run.suites[version] = [
                    ciphers.SSLV2_CIPHER_SPECS.get(s, f"UNKNOWN_0x{s:06x}")
                    for s in answer.cipher_specs
                ]
            return [], None
        offer = [s.code for s in ciphers.suites_for(version)]
        parts = [offer[: len(offer) // 2], offer[len(offer) // 2 :]] if split else [offer]
        hello: ServerHello | None = None
        for part in parts:
            hello_bytes = run.hello(version, part)
            answer = await run.exchange(hello_bytes)
            hello = _accepted(answer, version)
            if answer is None:
                run.silent[version] = len(hello_bytes)
            else:
                run.answered = max(run.answered, len(hello_bytes))
            if hello is not None:
                break
        run.protocols[version] = hello is not None
        return parts, hello

    async def _finish(
        self, run: _EndpointRun, version: str, parts: list[list[int]], hello: ServerHello
    ) -> None:
        """Eliminate through every offered list, starting from the suite already chosen."""
        chosen = [hello.cipher_suite]
        if self.options.ciphers:
            for part in parts:
                chosen = await self._eliminate(run, version, part, chosen)
        run.suites[version] = [ciphers.name_of(c) for c in chosen]

    async def _eliminate(
        self, run: _EndpointRun, version: str, offer: list[int], chosen: list[int]
    ) -> list[int]:
        remaining = [c for c in offer if c not in chosen]
        while remaining:
            try:
                answer = await run.exchange(run.hello(version, remaining))
            except ScanError as exc:
                run.note(exc)  # the list so far stands; the error says it may be short
                break
            hello = _accepted(answer, version)
            if hello is None:
                break
            if hello.cipher_suite not in remaining:
                run.note(
                    ProtocolError(
                        f"{version}: server chose suite 0x{hello.cipher_suite:04x} "
                        "that was not offered",
                        phase="tls_hello",
                    )
                )
                break
            chosen.append(hello.cipher_suite)
            remaining.remove(hello.cipher_suite)
        return chosen

    async def _preference(self, run: _EndpointRun) -> bool | None:
        """Offer the server's top two suites reversed: does it still pick its favourite?"""
        for version in ("TLSv1.2", "TLSv1.3", "TLSv1.1", "TLSv1.0", "SSLv3"):
            names = run.suites.get(version, [])
            if len(names) < 2:
                continue
            first, second = (ciphers.by_name(n) for n in names[:2])
            if first is None or second is None:
                continue
            answer = await run.exchange(run.hello(version, [second.code, first.code]))
            hello = _accepted(answer, version)
            if hello is None:
                return None
            return hello.cipher_suite == first.code
        return None

    async def _groups(self, run: _EndpointRun) -> list[str]:
        """TLS 1.3 groups by elimination: empty key_share, so the server names its pick."""
        suites = [s.code for s in ciphers.suites_for("TLSv1.3")]
        remaining = list(TLS13_GROUPS)
        found: list[str] = []
        while remaining:
            hello_bytes = run.hello("TLSv1.3", suites, groups=remaining, key_share_groups=())
            answer = await run.exchange(hello_bytes)
            group = answer.selected_group if isinstance(answer, ServerHello) else None
            if group is None or group not in remaining:
                break
            found.append(GROUP_NAMES.get(group, f"0x{group:04x}"))
            remaining.remove(group)
        return found

    # -- full handshakes ------------------------------------------------------------

    def _contexts(self) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        if self._verify_ctx is None or self._nocheck_ctx is None:
            self._verify_ctx = verify_context(self.options.ca_file)
            self._nocheck_ctx = nocheck_context()
        return self._verify_ctx, self._nocheck_ctx

    async def _certificate(
        self, run: _EndpointRun
    ) -> tuple[CertificateInfo | None, tuple[str, ...]]:
        verify_ctx, nocheck_ctx = self._contexts()
        verify_message: str | None = None
        for ctx in (verify_ctx, nocheck_ctx):
            try:
                return await self._handshake(
                    run, ctx, trusted=ctx is verify_ctx, message=verify_message
                )
            except ssl.SSLCertVerificationError as exc:
                verify_message = exc.verify_message or str(exc)
            except ScanError as exc:
                run.note(exc)
                return None, ()
        return None, ()

    async def _handshake(
        self, run: _EndpointRun, ctx: ssl.SSLContext, *, trusted: bool, message: str | None
    ) -> tuple[CertificateInfo | None, tuple[str, ...]]:
        opts = self.options.dialogue()
        async with run.plain() as (reader, writer):
            try:
                async with asyncio.timeout(self.options.timeout):
                    await writer.start_tls(ctx, server_hostname=run.target.sni)
            except ssl.SSLCertVerificationError:
                raise
            except Exception as exc:
                raise map_os_error(exc, "tls_handshake") from exc
            sslobj = writer.get_extra_info("ssl_object")
            der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
            chain_length = _chain_length(sslobj)
            info = None
            if der:
                info = analyse_certificate(
                    der,
                    hostname=run.target.sni or run.target.ip,
                    trusted=trusted,
                    verify_message=message,
                    chain_length=chain_length,
                    now=datetime.now(UTC),
                )
            after: tuple[str, ...] = ()
            if run.service.is_mail:
                try:
                    facts = await starttls.capabilities_after_tls(
                        run.service.dialogue,
                        reader,
                        writer,
                        opts,
                        greeting=run.service.tls_mode == "implicit",
                    )
                    after = facts.mechanisms
                except ScanError as exc:
                    exc.phase = "auth"
                    run.note(exc)
            return info, after

    async def _login_check(self, run: _EndpointRun) -> Literal["accepted", "refused"] | None:
        opts = self.options.dialogue()
        try:
            async with run.connector.open(run.target.ip, run.target.port) as (reader, writer):
                facts = await starttls.read_capabilities(run.service.dialogue, reader, writer, opts)
                if not facts.plaintext_login:
                    return None
                return await starttls.try_plaintext_login(
                    run.service.dialogue, reader, writer, opts, facts
                )
        except ScanError as exc:
            exc.phase = "auth"
            run.note(exc)
            return None

    async def _injection(self, run: _EndpointRun, *, handshake_works: bool) -> bool | None:
        """STARTTLS command injection; None when it could not be decided.

        Some servers (Dovecot) hand the pipelined plaintext to their TLS layer, so the
        handshake fails. When a plain upgrade of the same endpoint works, that failure
        shows the plaintext was not executed as a command: not vulnerable.
        """
        opts = self.options.dialogue()
        _, nocheck_ctx = self._contexts()
        try:
            async with run.connector.open(run.target.ip, run.target.port) as (reader, writer):
                await starttls.read_capabilities(run.service.dialogue, reader, writer, opts)
                return await starttls.check_injection(
                    run.service.dialogue, reader, writer, opts, nocheck_ctx, run.target.sni
                )
        except (HandshakeError, ResetError) as exc:
            if handshake_works and exc.phase == "tls_handshake":
                return False
            run.note(exc)
            return None
        except ScanError as exc:
            run.note(exc)
            return None


def _chain_length(sslobj: object) -> int:
    inner = getattr(sslobj, "_sslobj", None)
    getter = getattr(inner, "get_unverified_chain", None)
    if getter is None:
        return 1
    try:
        return len(getter() or ())
    except (ssl.SSLError, ValueError):
        return 1
