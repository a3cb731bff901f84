"""Deep checks with sslyze: vulnerabilities, renegotiation, resumption, trust stores.

What only a full TLS stack can tell: Heartbleed, OpenSSL CCS injection, ROBOT,
renegotiation (RFC 5746 and client-initiated), TLS compression (CRIME),
TLS_FALLBACK_SCSV, TLS 1.2 session resumption, and sslyze's certificate checks against
the Mozilla, Apple, Microsoft, Android and Java trust stores (plus an extra CA file).
STARTTLS services (SMTP, IMAP, POP3) go through sslyze's opportunistic TLS support.

Two layers:

- :func:`run_deep_checks` runs sslyze on one target, blocking, and maps its output into
  :class:`~scanner.models.DeepChecks` (the ``deep`` part of the result document). Each
  check carries its own error when sslyze failed it: a failed check is never "not
  vulnerable".
- :class:`DeepChecker` runs that off the event loop in a process pool. sslyze is
  threaded, blocking and has leaked memory in long-running processes, so workers are
  recycled after ``max_tasks_per_child`` checks; a check that outlives its timeout has
  its worker killed, and the checks that shared the (now broken) pool are retried once
  on a fresh one::

      async with DeepChecker(DeepOptions(ca_file=...), max_workers=2) as checker:
          deep = await checker.check(target)        # -> DeepChecks
          result = dataclasses.replace(result, deep=deep)

sslyze is imported only inside the functions that need it (in the workers), so
importing this module costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import time
import warnings
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, cast

from scanner.errors import TargetError
from scanner.models import (
    CertificateChecks,
    CertificateDeployment,
    DeepChecks,
    ErrorInfo,
    RenegotiationCheck,
    ResumptionCheck,
    ResumptionRate,
    ResumptionSupport,
    RobotCheck,
    RobotResult,
    SupportCheck,
    Target,
    TrustStoreVerdict,
    VulnerabilityCheck,
)
from scanner.services import SERVICES

if TYPE_CHECKING:
    from traceback import TracebackException

    from sslyze import (
        CertificateDeploymentAnalysisResult,
        CertificateInfoScanResult,
        CompressionScanResult,
        FallbackScsvScanResult,
        HeartbleedScanResult,
        OpenSslCcsInjectionScanResult,
        RobotScanResult,
        ServerScanRequest,
        ServerScanResult,
        SessionRenegotiationScanResult,
        SessionResumptionSupportScanResult,
    )

__all__ = [
    "ALL_CHECKS",
    "CertificateChecks",
    "CertificateDeployment",
    "CheckName",
    "DeepChecker",
    "DeepChecks",
    "DeepOptions",
    "DeepPoolStats",
    "RenegotiationCheck",
    "ResumptionCheck",
    "ResumptionRate",
    "RobotCheck",
    "SupportCheck",
    "TrustStoreVerdict",
    "VulnerabilityCheck",
    "run_deep_checks",
]

CheckName = Literal[
    "heartbleed",
    "ccs_injection",
    "robot",
    "renegotiation",
    "compression",
    "fallback_scsv",
    "session_resumption",
    "certificate",
]
ALL_CHECKS: tuple[CheckName, ...] = (
    "heartbleed",
    "ccs_injection",
    "robot",
    "renegotiation",
    "compression",
    "fallback_scsv",
    "session_resumption",
    "certificate",
)

# Our check -> sslyze's ScanCommand value, which is also its AllScanCommandsAttempts field.
_COMMANDS: dict[CheckName, str] = {
    "heartbleed": "heartbleed",
    "ccs_injection": "openssl_ccs_injection",
    "robot": "robot",
    "renegotiation": "session_renegotiation",
    "compression": "tls_compression",
    "fallback_scsv": "tls_fallback_scsv",
    "session_resumption": "session_resumption",
    "certificate": "certificate_info",
}

# Our STARTTLS dialogues -> sslyze's ProtocolWithOpportunisticTlsEnum (as in reference.py).
_STARTTLS = {"smtp": "SMTP", "imap": "IMAP", "pop3": "POP3"}

# sslyze's trust store names -> our stable keys, in the order the document lists them.
_STORES = {
    "Mozilla": "mozilla",
    "Apple": "apple",
    "Windows": "microsoft",
    "Android": "android",
    "Java": "java",
    "Supplied CA file": "custom",
}
_STORE_ORDER = {key: i for i, key in enumerate(_STORES.values())}

# Phase of failures of the deep-check machinery itself (worker timeout or crash).
_PHASE = "deep"
_MAX_MESSAGE = 500


@dataclass(frozen=True, slots=True)
class DeepOptions:
    """How the deep checks run. sslyze's timeouts are whole seconds.

    ``timeout`` bounds one endpoint's whole sslyze run (wall clock, seconds): past it
    the worker is killed and every requested check reports a ``timeout`` error.
    ``per_server_connections`` is sslyze's concurrent-connection limit for the
    endpoint; mail servers limit connections per client, so keep it small.
    ``ca_file`` adds a ``custom`` trust store for the certificate checks.
    """

    checks: tuple[CheckName, ...] = ALL_CHECKS
    network_timeout: int = 10
    network_max_retries: int = 2
    per_server_connections: int = 2
    timeout: float = 240.0
    ca_file: str | None = None
    ehlo_name: str = "tlsfleet.invalid"

    def __post_init__(self) -> None:
        unknown = set(self.checks) - set(ALL_CHECKS)
        if unknown:
            raise ValueError(f"unknown deep checks: {', '.join(sorted(unknown))}")
        if self.network_timeout < 1 or self.per_server_connections < 1 or self.timeout <= 0:
            raise ValueError("deep-check timeouts and connection limits must be positive")
        if self.network_max_retries < 0:
            raise ValueError("network_max_retries must not be negative")
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise ValueError(f"CA file not found: {self.ca_file}")


# -- one endpoint, blocking -------------------------------------------------------------


def run_deep_checks(target: Target, options: DeepOptions | None = None) -> DeepChecks:
    """Run sslyze's deep checks on ``target`` and map the result; blocks for seconds.

    Never raises for a failure of the server or of sslyze: the result carries the
    errors. Call it from a worker thread or process, never on the event loop.
    """
    options = options or DeepOptions()
    started = time.monotonic()
    checks = tuple(dict.fromkeys(options.checks))
    from sslyze import Scanner

    try:
        request = build_request(target, options)
    except TargetError as exc:
        return _failed(checks, target, ErrorInfo(exc.kind, exc.phase, exc.message), started)
    try:
        scanner = Scanner(
            per_server_concurrent_connections_limit=options.per_server_connections,
            concurrent_server_scans_limit=1,
        )
        scanner.queue_scans([request])
        (result,) = list(scanner.get_results())
        return map_result(result, target, checks, started)
    except Exception as exc:  # a bug in sslyze or in the mapping: report, never crash
        message = f"sslyze failed: {type(exc).__name__}: {exc}"[:_MAX_MESSAGE]
        return _failed(checks, target, ErrorInfo("internal", _PHASE, message), started)


def build_request(target: Target, options: DeepOptions) -> ServerScanRequest:
    """The sslyze scan request for ``target``: its address, SNI, STARTTLS and commands.

    Raises :class:`~scanner.errors.TargetError` for a target sslyze cannot check (no
    TLS, an unknown service, a STARTTLS dialogue sslyze lacks).
    """
    from sslyze import (
        CertificateInfoExtraArgument,
        ProtocolWithOpportunisticTlsEnum,
        ScanCommand,
        ScanCommandsExtraArguments,
        ServerNetworkConfiguration,
        ServerNetworkLocation,
        ServerScanRequest,
    )

    service = SERVICES.get(target.service)
    if service is None:
        raise TargetError(f"unknown service {target.service!r}")
    if target.tls_mode == "none":
        raise TargetError(f"{target.service} on port {target.port} is not a TLS service")
    starttls = None
    if target.tls_mode == "starttls":
        if service.dialogue not in _STARTTLS:
            raise TargetError(f"sslyze has no STARTTLS support for {service.dialogue}")
        starttls = ProtocolWithOpportunisticTlsEnum(_STARTTLS[service.dialogue])
    sni = target.sni or target.host
    commands = {ScanCommand(_COMMANDS[c]) for c in options.checks}
    extra = ScanCommandsExtraArguments()
    if options.ca_file and "certificate" in options.checks:
        extra = ScanCommandsExtraArguments(
            certificate_info=CertificateInfoExtraArgument(custom_ca_file=Path(options.ca_file))
        )
    return ServerScanRequest(
        server_location=ServerNetworkLocation(hostname=sni, port=target.port, ip_address=target.ip),
        network_configuration=ServerNetworkConfiguration(
            tls_server_name_indication=sni,
            tls_opportunistic_encryption=starttls,
            smtp_ehlo_hostname=options.ehlo_name
            if service.dialogue == "smtp" and starttls
            else None,
            network_timeout=options.network_timeout,
            # sslyze counts attempts, not retries.
            network_max_retries=options.network_max_retries + 1,
        ),
        scan_commands=commands,
        scan_commands_extra_arguments=extra,
    )


def map_result(
    result: ServerScanResult, target: Target, checks: Sequence[CheckName], started: float
) -> DeepChecks:
    """Map one sslyze ``ServerScanResult`` into :class:`DeepChecks` (only ``checks``)."""
    from sslyze import ScanCommandAttemptStatusEnum, ServerScanStatusEnum

    if result.scan_status != ServerScanStatusEnum.COMPLETED or result.scan_result is None:
        error = _error_from_trace(result.connectivity_error_trace, None, "connect")
        return _failed(checks, target, error, started)
    fields: dict[str, Any] = {}
    for check in checks:
        attempt = getattr(result.scan_result, _COMMANDS[check])
        if attempt.status == ScanCommandAttemptStatusEnum.COMPLETED and attempt.result is not None:
            fields[check] = _MAPPERS[check](attempt.result)
        else:
            reason = attempt.error_reason.value if attempt.error_reason else attempt.status.value
            error = _error_from_trace(attempt.error_trace, reason, _PHASE)
            fields[check] = _failed_check(check, target, error)
    return DeepChecks(**fields, sslyze_version=_sslyze_version(), duration_ms=_ms(started))


def _heartbleed(result: HeartbleedScanResult) -> VulnerabilityCheck:
    return VulnerabilityCheck(vulnerable=result.is_vulnerable_to_heartbleed)


def _ccs_injection(result: OpenSslCcsInjectionScanResult) -> VulnerabilityCheck:
    return VulnerabilityCheck(vulnerable=result.is_vulnerable_to_ccs_injection)


def _robot(result: RobotScanResult) -> RobotCheck:
    return RobotCheck(result=cast(RobotResult, result.robot_result.name))


def _renegotiation(result: SessionRenegotiationScanResult) -> RenegotiationCheck:
    return RenegotiationCheck(
        secure_renegotiation=result.supports_secure_renegotiation,
        client_renegotiation_dos=result.is_vulnerable_to_client_renegotiation_dos,
        client_renegotiations_accepted=result.client_renegotiations_success_count,
    )


def _compression(result: CompressionScanResult) -> SupportCheck:
    return SupportCheck(supported=result.supports_compression)


def _fallback_scsv(result: FallbackScsvScanResult) -> SupportCheck:
    return SupportCheck(supported=result.supports_fallback_scsv)


def _resumption(result: SessionResumptionSupportScanResult) -> ResumptionCheck:
    return ResumptionCheck(
        session_id=ResumptionRate(
            result=cast(ResumptionSupport, result.session_id_resumption_result.name),
            attempted=result.session_id_attempted_resumptions_count,
            successful=result.session_id_successful_resumptions_count,
        ),
        tls_ticket=ResumptionRate(
            result=cast(ResumptionSupport, result.tls_ticket_resumption_result.name),
            attempted=result.tls_ticket_attempted_resumptions_count,
            successful=result.tls_ticket_successful_resumptions_count,
        ),
    )


def _certificate(result: CertificateInfoScanResult) -> CertificateChecks:
    without_sni = result.certificate_deployment_with_sni_disabled
    return CertificateChecks(
        sni=result.hostname_used_for_server_name_indication,
        deployments=tuple(_deployment(d) for d in result.certificate_deployments),
        without_sni=_deployment(without_sni) if without_sni is not None else None,
    )


def _deployment(deployment: CertificateDeploymentAnalysisResult) -> CertificateDeployment:
    from cryptography.hazmat.primitives import hashes

    leaf = deployment.received_certificate_chain[0]
    trust = [
        TrustStoreVerdict(
            store=_STORES.get(p.trust_store.name, p.trust_store.name.lower()),
            version=p.trust_store.version,
            trusted=p.was_validation_successful,
            error=p.validation_error,
        )
        for p in deployment.path_validation_results
    ]
    trust.sort(key=lambda v: _STORE_ORDER.get(v.store, len(_STORE_ORDER)))
    return CertificateDeployment(
        subject=leaf.subject.rfc4514_string(),
        fingerprint_sha256=leaf.fingerprint(hashes.SHA256()).hex(),
        chain_length=len(deployment.received_certificate_chain),
        trust=tuple(trust),
        extended_validation=deployment.leaf_certificate_is_ev,
        ocsp_must_staple=deployment.leaf_certificate_has_must_staple_extension,
        sct_count=deployment.leaf_certificate_signed_certificate_timestamps_count,
        ocsp_stapled=deployment.ocsp_response is not None,
        ocsp_response_trusted=deployment.ocsp_response_is_trusted,
        chain_order_valid=deployment.received_chain_has_valid_order,
        chain_contains_anchor=deployment.received_chain_contains_anchor_certificate,
        chain_has_sha1_signature=deployment.verified_chain_has_sha1_signature,
        legacy_symantec_anchor=deployment.verified_chain_has_legacy_symantec_anchor,
    )


# sslyze's result object of each check -> ours (the attempt's result is untyped here).
_MAPPERS: dict[CheckName, Callable[[Any], object]] = {
    "heartbleed": _heartbleed,
    "ccs_injection": _ccs_injection,
    "robot": _robot,
    "renegotiation": _renegotiation,
    "compression": _compression,
    "fallback_scsv": _fallback_scsv,
    "session_resumption": _resumption,
    "certificate": _certificate,
}


def _failed_check(check: CheckName, target: Target, error: ErrorInfo) -> object:
    """The form of ``check`` that says "not decided, because of ``error``"."""
    if check in ("heartbleed", "ccs_injection"):
        return VulnerabilityCheck(vulnerable=None, error=error)
    if check == "robot":
        return RobotCheck(result=None, error=error)
    if check == "renegotiation":
        return RenegotiationCheck(None, None, None, error=error)
    if check in ("compression", "fallback_scsv"):
        return SupportCheck(supported=None, error=error)
    if check == "session_resumption":
        return ResumptionCheck(session_id=None, tls_ticket=None, error=error)
    return CertificateChecks(sni=target.sni or target.host, error=error)


def _failed(
    checks: Sequence[CheckName], target: Target, error: ErrorInfo, started: float
) -> DeepChecks:
    """A whole run that failed: the run's error, repeated on every requested check."""
    fields: dict[str, Any] = {c: _failed_check(c, target, error) for c in checks}
    return DeepChecks(**fields, error=error, sslyze_version=None, duration_ms=_ms(started))


def _error_from_trace(
    trace: TracebackException | None, reason: str | None, default_phase: str
) -> ErrorInfo:
    """Classify an sslyze failure into our error kinds (``docs/result-document.md``)."""
    from sslyze import errors

    if reason == "CLIENT_CERTIFICATE_NEEDED":
        return ErrorInfo("handshake", "tls_handshake", "the server requires a client certificate")
    if trace is None:
        return ErrorInfo("internal", default_phase, f"sslyze: {reason or 'no result'}")
    text = "".join(trace.format_exception_only()).strip()
    message = (f"sslyze {reason}: {text}" if reason else f"sslyze: {text}")[:_MAX_MESSAGE]
    exc_type: type[BaseException] = trace.exc_type or Exception
    kind, phase = "internal", default_phase
    if issubclass(exc_type, errors.ServerRejectedOpportunisticTlsNegotiation):
        lowered = text.lower()
        phase = "starttls"
        if "not support" in lowered:
            kind = "starttls_not_offered"
        elif " 421" in lowered or "too many" in lowered:
            kind = "rate_limited"
        else:
            kind = "starttls_refused"
    elif issubclass(exc_type, errors.TlsHandshakeTimedOut):
        kind, phase = "timeout", "tls_handshake"
    elif issubclass(exc_type, errors.TlsHandshakeFailed):
        kind, phase = "handshake", "tls_handshake"
    elif issubclass(exc_type, errors.ConnectionToServerTimedOut):
        kind, phase = "timeout", "connect"
    elif issubclass(exc_type, errors.ServerRejectedConnection):
        kind, phase = "refused", "connect"
    elif issubclass(exc_type, errors.ConnectionToServerFailed):
        kind, phase = "connection", "connect"
    elif issubclass(exc_type, TimeoutError):
        kind = "timeout"
    elif issubclass(exc_type, ConnectionRefusedError):
        kind = "refused"
    elif issubclass(exc_type, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        kind = "reset"
    elif issubclass(exc_type, OSError):
        kind = "connection"
    return ErrorInfo(kind, phase, message)


def _sslyze_version() -> str:
    from sslyze.__version__ import __version__

    return str(__version__)


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


# -- the worker side ----------------------------------------------------------------------

# Set in each worker process by _init_worker: the pool's shared array of "which pid runs
# the check in slot i" (0: none), so the parent can kill the worker of a hung check.
_worker_slots: Any = None


def _init_worker(slots: Any) -> None:
    global _worker_slots
    _worker_slots = slots
    # Ctrl-C reaches the whole process group: the parent decides, workers must not die
    # of it half-way through a check and break the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # sslyze's bundled trust stores hold a root with a non-positive serial number, which
    # cryptography warns about each time a worker loads them.
    warnings.filterwarnings("ignore", message="Parsed a serial number which wasn't positive")


@dataclass(frozen=True, slots=True)
class _Job:
    target: Target
    options: DeepOptions
    slot: int


def _work(job: _Job) -> tuple[int, DeepChecks]:
    pid = os.getpid()
    _worker_slots[job.slot] = pid
    try:
        return pid, run_deep_checks(job.target, job.options)
    finally:
        _worker_slots[job.slot] = 0


# -- the parent side: a recycled process pool ----------------------------------------------


@dataclass(frozen=True, slots=True)
class DeepPoolStats:
    """What a :class:`DeepChecker` has done so far (for logs, metrics and tests).

    ``workers``: (pid, checks completed) of the most recent worker processes, in the
    order they first completed a check.
    """

    submitted: int
    completed: int
    timed_out: int
    retried: int
    pool_restarts: int
    workers: tuple[tuple[int, int], ...]


@dataclass(eq=False)
class _Pool:
    """One process pool and the shared pid slots of the checks it runs."""

    executor: ProcessPoolExecutor
    slots: Any
    retired: bool = False

    def running_pid(self, slot: int) -> int:
        return int(self.slots[slot])

    def kill_running(self) -> None:
        """Kill every worker running a check (the pool breaks and stops the rest)."""
        for pid in list(self.slots):
            if pid:
                _kill(int(pid))


@dataclass
class _IpGate:
    semaphore: asyncio.Semaphore
    users: int = 0


@dataclass
class _Counters:
    submitted: int = 0
    completed: int = 0
    timed_out: int = 0
    retried: int = 0
    pool_restarts: int = 0
    workers: OrderedDict[int, int] = field(default_factory=OrderedDict)


_MAX_WORKERS_KEPT = 256


class DeepChecker:
    """Runs :func:`run_deep_checks` in a recycled process pool, off the event loop.

    - ``max_workers`` processes, each replaced after ``max_tasks_per_child`` checks
      (sslyze has leaked memory in long-running processes);
    - at most ``concurrency`` checks at once (default and maximum: ``max_workers``, so
      a check never waits in the pool's queue: its timeout measures its own run) and at
      most ``per_ip`` at once per IP address (sslyze opens several connections per
      check; mail servers limit connections per client);
    - a check that exceeds ``options.timeout`` has its worker killed and returns a
      ``timeout`` error. Killing a worker breaks the pool: checks that were running in
      it are retried once on a fresh pool. A cancelled ``check()`` kills its worker too.

    Processes start with ``forkserver`` (or ``spawn``): ``max_tasks_per_child`` does
    not work with ``fork``. Nothing starts before the first check. Use one checker per
    event loop, and ``close()`` it (or ``async with``) when done.
    """

    def __init__(
        self,
        options: DeepOptions | None = None,
        *,
        max_workers: int = 2,
        max_tasks_per_child: int = 25,
        concurrency: int | None = None,
        per_ip: int = 1,
        start_method: Literal["forkserver", "spawn"] | None = None,
    ) -> None:
        if max_workers < 1 or max_tasks_per_child < 1 or per_ip < 1:
            raise ValueError("max_workers, max_tasks_per_child and per_ip must be positive")
        concurrency = max_workers if concurrency is None else concurrency
        # More checks in flight than workers would queue inside the pool, where the
        # timeout would count waiting time, and where CPython 3.11's worker replacement
        # can stall (gh-115634: a backlog plus max_tasks_per_child deadlocks the pool).
        if not 1 <= concurrency <= max_workers:
            raise ValueError("concurrency must be between 1 and max_workers")
        if start_method is None:
            methods = multiprocessing.get_all_start_methods()
            start_method = "forkserver" if "forkserver" in methods else "spawn"
        self.options = options or DeepOptions()
        self._context: BaseContext = multiprocessing.get_context(start_method)
        self._max_workers = max_workers
        self._max_tasks_per_child = max_tasks_per_child
        self._concurrency = concurrency
        self._per_ip = per_ip
        self._semaphore = asyncio.Semaphore(concurrency)
        self._free_slots = list(range(concurrency))
        self._gates: dict[str, _IpGate] = {}
        self._pool: _Pool | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False
        self._counters = _Counters()

    async def __aenter__(self) -> DeepChecker:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def check(self, target: Target, options: DeepOptions | None = None) -> DeepChecks:
        """The deep checks of ``target`` (``options`` default to the checker's own).

        Never raises for a failure of the server, sslyze or a worker: the result carries
        it. Raises RuntimeError when the checker is closed.
        """
        if self._closed:
            raise RuntimeError("the deep checker is closed")
        options = options or self.options
        async with self._ip_gate(target.ip), self._semaphore:
            slot = self._free_slots.pop()
            try:
                return await self._run(target, options, slot)
            finally:
                self._free_slots.append(slot)

    def stats(self) -> DeepPoolStats:
        """Counters since the checker was created."""
        c = self._counters
        return DeepPoolStats(
            submitted=c.submitted,
            completed=c.completed,
            timed_out=c.timed_out,
            retried=c.retried,
            pool_restarts=c.pool_restarts,
            workers=tuple(c.workers.items()),
        )

    async def close(self) -> None:
        """Stop the workers and wait for them to exit.

        Checks still running are ended (their workers are killed) and return errors.
        """
        if self._closed:
            return
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None and not pool.retired:
            pool.retired = True
            pool.kill_running()
            await asyncio.to_thread(pool.executor.shutdown, wait=True, cancel_futures=True)
        if self._retiring:
            await asyncio.gather(*self._retiring)

    async def _run(self, target: Target, options: DeepOptions, slot: int) -> DeepChecks:
        started = time.monotonic()
        checks = tuple(dict.fromkeys(options.checks))
        for attempt in range(2):
            if attempt:
                self._counters.retried += 1
            if self._closed:
                break
            pool = self._live_pool()
            pool.slots[slot] = 0
            try:
                future = pool.executor.submit(_work, _Job(target, options, slot))
            except BrokenProcessPool:
                self._retire(pool)
                continue
            self._counters.submitted += 1
            try:
                pid, result = await asyncio.wait_for(asyncio.wrap_future(future), options.timeout)
            except TimeoutError:
                self._counters.timed_out += 1
                self._abandon(pool, slot)
                message = (
                    f"the deep checks did not finish within {options.timeout:g} s; "
                    "their worker was stopped"
                )
                return _failed(checks, target, ErrorInfo("timeout", _PHASE, message), started)
            except asyncio.CancelledError:
                # Nobody waits for this check any more: stop it hammering the server.
                self._abandon(pool, slot)
                raise
            except BrokenProcessPool:
                # Our worker died, or another check's worker was killed and took the
                # pool down with it: one more try on a fresh pool.
                self._retire(pool)
                continue
            self._counters.completed += 1
            self._note_worker(pid)
            return result
        message = (
            "the deep checker was closed"
            if self._closed
            else "the sslyze worker died twice while running these checks"
        )
        return _failed(checks, target, ErrorInfo("internal", _PHASE, message), started)

    def _live_pool(self) -> _Pool:
        if self._pool is None:
            slots = self._context.RawArray("i", self._concurrency)
            executor = ProcessPoolExecutor(
                max_workers=self._max_workers,
                mp_context=self._context,
                initializer=_init_worker,
                initargs=(slots,),
                max_tasks_per_child=self._max_tasks_per_child,
            )
            self._pool = _Pool(executor=executor, slots=slots)
        return self._pool

    def _abandon(self, pool: _Pool, slot: int) -> None:
        """Give up on the check in ``slot``: kill its worker, retire the pool."""
        pid = pool.running_pid(slot)
        if pid:
            _kill(pid)
            self._retire(pool)
        else:
            # Not started within its timeout although a worker should have been free:
            # the pool is stuck. Replace it, stopping whatever it still runs.
            self._retire(pool, kill_running=True)

    def _retire(self, pool: _Pool, *, kill_running: bool = False) -> None:
        """Stop using ``pool`` (broken, or about to be); the next check starts a fresh one."""
        if self._pool is pool:
            self._pool = None
            self._counters.pool_restarts += 1
        if pool.retired:
            return
        pool.retired = True
        if kill_running:
            pool.kill_running()
        # The pool is broken (a worker died or was killed), so its manager thread stops
        # the other workers and exits: joining it is quick, but not instant, hence in a
        # thread. (shutdown(wait=False) would clear attributes that CPython 3.11's
        # manager thread may still read: gh-119592.)
        task = asyncio.get_running_loop().create_task(
            asyncio.to_thread(pool.executor.shutdown, wait=True, cancel_futures=True)
        )
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _note_worker(self, pid: int) -> None:
        workers = self._counters.workers
        workers[pid] = workers.get(pid, 0) + 1
        while len(workers) > _MAX_WORKERS_KEPT:
            workers.popitem(last=False)

    @contextlib.asynccontextmanager
    async def _ip_gate(self, ip: str) -> AsyncIterator[None]:
        gate = self._gates.get(ip)
        if gate is None:
            gate = self._gates[ip] = _IpGate(asyncio.Semaphore(self._per_ip))
        gate.users += 1
        try:
            async with gate.semaphore:
                yield
        finally:
            gate.users -= 1
            if gate.users == 0:
                del self._gates[ip]


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
