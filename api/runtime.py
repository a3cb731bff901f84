"""What one running application holds: built in the lifespan, closed at shutdown."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.cache import VersionedCache
from fleet.embedded import arq_redis_settings
from fleet.jobs import create_job_pool


@dataclass(slots=True)
class ApiRuntime:
    """The engine, the session factory, and the job queue (opened on first use, so
    that the API starts — and ``/readyz`` can say so — while Redis is down)."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis_url: str
    #: Fleet statistics, per state version, for at most a minute (api/cache.py).
    stats_cache: VersionedCache = field(default_factory=VersionedCache)
    _queue: ArqRedis | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def queue(self) -> ArqRedis:
        """The arq pool jobs are enqueued on; RedisError when Redis is unreachable."""
        async with self._lock:
            if self._queue is None:
                settings = arq_redis_settings(self.redis_url, conn_retries=0, conn_timeout=2)
                self._queue = await create_job_pool(settings)
            return self._queue

    async def close(self) -> None:
        if self._queue is not None:
            await self._queue.aclose()
        await self.engine.dispose()
