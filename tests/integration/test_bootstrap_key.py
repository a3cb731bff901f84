"""The deployment's first API key: ``TLSFLEET_BOOTSTRAP_API_KEY``, stored (as its hash)
by ``tlsfleet api`` at start-up unless it is there — once, however often the API
starts, and however many replicas start together."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from fleet.db.models import ApiKey
from fleet.repositories import apikeys
from tests.ports import free_port

BOUND = 60.0


async def test_a_bootstrap_key_is_stored_once_as_its_hash(session: AsyncSession) -> None:
    secret = apikeys.generate_secret()
    # When the key is ensured twice
    key, created = await apikeys.ensure_key(session, secret)
    again, created_again = await apikeys.ensure_key(session, secret)
    # Then one admin key exists, created the first time only, holding the digest alone
    assert (created, created_again) == (True, False)
    assert again.id == key.id
    assert (key.role, key.name, key.prefix) == ("admin", "bootstrap", secret.split("_")[1])
    assert key.digest == hashlib.sha256(secret.encode()).hexdigest()
    assert await session.scalar(select(func.count()).select_from(ApiKey)) == 1
    # … and it authenticates
    found = await apikeys.authenticate(session, secret)
    assert found is not None
    assert found.id == key.id


async def test_a_revoked_bootstrap_key_stays_revoked(session: AsyncSession) -> None:
    secret = apikeys.generate_secret()
    key, _ = await apikeys.ensure_key(session, secret)
    await apikeys.revoke_key(session, key.id)
    again, created = await apikeys.ensure_key(session, secret)
    assert not created
    assert again.revoked_at is not None
    assert await apikeys.authenticate(session, secret) is None


@pytest.mark.parametrize(
    "secret",
    [
        "",
        "hunter2",
        "tlsf_1234567_" + "a" * 40,  # 7 hex digits
        "tlsf_ABCDEF12_" + "a" * 40,  # upper-case hex
        "tlsf_1234abcd_short",
        "tlsf_1234abcd_" + "a" * 31 + "!",
    ],
)
async def test_a_malformed_bootstrap_key_is_refused(session: AsyncSession, secret: str) -> None:
    with pytest.raises(ValueError, match=r"expected tlsf_<8 hex digits>"):
        await apikeys.ensure_key(session, secret)
    assert await session.scalar(select(func.count()).select_from(ApiKey)) == 0


async def test_a_bootstrap_key_never_takes_over_another_keys_prefix(session: AsyncSession) -> None:
    existing = await apikeys.create_key(session, role="viewer")
    impostor = f"tlsf_{existing.key.prefix}_{'x' * 43}"
    with pytest.raises(ValueError, match=f"already has the prefix {existing.key.prefix}"):
        await apikeys.ensure_key(session, impostor)
    assert await apikeys.authenticate(session, impostor) is None


async def test_replicas_starting_together_store_one_key(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    secret = apikeys.generate_secret()

    async def start() -> bool:
        async with session_factory() as own:
            _, created = await apikeys.ensure_key(own, secret)
            await own.commit()
            return created

    created = await asyncio.gather(*(start() for _ in range(5)))
    assert sorted(created) == [False, False, False, False, True]


def _env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "TLSFLEET_DATABASE_URL": database_url,
        "TLSFLEET_REDIS_URL": redis_url,
        **extra,
    }


def _serve_once(env: dict[str, str], log_file: Path, secret: str) -> list[dict[str, object]]:
    """Start ``tlsfleet api``, list the API keys with ``secret`` once it answers, stop it."""
    port = free_port()
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "fleet.cli", "api", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + BOUND
            while True:
                try:
                    listed = httpx.get(
                        f"http://127.0.0.1:{port}/v1/apikeys",
                        headers={"Authorization": f"Bearer {secret}"},
                        timeout=2,
                    )
                    break
                except httpx.TransportError:
                    assert process.poll() is None, log_file.read_text()
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
        finally:
            process.terminate()
            process.wait(timeout=BOUND)
    assert listed.status_code == 200, listed.text
    items: list[dict[str, object]] = listed.json()["items"]
    return items


def test_tlsfleet_api_stores_the_bootstrap_key(
    database_url: str, redis_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    del engine  # tables truncated afterwards
    secret = apikeys.generate_secret()
    env = _env(database_url, redis_url, TLSFLEET_BOOTSTRAP_API_KEY=secret)
    # When the API starts twice with the same bootstrap key
    first = _serve_once(env, tmp_path / "first.log", secret)
    second = _serve_once(env, tmp_path / "second.log", secret)
    # Then the key works as an admin key, exists once, and its secret is never logged
    assert [(k["prefix"], k["role"]) for k in first] == [(secret.split("_")[1], "admin")]
    assert second == first
    for name in ("first.log", "second.log"):
        log = (tmp_path / name).read_text()
        assert secret not in log
        assert "bootstrap API key" in log
    assert "created" in (tmp_path / "first.log").read_text()
    assert "present" in (tmp_path / "second.log").read_text()


def test_tlsfleet_api_refuses_a_malformed_bootstrap_key(
    database_url: str, redis_url: str, engine: AsyncEngine
) -> None:
    del engine
    env = _env(database_url, redis_url, TLSFLEET_BOOTSTRAP_API_KEY="letmein")
    result = subprocess.run(
        [sys.executable, "-m", "fleet.cli", "api", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )
    assert result.returncode == 2
    assert "TLSFLEET_BOOTSTRAP_API_KEY: not a tlsfleet API key" in result.stderr
    assert "letmein" not in result.stderr


def test_tlsfleet_apikey_generate_prints_a_fresh_key() -> None:
    outputs = {
        subprocess.run(
            [sys.executable, "-m", "fleet.cli", "apikey", "generate"],
            capture_output=True,
            text=True,
            timeout=BOUND,
            check=True,
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(outputs) == 2
    assert all(o.startswith("tlsf_") and len(o) >= 5 + 8 + 1 + 32 for o in outputs)
