"""Process health, readiness and Prometheus metrics (no API key: for probes and scrapers)."""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from api.deps import RuntimeDep
from api.errors import Unavailable
from api.metrics import Metrics
from api.schemas.common import problems
from fleet.db.session import ping

router = APIRouter(tags=["operations"])
log = logging.getLogger(__name__)

#: Seconds a readiness check waits for each service.
READY_TIMEOUT = 2.0


class Status(BaseModel):
    status: str


@router.get(
    "/healthz",
    summary="The process is up",
    response_model=Status,
    responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}},
)
async def healthz() -> Status:
    """Answers as long as the process serves requests; checks nothing else."""
    return Status(status="ok")


async def _check_database(runtime: RuntimeDep) -> None:
    async with runtime.sessions() as session:
        await ping(session)


async def _check_redis(url: str) -> None:
    client = aioredis.Redis.from_url(
        url, socket_connect_timeout=READY_TIMEOUT, socket_timeout=READY_TIMEOUT
    )
    try:
        await client.ping()
    finally:
        await client.aclose()


@router.get(
    "/readyz",
    summary="PostgreSQL and Redis are reachable",
    response_model=Status,
    responses={
        200: {"content": {"application/json": {"example": {"status": "ready"}}}},
        **problems(503),
    },
)
async def readyz(runtime: RuntimeDep) -> Status:
    """Ready when PostgreSQL and Redis both answer within two seconds; otherwise a
    503 problem naming what is not reachable."""
    down: list[str] = []
    for name, check in (
        ("PostgreSQL", _check_database(runtime)),
        ("Redis", _check_redis(runtime.redis_url)),
    ):
        try:
            await asyncio.wait_for(check, READY_TIMEOUT + 1)
        except Exception as exc:  # any failure means not ready; the kind is logged
            log.warning("readiness: %s not reachable (%s)", name, type(exc).__name__)
            down.append(name)
    if down:
        raise Unavailable(f"not reachable: {', '.join(down)}", extra={"unreachable": down})
    return Status(status="ready")


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "content": {
                "text/plain": {
                    "example": 'tlsfleet_http_requests_total{method="GET",'
                    'route="/v1/domains",status="200"} 3.0\n'
                }
            }
        }
    },
)
async def metrics(request: Request, runtime: RuntimeDep) -> Response:
    """Request counts and latency histograms per route, sweeps per status, fleet gauges
    (endpoints per protocol, findings, findings per severity of the latest judged
    sweep), open sweeps' progress and the job queue's depth, in the Prometheus text
    format (docs/dashboard.md lists every metric)."""
    registry: Metrics = request.app.state.metrics
    await registry.refresh(runtime)
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)
