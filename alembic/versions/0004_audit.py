"""the audit log, and the indexes of the admin API's user search

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-11
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("actor_type", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.String(64), nullable=True),
        sa.Column("subject_type", sa.String(16), nullable=True),
        sa.Column("subject_id", sa.String(64), nullable=True),
        # no foreign keys: an event outlives the user or client it names (only their ids are kept)
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("client_id", sa.String(64), nullable=True),
        sa.Column("client_ip", sa.String(45), nullable=True),
        sa.Column("user_agent", sa.String(255), nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("trace_id", sa.String(32), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    # Queries go newest first, keyset on (occurred_at, id), so each filter has its index in that order;
    # the first also serves retention (`authsvc cleanup` deletes the oldest in batches).
    op.create_index("ix_audit_events_occurred_at", "audit_events", ["occurred_at", "id"])
    op.create_index(
        "ix_audit_events_user_id", "audit_events", ["user_id", "occurred_at", "id"],
        postgresql_where=sa.text("user_id IS NOT NULL"), sqlite_where=sa.text("user_id IS NOT NULL"),
    )
    op.create_index(
        "ix_audit_events_client_id", "audit_events", ["client_id", "occurred_at", "id"],
        postgresql_where=sa.text("client_id IS NOT NULL"), sqlite_where=sa.text("client_id IS NOT NULL"),
    )
    op.create_index("ix_audit_events_type", "audit_events", ["type", "occurred_at", "id"])
    if op.get_bind().dialect.name == "postgresql":
        # The admin search by username or email prefix, case-insensitively: a prefix is a range, and keyset
        # pages an order, only in byte order, so these are in "C" whatever the database's collation.
        # (SQLite compares bytes already: its lower(username) index serves the same queries.)
        op.create_index("ix_users_username_search", "users", [sa.text('(lower(username) COLLATE "C")')])
        op.create_index("ix_users_email_search", "users", [sa.text('(lower(email) COLLATE "C")')])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_users_email_search", "users")
        op.drop_index("ix_users_username_search", "users")
    op.drop_table("audit_events")  # its indexes with it
