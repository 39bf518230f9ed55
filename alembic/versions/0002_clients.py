"""registered OAuth 2.0 clients; sessions remember their client and scope

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "clients",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("confidential", sa.Boolean(), nullable=False),
        # SHA-256 of the secret, never the secret; the previous one stays valid during a rotation
        sa.Column("secret_hash", sa.LargeBinary(32), nullable=True),
        sa.Column("previous_secret_hash", sa.LargeBinary(32), nullable=True),
        sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("grant_types", sa.JSON(), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("audiences", sa.JSON(), nullable=False),
        sa.Column("access_token_ttl", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_clients"),
    )
    # existing sessions were granted without a client (NULL), as the old app did
    if op.get_bind().dialect.name == "sqlite":
        # SQLite adds a column with its REFERENCES in place. A batch copy of sessions would drop the old
        # table, and with foreign keys on that deletes every refresh token through ON DELETE CASCADE.
        op.execute(
            "ALTER TABLE sessions ADD COLUMN client_id VARCHAR(64) "
            "CONSTRAINT fk_sessions_client_id_clients REFERENCES clients (id) ON DELETE CASCADE"
        )
        op.execute("ALTER TABLE sessions ADD COLUMN scope VARCHAR(1000)")
        return
    op.add_column("sessions", sa.Column("client_id", sa.String(64), nullable=True))
    op.add_column("sessions", sa.Column("scope", sa.String(1000), nullable=True))
    op.create_foreign_key(
        "fk_sessions_client_id_clients", "sessions", "clients", ["client_id"], ["id"], ondelete="CASCADE"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite cannot drop a column with a foreign key: the table is copied, with foreign keys off so
        # that dropping the old copy cascades nowhere (before the first write: a PRAGMA is ignored in a
        # transaction). SQLAlchemy warns it cannot reflect users' expression indexes; the copy needs none.
        op.execute("PRAGMA foreign_keys=OFF")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Skipped unsupported reflection", sa.exc.SAWarning)
            with op.batch_alter_table("sessions") as batch:  # the copy leaves the column's REFERENCES out
                batch.drop_column("scope")
                batch.drop_column("client_id")
    else:
        op.drop_constraint("fk_sessions_client_id_clients", "sessions", type_="foreignkey")
        op.drop_column("sessions", "scope")
        op.drop_column("sessions", "client_id")
    op.drop_table("clients")
