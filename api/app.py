"""The FastAPI application: ``create_app(settings)``.

Nothing happens at import time: the engine, the session factory and the job queue are
built in the lifespan from the settings (``database_url`` and ``redis_url`` must be
set; ``tlsfleet api`` fills them in with the embedded services when they are not).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import dashboard, errors
from api.limits import BodyLimit
from api.metrics import Metrics
from api.routes import apikeys, clients, inventory, notices, ops, results, sweeps, webhooks
from api.runtime import ApiRuntime
from fleet.db.session import create_engine, create_sessionmaker
from fleet.settings import Settings

#: Largest request body: 10,000 import rows fit with room to spare.
MAX_BODY_BYTES = 8 * 1024 * 1024

DESCRIPTION = """\
The tlsfleet HTTP API: the inventory (account managers, customers, domains), sweeps and
their results.

**Authentication**: every `/v1` call needs `Authorization: Bearer <API key>`. Roles:
`admin` (everything), `operator` (inventory and sweeps), `viewer` (read everything),
`account_manager` (read its own customers, their domains and results only).

**Errors** are RFC 9457 problem documents (`application/problem+json`).

**Lists** are cursor-paginated: follow `next` until it is null.
"""


def create_app(settings: Settings, *, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The application for ``settings`` (which must name the database and Redis)."""
    if settings.database_url is None or settings.redis_url is None:
        raise ValueError("create_app needs settings.database_url and settings.redis_url")
    database_url = settings.database_url.get_secret_value()
    redis_url = settings.redis_url.get_secret_value()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(database_url)
        runtime = ApiRuntime(engine, create_sessionmaker(engine), redis_url)
        app.state.runtime = runtime
        try:
            yield
        finally:
            await runtime.close()

    app = FastAPI(
        title="tlsfleet",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    metrics = Metrics()
    app.state.metrics = metrics
    errors.install(app)
    app.middleware("http")(metrics.middleware)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

    # Each router carries its /v1 prefix, so that route templates (metrics labels) are
    # whole paths.
    for module in (apikeys, inventory, sweeps, results, webhooks, notices, clients, ops):
        app.include_router(module.router)
    dashboard.install(app)
    return app
