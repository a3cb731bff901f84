"""Fixtures of the API tests: the application on this run's PostgreSQL and Redis, an
HTTP client on it, and the starting fleet (:class:`~tests.integration.api.harness.Fleet`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.app import create_app
from fleet.db.models import AccountManager, Customer, Domain, Sweep
from fleet.repositories import apikeys
from tests.integration.api.harness import ROLES, Fleet, settings_for


@pytest.fixture
async def app(database_url: str, redis_url: str, engine: AsyncEngine) -> AsyncIterator[FastAPI]:
    """The application on this run's database (tables truncated after the test by
    ``engine``) and Redis, with its lifespan running."""
    del engine  # requested for its clean-up
    application = create_app(settings_for(database_url, redis_url), max_body_bytes=4 * 1024 * 1024)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api.test"
    ) as http:
        yield http


@pytest.fixture
async def fleet(session_factory: async_sessionmaker[AsyncSession]) -> Fleet:
    async with session_factory() as session:
        alice = AccountManager(name="Alice", email="alice@example.net")
        bob = AccountManager(name="Bob", email="bob@example.net")
        session.add_all([alice, bob])
        await session.flush()
        ca = Customer(name="Alice's customer", account_manager_id=alice.id)
        cb = Customer(name="Bob's customer", account_manager_id=bob.id)
        session.add_all([ca, cb])
        await session.flush()
        da = Domain(name="alice.example", customer_id=ca.id, tags=[])
        db = Domain(name="bob.example", customer_id=cb.id, tags=[])
        sweep = Sweep(kind="adhoc", status="done", scope={"all": True}, options={})
        session.add_all([da, db, sweep])
        await session.flush()
        keys: dict[str, str] = {}
        key_ids: dict[str, int] = {}
        for role in ROLES:
            new = await apikeys.create_key(
                session,
                role=role,
                name=role,
                account_manager_id=alice.id if role == "account_manager" else None,
            )
            keys[role] = new.secret
            key_ids[role] = new.key.id
        await session.commit()
        return Fleet(alice.id, bob.id, ca.id, cb.id, da.id, db.id, sweep.id, keys, key_ids)
