"""Queries on the audit log. Every function takes the AsyncSession of the caller's unit of work.

The table is append-only: rows are inserted here and deleted only by retention (service/cleanup.py).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert as sa_insert
from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import AuditEvent


async def insert(db: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """One statement for all of them (a multi-row INSERT); one row is a plain INSERT (cheaper to send)."""
    if len(rows) == 1:
        await db.execute(_INSERT, rows[0])
    elif rows:
        await db.execute(_INSERT, list(rows))


_INSERT = sa_insert(AuditEvent)  # built once: SQLAlchemy caches its compiled form


async def page(
    db: AsyncSession, *, user_id: uuid.UUID | None = None, client_id: str | None = None,
    type: str | None = None, since: dt.datetime | None = None, until: dt.datetime | None = None,
    before: tuple[dt.datetime, int] | None = None, limit: int = 50,
) -> list[AuditEvent]:
    """Newest first; ``before`` is the (occurred_at, id) of the last event of the previous page.

    Each filter has an index on (filter, occurred_at, id), so a page is one index range read backwards
    and stops after ``limit`` rows, however long the log is.
    """
    query = select(AuditEvent)
    if user_id is not None:
        query = query.where(AuditEvent.user_id == user_id)
    if client_id is not None:
        query = query.where(AuditEvent.client_id == client_id)
    if type is not None:
        query = query.where(AuditEvent.type == type)
    if since is not None:
        query = query.where(AuditEvent.occurred_at >= since)
    if until is not None:
        query = query.where(AuditEvent.occurred_at < until)
    if before is not None:
        query = query.where(tuple_(AuditEvent.occurred_at, AuditEvent.id) < tuple_(*before))
    query = query.order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc()).limit(limit)
    return list((await db.execute(query)).scalars())


async def after(db: AsyncSession, last_id: int, *, limit: int = 1000) -> list[AuditEvent]:
    """Events stored after ``last_id``, oldest first (``authsvc audit tail --follow``)."""
    query = select(AuditEvent).where(AuditEvent.id > last_id).order_by(AuditEvent.id).limit(limit)
    return list((await db.execute(query)).scalars())
