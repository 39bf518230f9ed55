"""The schema as SQLAlchemy models. Alembic migrations (``alembic/versions``) are what create it.

Relationships are not mapped: every query is written out in the query modules, so nothing
loads lazily behind an ``await`` and every round trip is visible in the code.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    Uuid,
    func,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import JSON

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """``timestamptz`` on PostgreSQL; on SQLite (no time zones) stored as UTC and read back aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime; use an aware UTC datetime")
        if value is not None and dialect.name == "sqlite":
            return value.astimezone(dt.UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)  # type: ignore[no-any-return]
        return value  # type: ignore[no-any-return]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(50))
    email: Mapped[str] = mapped_column(String(320))
    password_hash: Mapped[str] = mapped_column(String(100))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    email_verified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        # Case-insensitive uniqueness, and the index every login lookup uses.
        Index("uq_users_username_lower", func.lower(username), unique=True),
        Index("uq_users_email_lower", func.lower(email), unique=True),
        # The admin search (PostgreSQL only): prefix ranges and keyset order on lower(...) COLLATE "C", byte
        # order whatever the database's collation (users.search_key). The migration creates them with the
        # collation; it is left out here because reflection does not report an expression's collation, so
        # autogenerate could not compare it (test_database's EXPLAIN proves the search uses these indexes).
        Index("ix_users_username_search", func.lower(username)).ddl_if(dialect="postgresql"),
        Index("ix_users_email_search", func.lower(email)).ddl_if(dialect="postgresql"),
    )


class Session(Base):
    """One login: the family of refresh tokens it rotates through."""

    __tablename__ = "sessions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)  # absolute lifetime
    last_used_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoke_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(255), nullable=True)
    client_ip: Mapped[str | None] = mapped_column(String(45), nullable=True)
    # the registered client the session was granted to (its refresh tokens are bound to it), and the scope
    client_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("clients.id", ondelete="CASCADE"), nullable=True
    )
    scope: Mapped[str | None] = mapped_column(String(1000), nullable=True)

    __table_args__ = (
        Index("ix_sessions_user_id_revoked_at", "user_id", "revoked_at"),
        Index("ix_sessions_last_used_at", "last_used_at"),
        Index(
            "ix_sessions_revoked_at", "revoked_at",
            postgresql_where=revoked_at.isnot(None), sqlite_where=revoked_at.isnot(None),
        ),
    )


class RefreshToken(Base):
    """A refresh token, known only by its SHA-256: the token itself is never stored."""

    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    session_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("sessions.id", ondelete="CASCADE"))
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    replaced_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)

    __table_args__ = (
        Index("uq_refresh_tokens_token_hash", "token_hash", unique=True),
        Index("ix_refresh_tokens_session_id", "session_id"),
        Index("ix_refresh_tokens_expires_at", "expires_at"),
    )


class AccountToken(Base):
    """A password-reset or email-verification token, known only by its SHA-256; single-use, expiring."""

    __tablename__ = "account_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(16))  # reset | verify
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    email: Mapped[str] = mapped_column(String(320))  # the address it was sent to: a changed address voids it
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        Index("uq_account_tokens_token_hash", "token_hash", unique=True),
        Index("ix_account_tokens_user_id_purpose", "user_id", "purpose"),
        Index("ix_account_tokens_expires_at", "expires_at"),
    )


class Mail(Base):
    """The transactional outbox: one mail, committed with the token it carries, sent by the sender loop.

    A row with ``text`` NULL is a request still to be prepared (a password reset: the request writes
    the same row whether or not the address has an account; the sender looks it up). Bodies are
    cleared once the row is sent or dead, so a link lives in the database only while it is pending.
    """

    __tablename__ = "mails"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(String(320))
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=True
    )
    subject: Mapped[str | None] = mapped_column(String(998), nullable=True)
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    html: Mapped[str | None] = mapped_column(Text, nullable=True)
    message_id: Mapped[str] = mapped_column(String(255))  # kept across retries: receivers drop duplicates
    status: Mapped[str] = mapped_column(String(8))  # queued | sent | dead
    attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)  # also the claim's lease
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(255), nullable=True)

    __table_args__ = (
        Index(
            "ix_mails_next_attempt_at", "next_attempt_at",
            postgresql_where=status == "queued", sqlite_where=status == "queued",
        ),
        Index("ix_mails_user_id", "user_id"),
        Index("ix_mails_recipient_lower", func.lower(recipient)),  # the newest reset request wins
        Index("ix_mails_created_at", "created_at"),
    )
class Client(Base):
    """A registered OAuth 2.0 client. Its secret is known only by its SHA-256, like refresh tokens:
    secrets are 256 random bits, so a fast hash is enough (bcrypt is for guessable passwords).
    During a rotation the previous secret stays valid until ``previous_secret_expires_at``."""

    __tablename__ = "clients"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    confidential: Mapped[bool] = mapped_column(Boolean)
    secret_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    previous_secret_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    previous_secret_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    grant_types: Mapped[list[str]] = mapped_column(JSON)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    audiences: Mapped[list[str]] = mapped_column(JSON)
    access_token_ttl: Mapped[int | None] = mapped_column(Integer, nullable=True)  # overrides the default
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AuditEvent(Base):
    """One thing that happened, written in the transaction of the change it records; never updated.

    ``user_id`` and ``client_id`` are what "what happened to user X" and "what did client Y do" filter
    on; ``actor`` says who did it, ``subject`` what it was done to. No personal data beyond ids, the
    client's address and user agent; never a password, token, hash or secret (docs/admin.md).
    """

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    type: Mapped[str] = mapped_column(String(64))
    actor_type: Mapped[str] = mapped_column(String(16))  # user | client | cli | anonymous
    actor_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    subject_type: Mapped[str | None] = mapped_column(String(16), nullable=True)  # user | session | client
    subject_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)  # no foreign key: outlives the user
    client_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    client_ip: Mapped[str | None] = mapped_column(String(45), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    trace_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (
        # newest first by time, ties by id: each filter has an index in that order, and retention uses the first
        Index("ix_audit_events_occurred_at", "occurred_at", "id"),
        Index(
            "ix_audit_events_user_id", "user_id", "occurred_at", "id",
            postgresql_where=user_id.isnot(None), sqlite_where=user_id.isnot(None),
        ),
        Index(
            "ix_audit_events_client_id", "client_id", "occurred_at", "id",
            postgresql_where=client_id.isnot(None), sqlite_where=client_id.isnot(None),
        ),
        Index("ix_audit_events_type", "type", "occurred_at", "id"),
    )
