"""The worker's own knobs, from ``TLSFLEET_WORKER_*`` environment variables.

They tune one worker process (concurrency, timeouts, retries); what the whole fleet
shares (limits, schedule, resolvers) stays in :class:`fleet.settings.Settings`.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["WorkerOptions"]


class WorkerOptions(BaseSettings):
    """Per-process worker tuning. Every field is ``TLSFLEET_WORKER_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="TLSFLEET_WORKER_", extra="ignore")

    max_jobs: int = Field(default=20, ge=1, le=1000, description="jobs run at once")
    job_timeout: float = Field(
        default=300.0,
        ge=5,
        le=86400,
        description="seconds a job may run; a killed worker's jobs run again this much "
        "(plus 10 s) after they started",
    )
    max_tries: int = Field(default=10, ge=1, le=100, description="tries per job")
    retry_delay: float = Field(
        default=1.0, gt=0, le=600, description="first retry delay (doubles, jittered)"
    )
    retry_max_delay: float = Field(default=60.0, gt=0, le=3600, description="longest delay")
    lease_ttl: float = Field(
        default=30.0, gt=0, le=3600, description="seconds a per-IP slot outlives its worker"
    )
    reconcile_every: int = Field(
        default=60, description="seconds between reconciliations: a divisor of 60, or 60"
    )
    heartbeat: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="seconds between heartbeats; a worker silent for three is taken for "
        "dead and its running jobs are given to others",
    )
    poll_delay: float = Field(default=0.5, gt=0, le=60, description="seconds between queue polls")
    cron: bool = Field(
        default=True,
        description="also run the cron schedule (nightly sweep, reconciler); false when "
        "one `tlsfleet scheduler` runs it for many workers",
    )

    @field_validator("reconcile_every")
    @classmethod
    def _divides_a_minute(cls, value: int) -> int:
        if value < 1 or 60 % value:
            raise ValueError(
                "reconcile_every must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60)"
            )
        return value
