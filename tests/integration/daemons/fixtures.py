"""Pytest fixtures for the daemon fleet; import them where they are needed.

``from tests.integration.daemons.fixtures import daemon_fleet`` in a test module or in
the integration conftest makes the session-wide fleet available. Pytest registers an
imported fixture once per module that imports it, so the fleet itself is shared: every
registration leases the same running fleet, and the last to finish stops it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from .fleet import running_fleet
from .model import DaemonFleet
from .process import DaemonError


class _SharedFleet:
    """One running fleet per pytest session, however many fixture registrations."""

    def __init__(self) -> None:
        self._stack: contextlib.ExitStack | None = None
        self._fleet: DaemonFleet | None = None
        self._leases = 0

    @contextlib.contextmanager
    def lease(self, factory: pytest.TempPathFactory) -> Iterator[DaemonFleet]:
        if self._fleet is None:
            stack = contextlib.ExitStack()
            # The daemons' configs and logs end up here when the session is over.
            self._fleet = stack.enter_context(running_fleet(factory.mktemp("daemons")))
            self._stack = stack
        self._leases += 1
        try:
            yield self._fleet
        finally:
            self._leases -= 1
            if self._leases == 0 and self._stack is not None:
                stack, self._stack, self._fleet = self._stack, None, None
                stack.close()


_SHARED = _SharedFleet()


@pytest.fixture(scope="session")
def daemon_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonFleet]:
    """Postfix, Dovecot and nginx in the legacy and modern profiles, for the session.

    Fails (never skips) when the daemons are not installed or do not start, with the
    reason (for missing daemons: run ``.ci/install-daemons.sh``) and their log tails.
    """
    with contextlib.ExitStack() as stack:
        try:
            fleet = stack.enter_context(_SHARED.lease(tmp_path_factory))
        except DaemonError as exc:
            pytest.fail(f"the daemon fleet is not available: {exc}", pytrace=False)
        yield fleet
