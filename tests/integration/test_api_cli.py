"""``tlsfleet apikey create|list|revoke`` and ``tlsfleet api`` as processes, against the
run's PostgreSQL and Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from fleet.db.models import AccountManager
from tests.ports import free_port

BOUND = 60.0


def _env(database_url: str, redis_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "TLSFLEET_DATABASE_URL": database_url,
        "TLSFLEET_REDIS_URL": redis_url,
    }


def tlsfleet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )


async def test_apikey_create_list_revoke(
    database_url: str, redis_url: str, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    async with session_factory() as session:
        session.add(AccountManager(name="Alice", email="alice@example.net"))
        await session.commit()
    env = _env(database_url, redis_url)
    # When keys are created, the secret is printed once on standard output
    created = tlsfleet(env, "apikey", "create", "--role", "operator", "--name", "noc")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("tlsf_")
    bound = tlsfleet(
        env,
        "apikey",
        "create",
        "--role",
        "account_manager",
        "--account-manager",
        "ALICE@example.net",
    )
    assert bound.returncode == 0, bound.stderr
    # … and never again: the list shows prefixes only
    listed = tlsfleet(env, "apikey", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert secret not in listed.stdout
    assert secret.split("_")[1] in listed.stdout
    assert listed.stdout.count("\n") == 2
    revoked = tlsfleet(env, "apikey", "revoke", "1")
    assert revoked.returncode == 0, revoked.stderr
    rows = [
        json.loads(line) for line in tlsfleet(env, "apikey", "list", "--json").stdout.splitlines()
    ]
    assert [row["revoked_at"] is not None for row in rows] == [True, False]
    assert tlsfleet(env, "apikey", "revoke", "99").returncode == 2


@pytest.mark.parametrize(
    "args",
    [
        ("--role", "root"),
        ("--role", "account_manager"),
        ("--role", "viewer", "--account-manager", "alice@example.net"),
        ("--role", "account_manager", "--account-manager", "nobody@example.net"),
    ],
)
def test_apikey_create_refuses_bad_input(
    database_url: str, redis_url: str, engine: AsyncEngine, args: tuple[str, ...]
) -> None:
    del engine  # tables truncated afterwards
    result = tlsfleet(_env(database_url, redis_url), "apikey", "create", *args)
    assert result.returncode == 2
    assert "error:" in result.stderr
    assert result.stdout == ""


def test_api_serves(database_url: str, redis_url: str, engine: AsyncEngine, tmp_path: Path) -> None:
    del engine
    port = free_port()
    log = (tmp_path / "api.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "fleet.cli", "api", "--port", str(port)],
        env=_env(database_url, redis_url),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + BOUND
        while True:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, (tmp_path / "api.log").read_text()
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert ready.json() == {"status": "ready"}
        assert httpx.get(f"http://127.0.0.1:{port}/v1/domains", timeout=2).status_code == 401
    finally:
        process.terminate()
        process.wait(timeout=BOUND)
        log.close()
