"""``tlsfleet sweep`` and ``tlsfleet worker`` as real processes: start a sweep, follow it
to the end, read its status and the list; bad input exits 2 with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.test_sweep_harness import (
    LocalFleet,
    import_inventory,
    local_fleet,
    worker_env,
    workers,
)

BOUND = 120.0


@pytest.fixture
def fleet() -> Iterator[LocalFleet]:
    with local_fleet("127.94.0", domains=4, per_address=2) as running:
        yield running


def tlsfleet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )


async def test_sweep_start_wait_status_and_list(
    database_url: str,
    redis_url: str,
    session_factory: async_sessionmaker[AsyncSession],
    fleet: LocalFleet,
    tmp_path: Path,
) -> None:
    await import_inventory(session_factory, fleet.records)
    env = worker_env(database_url, redis_url, fleet.nameserver)
    customer = next(iter(fleet.customers))
    with workers(env, tmp_path, count=1):
        # When a sweep of one customer is started and followed to its end
        started = tlsfleet(
            env, "sweep", "start", "--customer", customer, "--quick", "--wait", "--json"
        )
    # Then it printed the finished sweep's status
    assert started.returncode == 0, started.stderr
    status = json.loads(started.stdout)
    assert status["status"] == "done"
    assert status["kind"] == "adhoc"
    assert status["total"] == status["done"] > 0
    assert status["remaining"] == 0
    assert status["options"]["quick"] is True
    assert set(status["diff"]) >= {"new_endpoints", "newly_legacy_tls"}
    # … which `sweep status` and `sweep list` show too
    shown = tlsfleet(env, "sweep", "status", str(status["sweep_id"]), "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["done"] == status["done"]
    text = tlsfleet(env, "sweep", "status", str(status["sweep_id"]))
    assert f"{status['done']} of {status['total']} done" in text.stdout
    listed = tlsfleet(env, "sweep", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["id"], r["status"], r["done"]) for r in rows] == [
        (status["sweep_id"], "done", status["done"])
    ]


async def test_sweep_start_queues_without_waiting(
    database_url: str,
    redis_url: str,
    session_factory: async_sessionmaker[AsyncSession],
    fleet: LocalFleet,
) -> None:
    await import_inventory(session_factory, fleet.records)
    env = worker_env(database_url, redis_url, fleet.nameserver)
    started = tlsfleet(env, "sweep", "start", "--domain", fleet.domains[0].upper(), "--json")
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["scope"] == {"domains": [fleet.domains[0]]}
    pending = tlsfleet(env, "sweep", "status", str(json.loads(started.stdout)["sweep_id"]))
    assert "pending" in pending.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sweep", "start"], "scope"),
        (["sweep", "start", "--all", "--domain", "a.test"], "scope"),
        (["sweep", "start", "--domain", "not in.inventory"], "white space"),
        (["sweep", "start", "--domain", "nowhere.test"], "not in the inventory"),
        (["sweep", "start", "--customer", "Nobody"], "no such customer"),
        (["sweep", "status", "4242"], "no sweep 4242"),
    ],
)
async def test_bad_input_exits_2_with_one_line(
    database_url: str,
    redis_url: str,
    session_factory: async_sessionmaker[AsyncSession],
    fleet: LocalFleet,
    args: list[str],
    message: str,
) -> None:
    await import_inventory(session_factory, fleet.records)
    result = tlsfleet(worker_env(database_url, redis_url, fleet.nameserver), *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert message in result.stderr


def test_worker_refuses_a_bad_schedule(database_url: str, redis_url: str) -> None:
    env = worker_env(database_url, redis_url, "127.0.0.1:53", TLSFLEET_NIGHTLY_CRON="0 25 * * *")
    result = tlsfleet(env, "worker")
    assert result.returncode == 2
    assert "hour: 25 is outside 0-23" in result.stderr
    env = worker_env(database_url, redis_url, "127.0.0.1:53", TLSFLEET_WORKER_RECONCILE_EVERY="7")
    result = tlsfleet(env, "worker")
    assert result.returncode == 2
    assert "TLSFLEET_WORKER_RECONCILE_EVERY" in result.stderr
