"""Initial schema: inventory, endpoints, sweeps, discovery, scan results, certificates.

Revision ID: adb86cf90c5f
Revises:
Create Date: 2026-11-28 01:04:08.574430+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "adb86cf90c5f"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "account_managers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_managers")),
        sa.UniqueConstraint("email", name=op.f("uq_account_managers_email")),
    )
    op.create_table(
        "endpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ip", sa.String(length=45), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("service", sa.String(length=20), nullable=False),
        sa.Column("host", sa.String(length=253), nullable=False),
        sa.Column(
            "first_seen",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "last_seen", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_endpoints")),
        sa.UniqueConstraint("ip", "port", "service", name="uq_endpoints_ip_port_service"),
    )
    op.create_table(
        "sweeps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("status", sa.String(length=12), server_default="pending", nullable=False),
        sa.Column("scope", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "options",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column("total_endpoints", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("diff", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint("kind IN ('nightly','adhoc')", name=op.f("ck_sweeps_kind")),
        sa.CheckConstraint(
            "status IN ('pending','discovering','scanning','closing','done','cancelled','failed')",
            name=op.f("ck_sweeps_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweeps")),
    )
    op.create_index(op.f("ix_sweeps_status"), "sweeps", ["status"], unique=False)
    op.create_table(
        "customers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("account_manager_id", sa.Integer(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["account_manager_id"],
            ["account_managers.id"],
            name=op.f("fk_customers_account_manager_id_account_managers"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customers")),
        sa.UniqueConstraint("name", name=op.f("uq_customers_name")),
    )
    op.create_index(
        op.f("ix_customers_account_manager_id"), "customers", ["account_manager_id"], unique=False
    )
    op.create_table(
        "scan_certificates",
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("sni", sa.String(length=253), nullable=False),
        sa.Column("certificate", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["endpoints.id"],
            name=op.f("fk_scan_certificates_endpoint_id_endpoints"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sweep_id"],
            ["sweeps.id"],
            name=op.f("fk_scan_certificates_sweep_id_sweeps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "sweep_id", "endpoint_id", "sni", name=op.f("pk_scan_certificates")
        ),
    )
    op.create_table(
        "scan_results",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("error_kind", sa.String(length=32), nullable=True),
        sa.Column("ssl2", sa.Boolean(), nullable=True),
        sa.Column("ssl3", sa.Boolean(), nullable=True),
        sa.Column("tls10", sa.Boolean(), nullable=True),
        sa.Column("tls11", sa.Boolean(), nullable=True),
        sa.Column("tls12", sa.Boolean(), nullable=True),
        sa.Column("tls13", sa.Boolean(), nullable=True),
        sa.Column("lowest_protocol", sa.SmallInteger(), nullable=True),
        sa.Column("highest_protocol", sa.SmallInteger(), nullable=True),
        sa.Column("plaintext_before_tls", sa.Boolean(), nullable=True),
        sa.Column("starttls_offered", sa.Boolean(), nullable=True),
        sa.Column("cert_status", sa.String(length=20), nullable=True),
        sa.Column("cert_not_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("connections", sa.Integer(), server_default="0", nullable=False),
        sa.Column("duration_ms", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "scanned_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.CheckConstraint("status IN ('ok','error')", name=op.f("ck_scan_results_status")),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["endpoints.id"],
            name=op.f("fk_scan_results_endpoint_id_endpoints"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sweep_id"],
            ["sweeps.id"],
            name=op.f("fk_scan_results_sweep_id_sweeps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scan_results")),
        sa.UniqueConstraint("sweep_id", "endpoint_id", name="uq_scan_results_sweep_endpoint"),
    )
    op.create_index(
        "ix_scan_results_endpoint_scanned",
        "scan_results",
        ["endpoint_id", "scanned_at"],
        unique=False,
    )
    op.create_table(
        "domains",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column(
            "tags", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False
        ),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_domains_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_domains")),
        sa.UniqueConstraint("name", name=op.f("uq_domains_name")),
    )
    op.create_index(op.f("ix_domains_customer_id"), "domains", ["customer_id"], unique=False)
    op.create_table(
        "domain_endpoints",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.Column("domain_id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=253), nullable=False),
        sa.Column("how", sa.String(length=12), nullable=False),
        sa.CheckConstraint(
            "how IN ('mx','implicit_mx','srv','web','profile')",
            name=op.f("ck_domain_endpoints_how"),
        ),
        sa.ForeignKeyConstraint(
            ["domain_id"],
            ["domains.id"],
            name=op.f("fk_domain_endpoints_domain_id_domains"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["endpoints.id"],
            name=op.f("fk_domain_endpoints_endpoint_id_endpoints"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sweep_id"],
            ["sweeps.id"],
            name=op.f("fk_domain_endpoints_sweep_id_sweeps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_domain_endpoints")),
        sa.UniqueConstraint(
            "sweep_id", "domain_id", "endpoint_id", "host", name="uq_domain_endpoints_use"
        ),
    )
    op.create_index(
        "ix_domain_endpoints_domain_sweep",
        "domain_endpoints",
        ["domain_id", "sweep_id"],
        unique=False,
    )
    op.create_index(
        "ix_domain_endpoints_endpoint_sweep",
        "domain_endpoints",
        ["endpoint_id", "sweep_id"],
        unique=False,
    )
    op.create_table(
        "sweep_domains",
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.Column("domain_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("discovery", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(
            ["domain_id"],
            ["domains.id"],
            name=op.f("fk_sweep_domains_domain_id_domains"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sweep_id"],
            ["sweeps.id"],
            name=op.f("fk_sweep_domains_sweep_id_sweeps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("sweep_id", "domain_id", name=op.f("pk_sweep_domains")),
    )
    op.create_index(
        op.f("ix_sweep_domains_domain_id"), "sweep_domains", ["domain_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_sweep_domains_domain_id"), table_name="sweep_domains")
    op.drop_table("sweep_domains")
    op.drop_index("ix_domain_endpoints_endpoint_sweep", table_name="domain_endpoints")
    op.drop_index("ix_domain_endpoints_domain_sweep", table_name="domain_endpoints")
    op.drop_table("domain_endpoints")
    op.drop_index(op.f("ix_domains_customer_id"), table_name="domains")
    op.drop_table("domains")
    op.drop_index("ix_scan_results_endpoint_scanned", table_name="scan_results")
    op.drop_table("scan_results")
    op.drop_table("scan_certificates")
    op.drop_index(op.f("ix_customers_account_manager_id"), table_name="customers")
    op.drop_table("customers")
    op.drop_index(op.f("ix_sweeps_status"), table_name="sweeps")
    op.drop_table("sweeps")
    op.drop_table("endpoints")
    op.drop_table("account_managers")
