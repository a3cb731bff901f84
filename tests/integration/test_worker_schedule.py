"""The worker's schedule: cron expressions in arq's terms, and the settings arq gets.

No services needed; it sits with the worker tests because it tests the worker package.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from arq.connections import RedisSettings
from arq.cron import CronJob
from pydantic import ValidationError

from fleet.jobs import JobName
from fleet.settings import Settings
from worker.context import WorkerConfig
from worker.options import WorkerOptions
from worker.schedule import CronError, CronSpec, parse_cron, parse_timezone
from worker.settings import RECONCILE_CRON, worker_settings


@pytest.mark.parametrize(
    ("expression", "spec"),
    [
        ("0 2 * * *", CronSpec(minute={0}, hour={2})),
        ("*/15 * * * *", CronSpec(minute={0, 15, 30, 45})),
        ("30 1-3 * * *", CronSpec(minute={30}, hour={1, 2, 3})),
        ("0 0 1,15 * *", CronSpec(minute={0}, hour={0}, day={1, 15})),
        ("0 6 * jan,jul *", CronSpec(minute={0}, hour={6}, month={1, 7})),
        # cron's Sunday is 0 or 7, Monday 1; Python's Monday is 0, Sunday 6
        ("0 3 * * 0", CronSpec(minute={0}, hour={3}, weekday={6})),
        ("0 3 * * 7", CronSpec(minute={0}, hour={3}, weekday={6})),
        ("0 3 * * mon-fri", CronSpec(minute={0}, hour={3}, weekday={0, 1, 2, 3, 4})),
        ("0 3 * * 1-5/2", CronSpec(minute={0}, hour={3}, weekday={0, 2, 4})),
        ("5/20 * * * *", CronSpec(minute={5, 25, 45})),
    ],
)
def test_cron_expressions(expression: str, spec: CronSpec) -> None:
    assert parse_cron(expression) == spec


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 2 * *", "needs 5 fields"),
        ("60 2 * * *", "minute: 60 is outside 0-59"),
        ("0 24 * * *", "hour: 24 is outside 0-23"),
        ("0 2 0 * *", "day of month: 0 is outside 1-31"),
        ("0 2 * 13 *", "month: 13 is outside 1-12"),
        ("0 2 * * 8", "day of week: 8 is outside 0-7"),
        ("0 2 * * funday", "day of week: 'funday' is not a number"),
        ("0 5-1 * * *", "range '5-1' runs backwards"),
        ("*/0 * * * *", "invalid step"),
        ("1,,2 * * * *", "empty list item"),
        ("0 2 1 * mon", "both the day of month and the day of week"),
        ("@daily", "needs 5 fields"),
    ],
)
def test_bad_cron_expressions_say_what_is_wrong(expression: str, message: str) -> None:
    with pytest.raises(CronError, match=message):
        parse_cron(expression)


def test_time_zones() -> None:
    assert parse_timezone("Europe/Berlin") == ZoneInfo("Europe/Berlin")
    with pytest.raises(CronError, match="unknown time zone 'Mars/Olympus'"):
        parse_timezone("Mars/Olympus")


def _settings(**values: object) -> WorkerConfig:
    return WorkerConfig(
        settings=Settings.model_validate(values),
        database_url="postgresql+psycopg://nobody@127.0.0.1:1/none",
        redis_settings=RedisSettings(),
        options=WorkerOptions(reconcile_every=10, job_timeout=120, max_tries=7),
    )


def test_worker_settings_schedule_the_nightly_sweep_and_the_reconciler() -> None:
    config = _settings(nightly_cron="30 3 * * mon", timezone="Europe/Berlin")
    kwargs = worker_settings(config)
    crons: dict[str, CronJob] = {c.name: c for c in kwargs["cron_jobs"]}
    nightly, reconcile = crons[JobName.NIGHTLY], crons[RECONCILE_CRON]
    assert (nightly.minute, nightly.hour, nightly.weekday, nightly.day) == ({30}, {3}, {0}, None)
    assert reconcile.second == {0, 10, 20, 30, 40, 50}
    assert kwargs["timezone"] == ZoneInfo("Europe/Berlin")
    # The next nightly run, in the schedule's time zone: Monday 03:30 Berlin time
    nightly.calculate_next(datetime(2026, 11, 25, 12, 0, tzinfo=ZoneInfo("Europe/Berlin")))
    assert nightly.next_run is not None
    assert nightly.next_run.isoformat().startswith("2026-11-30T03:30:00")
    # One timeout for every job (arq's in-progress marks last as long as the longest)
    assert {f.timeout_s for f in kwargs["functions"]} == {120}
    assert {f.max_tries for f in kwargs["functions"]} == {7}
    assert kwargs["keep_result"] == 0


def test_worker_settings_refuse_a_bad_schedule() -> None:
    with pytest.raises(CronError, match="hour"):
        worker_settings(_settings(nightly_cron="0 99 * * *"))
    with pytest.raises(CronError, match="time zone"):
        worker_settings(_settings(timezone="Nowhere"))


def test_reconcile_interval_must_divide_a_minute() -> None:
    with pytest.raises(ValidationError, match="must divide 60"):
        WorkerOptions(reconcile_every=7)
