"""Delete expired refresh tokens, long-dead sessions, spent account tokens, mails sent or dead longer ago than
the retention, and audit events past their own retention, in small batches.

Each batch is its own short transaction that locks only the rows it deletes
(``FOR UPDATE SKIP LOCKED``), so logins and refreshes never wait behind a big DELETE. On PostgreSQL
each batch first takes a transaction-level advisory lock: when another replica holds it, this one
stops for the round. (Transaction-level, because a session-level lock would leak across clients
behind PgBouncer in transaction mode.)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy import ColumnElement, Delete, Select, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import metrics
from service.config import Settings
from service.db.models import AccountToken, AuditEvent, Mail, RefreshToken, Session

LOCK_KEY = 0x61757468_636C6E  # "auth" "cln": one advisory lock for every replica of this service


@dataclasses.dataclass
class Counts:
    refresh_tokens: int = 0
    sessions: int = 0
    account_tokens: int = 0
    mails: int = 0
    audit_events: int = 0
    skipped: bool = False  # another replica was cleaning


def sweeps(settings: Settings, now: dt.datetime) -> list[tuple[str, Any, ColumnElement[bool], Any]]:
    """(counter, table, what to delete, order to delete it in) for one pass."""
    keep_after = now - dt.timedelta(seconds=settings.cleanup_retention)
    idle_after = keep_after - dt.timedelta(seconds=settings.refresh_token_ttl)
    return [
        ("refresh_tokens", RefreshToken, RefreshToken.expires_at < now, None),
        ("sessions", Session, Session.revoked_at < keep_after, None),
        ("sessions", Session, Session.last_used_at < idle_after, None),  # every token long expired
        ("account_tokens", AccountToken, AccountToken.expires_at < now, None),  # used or not, no longer usable
        # sent or dead (their bodies, the links, went at once); queued rows stay whatever their age
        ("mails", Mail, Mail.status.in_(("sent", "dead")) & (Mail.created_at < keep_after), None),
        # AUTH_AUDIT_RETENTION: the oldest first, along ix_audit_events_occurred_at (without the order a
        # sequential scan can look cheaper to the planner, and read most of the table to find the old rows)
        ("audit_events", AuditEvent, AuditEvent.occurred_at < now - dt.timedelta(seconds=settings.audit_retention),
         AuditEvent.occurred_at),
    ]


def batch_delete(model: Any, condition: ColumnElement[bool], order: Any, size: int) -> Delete:
    """One batch: at most ``size`` rows, locking only those (SKIP LOCKED)."""
    batch: Select[Any] = select(model.id).where(condition)
    if order is not None:
        batch = batch.order_by(order)
    batch = batch.limit(size).with_for_update(skip_locked=True)
    return delete(model).where(model.id.in_(batch.scalar_subquery()))


async def run_once(sessions: async_sessionmaker[Any], settings: Settings, now: dt.datetime) -> Counts:
    counts = Counts()
    for field, model, condition, order in sweeps(settings, now):
        while True:
            async with sessions.begin() as db:
                if not await _lock(db):
                    counts.skipped = True
                    return counts
                statement = batch_delete(model, condition, order, settings.cleanup_batch_size)
                deleted = (await db.execute(statement)).rowcount
            setattr(counts, field, getattr(counts, field) + deleted)
            metrics.CLEANUP_DELETED.labels(field).inc(deleted)
            if deleted < settings.cleanup_batch_size:
                break
    return counts


async def _lock(db: AsyncSession) -> bool:
    if db.get_bind().dialect.name != "postgresql":
        return True  # the embedded SQLite default has one process
    return bool((await db.execute(select(func.pg_try_advisory_xact_lock(LOCK_KEY)))).scalar())
