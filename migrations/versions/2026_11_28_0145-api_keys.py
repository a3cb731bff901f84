"""API keys: hashed secrets, roles, account-manager binding.

Revision ID: 5e1c0a7f3b21
Revises: adb86cf90c5f
Create Date: 2026-11-28 01:45:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5e1c0a7f3b21"
down_revision: str | None = "adb86cf90c5f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), server_default="", nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("account_manager_id", sa.Integer(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(role = 'account_manager') = (account_manager_id IS NOT NULL)",
            name=op.f("ck_api_keys_account_manager"),
        ),
        sa.CheckConstraint(
            "role IN ('admin','operator','viewer','account_manager')",
            name=op.f("ck_api_keys_role"),
        ),
        sa.ForeignKeyConstraint(
            ["account_manager_id"],
            ["account_managers.id"],
            name=op.f("fk_api_keys_account_manager_id_account_managers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    op.create_index(
        op.f("ix_api_keys_account_manager_id"), "api_keys", ["account_manager_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_api_keys_account_manager_id"), table_name="api_keys")
    op.drop_table("api_keys")
