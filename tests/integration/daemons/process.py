"""Start, watch and stop one real daemon process tree.

Every daemon runs in the foreground under :class:`subprocess.Popen` in a new session,
so that everything it forks can be found again (by session id, in ``/proc``) and killed
if a graceful stop does not end it: no test run leaves processes behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .model import DaemonEndpoint


class DaemonError(Exception):
    """A daemon could not be prepared, started or stopped."""


class DaemonsNotInstalledError(DaemonError):
    """The daemons' binaries or system users are missing from this machine."""


_GREETINGS = {"smtp": b"220", "submission": b"220", "imap": b"* OK", "pop3": b"+OK"}


def probe_once(endpoint: DaemonEndpoint, source_address: str, ca_file: str, timeout: float) -> None:
    """Raise :class:`OSError` unless the endpoint greets or completes a TLS handshake.

    A plaintext service must send its greeting (for Postfix this proves that smtpd,
    which reads its TLS settings only when spawned, starts); an implicit-TLS service
    must complete a handshake with a certificate that verifies against the test CA.
    """
    with socket.create_connection(
        (endpoint.ip, endpoint.port), timeout=timeout, source_address=(source_address, 0)
    ) as sock:
        if endpoint.tls_mode == "starttls":
            greeting = sock.recv(512)
            expected = _GREETINGS[endpoint.service]
            if not greeting.startswith(expected):
                raise OSError(f"unexpected greeting {greeting[:80]!r}, wanted {expected!r}")
            return
        context = ssl.create_default_context(cafile=ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        with context.wrap_socket(sock, server_hostname=endpoint.hostname):
            pass


def tail(path: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a log file, or a note that it is missing."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"({path}: {exc.strerror})"
    return "\n".join(text.splitlines()[-lines:])


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the test process dies.

    A safety net for a test run killed without teardown: each daemon's master is a
    direct child, and all three masters take their children down when they die.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def session_members(session_ids: set[int]) -> set[int]:
    """Pids of live processes whose session id is one of ``session_ids``."""
    members: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state ppid pgrp session ...
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[3]) in session_ids:
            members.add(int(entry.name))
    return members


@dataclass
class DaemonProcess:
    """One daemon's process tree: command, logs, readiness and shutdown.

    ``prepare_command`` runs to completion before ``command`` (Postfix's integrity
    check, which creates its queue). ``command`` must stay in the foreground; SIGTERM
    stops it, and it stops its own children.
    """

    name: str
    command: Sequence[str]
    logs: Sequence[Path]
    console_log: Path
    endpoints: Sequence[DaemonEndpoint]
    prepare_command: Sequence[str] | None = None
    _preparer: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _popen: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _sessions: set[int] = field(default_factory=set, init=False, repr=False)

    def _spawn(self, command: Sequence[str]) -> subprocess.Popen[bytes]:
        with self.console_log.open("ab") as console:
            popen = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self._sessions.add(popen.pid)
        return popen

    def begin_prepare(self) -> None:
        """Start ``prepare_command`` (if any) without waiting for it."""
        if self.prepare_command is not None and self._preparer is None:
            self._preparer = self._spawn(self.prepare_command)

    def start(self, deadline: float) -> None:
        """Finish preparing, then start the daemon in a session of its own."""
        self.begin_prepare()
        if self._preparer is not None:
            try:
                status = self._preparer.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise DaemonError(
                    f"{self.name}: {self.prepare_command} did not finish in time\n"
                    f"{self.log_tails()}"
                ) from None
            if status != 0:
                raise DaemonError(
                    f"{self.name}: {self.prepare_command} failed with status {status}\n"
                    f"{self.log_tails()}"
                )
        self._popen = self._spawn(self.command)

    def wait_ready(self, deadline: float, source_address: str, ca_file: str) -> None:
        """Block until every endpoint answers; raise :class:`DaemonError` at ``deadline``."""
        pending = list(self.endpoints)
        while pending:
            self._fail_if_exited()
            endpoint = pending[0]
            timeout = max(0.2, min(2.0, deadline - time.monotonic()))
            try:
                probe_once(endpoint, source_address, ca_file, timeout)
            except OSError as exc:  # ssl.SSLError is an OSError too
                if time.monotonic() >= deadline:
                    raise DaemonError(
                        f"{self.name} not ready in time: {endpoint.service} on "
                        f"{endpoint.ip}:{endpoint.port}: {exc}\n{self.log_tails()}"
                    ) from exc
                time.sleep(0.05)
                continue
            pending.pop(0)

    def _fail_if_exited(self) -> None:
        if self._popen is not None and self._popen.poll() is not None:
            raise DaemonError(
                f"{self.name} exited with status {self._popen.returncode} while starting\n"
                f"{self.log_tails()}"
            )

    def log_tails(self) -> str:
        """The end of the daemon's console output and logs, for error messages."""
        parts = []
        for path in (self.console_log, *self.logs):
            parts.append(f"--- {path} ---\n{tail(path)}")
        return "\n".join(parts)

    def request_stop(self) -> None:
        """Send SIGTERM, without waiting (see :meth:`finish_stop`)."""
        for child in (self._preparer, self._popen):
            if child is not None and child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def finish_stop(self, deadline: float) -> None:
        """Wait for the process tree to end until ``deadline``, then kill what is left."""
        self.request_stop()
        while session_members(self._sessions) and time.monotonic() < deadline:
            time.sleep(0.05)
        # Membership is read from /proc at kill time, so a recycled pid is never hit.
        survivors = session_members(self._sessions)
        for pid in survivors:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # SIGKILL is delivered asynchronously: return only once they are gone.
        kill_deadline = time.monotonic() + 5.0
        while survivors and time.monotonic() < kill_deadline:
            time.sleep(0.01)
            survivors = session_members(self._sessions)
        for child in (self._preparer, self._popen):
            if child is not None:
                if child.poll() is None:
                    child.kill()
                child.wait()
        self._preparer = None
        self._popen = None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the daemon; kill whatever of its process tree survives ``timeout``."""
        self.request_stop()
        self.finish_stop(time.monotonic() + timeout)

    def pids(self) -> set[int]:
        """Live processes of the daemon (its sessions), for tests of the teardown."""
        return session_members(self._sessions)
