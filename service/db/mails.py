"""The mail outbox's queries: enqueue in the caller's transaction, claim with SKIP LOCKED, mark.

A claim is a lease: one statement moves ``next_attempt_at`` past the send's timeout and counts the
attempt, so no other sender picks the row until the lease runs out. Each later write is fenced by the
attempt number the claim returned: a sender whose lease ran out (and whose row another sender has
claimed since) changes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import Mail

QUEUED, SENT, DEAD = "queued", "sent", "dead"


@dataclasses.dataclass(frozen=True)
class Body:
    subject: str
    text: str
    html: str


@dataclasses.dataclass(frozen=True)
class Claimed:
    id: uuid.UUID
    kind: str
    recipient: str
    user_id: uuid.UUID | None
    body: Body | None  # None: a request still to be prepared
    message_id: str
    attempts: int  # this claim's attempt: the fence for every later write
    created_at: dt.datetime


def enqueue(
    db: AsyncSession, *, kind: str, recipient: str, user_id: uuid.UUID | None, body: Body | None,
    domain: str, now: dt.datetime,
) -> uuid.UUID:
    """Add a mail to the caller's unit of work: it commits, or rolls back, with whatever it announces."""
    mail_id = uuid.uuid4()
    db.add(
        Mail(
            id=mail_id, kind=kind, recipient=recipient, user_id=user_id,
            subject=body.subject if body else None, text=body.text if body else None,
            html=body.html if body else None, message_id=f"<{mail_id}@{domain}>", status=QUEUED, attempts=0,
            created_at=now, next_attempt_at=now,
        )
    )
    return mail_id


async def claim(db: AsyncSession, *, now: dt.datetime, lease: float, limit: int) -> list[Claimed]:
    """Lease up to ``limit`` due mails, oldest first. Rows another sender holds locked are skipped."""
    due = (
        select(Mail.id)
        .where(Mail.status == QUEUED, Mail.next_attempt_at <= now)
        .order_by(Mail.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite has one writer at a time anyway
    )
    rows = (
        await db.execute(
            update(Mail)
            .where(Mail.id.in_(due.scalar_subquery()))
            .values(attempts=Mail.attempts + 1, next_attempt_at=now + dt.timedelta(seconds=lease))
            .returning(
                Mail.id, Mail.kind, Mail.recipient, Mail.user_id, Mail.subject, Mail.text, Mail.html,
                Mail.message_id, Mail.attempts, Mail.created_at,
            )
        )
    ).all()
    claimed = [
        Claimed(
            id=r.id, kind=r.kind, recipient=r.recipient, user_id=r.user_id,
            body=Body(r.subject, r.text, r.html or "") if r.text is not None and r.subject is not None else None,
            message_id=r.message_id, attempts=r.attempts, created_at=r.created_at,
        )
        for r in rows
    ]
    return sorted(claimed, key=lambda m: m.created_at)


def _fenced(mail: Claimed) -> tuple[Any, ...]:
    return (Mail.id == mail.id, Mail.attempts == mail.attempts, Mail.status == QUEUED)


async def fill(db: AsyncSession, mail: Claimed, *, user_id: uuid.UUID, body: Body) -> bool:
    result = await db.execute(
        update(Mail).where(*_fenced(mail)).values(
            user_id=user_id, subject=body.subject, text=body.text, html=body.html
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def newer_request(db: AsyncSession, mail: Claimed) -> bool:
    """Whether a later mail of the same kind went to the same address: then only the newest is sent."""
    found = await db.execute(
        select(Mail.id).where(
            func.lower(Mail.recipient) == mail.recipient.lower(), Mail.kind == mail.kind,
            Mail.created_at > mail.created_at,
        ).limit(1)
    )
    return found.first() is not None


async def drop(db: AsyncSession, mail: Claimed) -> None:
    """A request with nothing to send (a reset for an address without an account)."""
    await db.execute(delete(Mail).where(*_fenced(mail)))


async def mark_sent(db: AsyncSession, mail: Claimed, *, now: dt.datetime) -> bool:
    result = await db.execute(
        update(Mail).where(*_fenced(mail)).values(
            status=SENT, sent_at=now, subject=None, text=None, html=None, last_error=None
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def mark_failed(
    db: AsyncSession, mail: Claimed, *, error: str, retry_at: dt.datetime | None
) -> bool:
    """Due again at ``retry_at``; with None, given up: dead, and its body (the link) cleared."""
    values: dict[str, Any] = {"last_error": error[:255]}
    if retry_at is None:
        values.update(status=DEAD, subject=None, text=None, html=None)
    else:
        values.update(next_attempt_at=retry_at)
    result = await db.execute(update(Mail).where(*_fenced(mail)).values(**values))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def counts(db: AsyncSession) -> dict[str, int]:
    """Rows by status (tests and the docs' runbook)."""
    rows = (await db.execute(select(Mail.status, func.count()).group_by(Mail.status))).all()
    return {status: int(n) for status, n in rows}
