"""Start both profiles' Postfix, Dovecot and nginx, and stop them all afterwards."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from .certs import FleetCertificates
from .dovecot import DOVECOT, MAIL_USER, DovecotInstance, DovecotPorts
from .model import (
    CLIENT_ADDRESS,
    MAIL_ACCOUNTS,
    PROFILES,
    SINK_DOMAIN,
    TEST_USER,
    DaemonEndpoint,
    DaemonFleet,
)
from .nginx import NGINX, NginxInstance
from .postfix import POSTCONF, POSTFIX, POSTFIX_MASTER, PostfixInstance, PostfixPorts
from .process import DaemonError, DaemonProcess, DaemonsNotInstalledError

INSTALL_HINT = "run `.ci/install-daemons.sh` as root to install them"

_BINARIES = (POSTFIX, POSTCONF, POSTFIX_MASTER, DOVECOT, NGINX)
_USERS = ("postfix", "dovecot", "dovenull", MAIL_USER)
_GROUPS = ("postdrop",)

# Generous for a loaded CI machine; the fleet is usually ready in 2-3 seconds, most of
# it Postfix's integrity check creating a new queue.
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def check_installed(binaries: Sequence[str] = _BINARIES) -> None:
    """Raise :class:`DaemonsNotInstalledError` unless the fleet can run here."""
    problems = [f"missing binary {path}" for path in binaries if not os.access(path, os.X_OK)]
    for user in _USERS:
        try:
            pwd.getpwnam(user)
        except KeyError:
            problems.append(f"missing system user {user}")
    for group in _GROUPS:
        try:
            grp.getgrnam(group)
        except KeyError:
            problems.append(f"missing system group {group}")
    if problems:
        raise DaemonsNotInstalledError(
            "the daemon fleet needs Postfix, Dovecot and nginx: "
            + "; ".join(problems)
            + f"; {INSTALL_HINT}"
        )
    if os.geteuid() != 0:
        raise DaemonsNotInstalledError("the daemon fleet must run as root (Postfix needs it)")


def _port_candidates() -> range:
    """Ports outside the kernel's ephemeral range, which outgoing connections use."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    if low - 20000 >= 4000:
        return range(20000, low)
    return range(high + 1, 65536)


def free_ports(ip: str, count: int) -> list[int]:
    """``count`` distinct TCP ports, free on ``ip`` now, outside the ephemeral range.

    Random, and checked by binding them all at once: outgoing connections never take
    them (not ephemeral), and concurrent test sessions rarely pick the same ones.
    """
    candidates = _port_candidates()
    sockets: list[socket.socket] = []
    try:
        while len(sockets) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((ip, secrets.choice(candidates)))
            except OSError:
                sock.close()
                continue
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def stop_all(processes: Sequence[DaemonProcess], timeout: float = STOP_TIMEOUT) -> None:
    """Stop every process in parallel; report (after trying all) any that failed."""
    errors: list[str] = []
    for process in processes:
        try:
            process.request_stop()
        except Exception as exc:  # keep stopping the others
            errors.append(f"{process.name}: {exc!r}")
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.finish_stop(deadline)
        except Exception as exc:
            errors.append(f"{process.name}: {exc!r}")
    if errors:
        raise DaemonError("could not stop cleanly: " + "; ".join(errors))


def _archive(root: Path, artifacts_dir: Path) -> None:
    """Copy the generated configs and the logs (not keys, queues, mail or sockets)."""
    for path in root.rglob("*"):
        wanted = path.suffix in {".cf", ".conf"} or path.name == "console.log"
        if (wanted or path.parent == root / "logs") and path.is_file() and not path.is_symlink():
            target = artifacts_dir / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


@contextlib.contextmanager
def running_fleet(
    artifacts_dir: Path, startup_timeout: float = STARTUP_TIMEOUT
) -> Iterator[DaemonFleet]:
    """Run the whole fleet for the duration of the ``with`` block.

    The daemons run from a private directory under the system temporary directory,
    not under ``artifacts_dir``: they drop privileges (Postfix's mail_owner locks files
    in its data directory, Dovecot's auth process reads the passwd-file as dovecot, the
    test user's mail processes run as nobody), and pytest keeps its temporary tree at
    mode 0700, resetting it whenever any pytest session starts. On exit every daemon is
    stopped, including when start-up fails half-way; the generated configuration
    files and logs are copied to ``artifacts_dir`` and the private directory removed.
    """
    check_installed()
    root = Path(tempfile.mkdtemp(prefix="tlsfleet-daemons-"))
    # Others may traverse, not list: the daemons' own users need the former.
    root.chmod(0o711)
    processes: list[DaemonProcess] = []
    try:
        fleet = _configure(root, processes)
        deadline = time.monotonic() + startup_timeout
        for process in processes:
            process.begin_prepare()
        for process in processes:
            process.start(deadline)
        for process in processes:
            process.wait_ready(deadline, fleet.client_address, fleet.ca_file)
        yield fleet
    finally:
        try:
            stop_all(processes)
        finally:
            _archive(root, artifacts_dir)
            shutil.rmtree(root, ignore_errors=True)


def _configure(root: Path, processes: list[DaemonProcess]) -> DaemonFleet:
    """Write certificates and configs under ``root``; append the daemons to start."""
    log_dir = root / "logs"
    log_dir.mkdir()
    password = secrets.token_urlsafe(12)
    endpoints: list[DaemonEndpoint] = []
    certificates = FleetCertificates(root / "certs")
    ca_file = str(certificates.write_ca())
    for spec in PROFILES.values():
        credentials = certificates.issue(spec)
        ports = free_ports(spec.ip, 8)
        dovecot = DovecotInstance(
            spec,
            root / spec.name / "dovecot",
            log_dir,
            credentials,
            DovecotPorts(imap=ports[0], imaps=ports[1], pop3=ports[2], pop3s=ports[3]),
            user=TEST_USER,
            password=password,
            more_users=MAIL_ACCOUNTS,
        )
        postfix = PostfixInstance(
            spec,
            root / spec.name / "postfix",
            log_dir,
            credentials,
            PostfixPorts(smtp=ports[4], submission=ports[5], submissions=ports[6]),
            sasl_socket=dovecot.auth_socket,
            sink_domain=SINK_DOMAIN,
        )
        nginx = NginxInstance(spec, root / spec.name / "nginx", log_dir, credentials, ports[7])
        for instance in (dovecot, postfix, nginx):
            instance.root.mkdir(parents=True, exist_ok=True)
            instance.write_config()
            processes.append(instance.process())
            endpoints.extend(instance.endpoints())
    return DaemonFleet(
        ca_file=ca_file,
        client_address=CLIENT_ADDRESS,
        endpoints=tuple(endpoints),
        log_dir=str(log_dir),
        test_user=TEST_USER,
        test_password=password,
        mail_accounts=MAIL_ACCOUNTS,
        sink_domain=SINK_DOMAIN,
    )
