"""Sessions (token families) and their refresh tokens.

Rotation is one conditional UPDATE … RETURNING: of two concurrent refreshes with one token exactly
one finds ``used_at IS NULL``. Presenting a used token again is reuse: the whole family is revoked,
unless it comes within the configured grace window (a client racing itself).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from sqlalchemy import select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from service import tokens
from service.db.models import RefreshToken, Session, User


@dataclasses.dataclass(frozen=True)
class Started:
    session_id: uuid.UUID
    refresh_token: str
    refresh_expires_at: dt.datetime


@dataclasses.dataclass(frozen=True)
class Rotated:
    user: User
    started: Started
    client_id: str | None = None  # the client the session was granted to
    scope: frozenset[str] = frozenset()


@dataclasses.dataclass(frozen=True)
class Reused:
    """A used token came back: the family is now revoked (commit, then refuse)."""

    session_id: uuid.UUID
    user_id: uuid.UUID


@dataclasses.dataclass(frozen=True)
class Refused:
    reason: str  # unknown | expired | revoked | rotated (inside the grace window) | inactive


async def start(
    db: AsyncSession, *, user_id: uuid.UUID, now: dt.datetime, refresh_ttl: int, max_age: int,
    user_agent: str | None, client_ip: str | None, client_id: str | None = None,
    scope: frozenset[str] = frozenset(),
) -> Started:
    family = Session(
        id=uuid.uuid4(), user_id=user_id, created_at=now, last_used_at=now,
        expires_at=now + dt.timedelta(seconds=max_age),
        user_agent=(user_agent or None) and user_agent[:255], client_ip=client_ip,
        client_id=client_id, scope=" ".join(sorted(scope)),
    )
    db.add(family)
    await db.flush()  # no ORM relationships, so the session row must exist before its token
    token, expires_at, _ = _add_token(db, family.id, family.expires_at, now, refresh_ttl)
    await db.flush()
    return Started(family.id, token, expires_at)


def _add_token(
    db: AsyncSession, session_id: uuid.UUID, session_expires: dt.datetime, now: dt.datetime, ttl: int
) -> tuple[str, dt.datetime, uuid.UUID]:
    token, digest = tokens.new_refresh()
    expires_at = min(now + dt.timedelta(seconds=ttl), session_expires)  # never outlive the session
    row = RefreshToken(
        id=uuid.uuid4(), session_id=session_id, token_hash=digest, created_at=now, expires_at=expires_at
    )
    db.add(row)
    return token, expires_at, row.id


async def rotate(
    db: AsyncSession, token: str, *, now: dt.datetime, refresh_ttl: int, grace: int
) -> Rotated | Reused | Refused:
    digest = tokens.digest(token)
    live_sessions = select(Session.id).where(Session.revoked_at.is_(None), Session.expires_at > now)
    claimed = (
        await db.execute(
            update(RefreshToken)
            .where(
                RefreshToken.token_hash == digest,
                RefreshToken.used_at.is_(None),
                RefreshToken.expires_at > now,
                RefreshToken.session_id.in_(live_sessions),
            )
            .values(used_at=now)
            .returning(RefreshToken.id, RefreshToken.session_id)
        )
    ).one_or_none()
    if claimed is None:
        return await _refusal(db, digest, now=now, grace=grace)
    old_id, session_id = claimed
    row = (
        await db.execute(
            select(Session.expires_at, Session.client_id, Session.scope, User)
            .join(User, User.id == Session.user_id)
            .where(Session.id == session_id)
        )
    ).one()
    session_expires, client_id, scope, user = row
    if not user.is_active:
        return Refused("inactive")  # the caller rolls back: nothing was written
    new_token, expires_at, new_id = _add_token(db, session_id, session_expires, now, refresh_ttl)
    await db.flush()
    await db.execute(update(RefreshToken).where(RefreshToken.id == old_id).values(replaced_by=new_id))
    await db.execute(update(Session).where(Session.id == session_id).values(last_used_at=now))
    return Rotated(user, Started(session_id, new_token, expires_at), client_id, _scope(scope))


def _scope(text: str | None) -> frozenset[str]:
    return frozenset((text or "").split())


async def _refusal(db: AsyncSession, digest: bytes, *, now: dt.datetime, grace: int) -> Reused | Refused:
    found = (
        await db.execute(
            select(RefreshToken.used_at, Session.id, Session.user_id, Session.revoked_at)
            .join(Session, Session.id == RefreshToken.session_id)
            .where(RefreshToken.token_hash == digest)
        )
    ).one_or_none()
    if found is None:
        return Refused("unknown")
    used_at, session_id, user_id, revoked_at = found
    if used_at is not None:
        if grace and now - used_at <= dt.timedelta(seconds=grace):
            return Refused("rotated")
        if revoked_at is None:
            await revoke(db, session_id, now=now, reason="reuse")
        return Reused(session_id, user_id)
    if revoked_at is not None:
        return Refused("revoked")
    return Refused("expired")


async def revoke(db: AsyncSession, session_id: uuid.UUID, *, now: dt.datetime, reason: str) -> bool:
    result = await db.execute(
        update(Session)
        .where(Session.id == session_id, Session.revoked_at.is_(None))
        .values(revoked_at=now, revoke_reason=reason)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


@dataclasses.dataclass(frozen=True)
class Owner:
    session_id: uuid.UUID
    client_id: str | None
    user_id: uuid.UUID | None = None


async def owner(db: AsyncSession, token: str) -> Owner | None:
    """The session a refresh token (used or not) belongs to, and the client it was granted to."""
    row = (
        await db.execute(
            select(Session.id, Session.client_id, Session.user_id)
            .join(RefreshToken, RefreshToken.session_id == Session.id)
            .where(RefreshToken.token_hash == tokens.digest(token))
        )
    ).one_or_none()
    return Owner(row[0], row[1], row[2]) if row else None


async def client_of(db: AsyncSession, session_id: uuid.UUID) -> Owner | None:
    row = (await db.execute(select(Session.id, Session.client_id).where(Session.id == session_id))).one_or_none()
    return Owner(row[0], row[1]) if row else None


async def revoke_all(
    db: AsyncSession, user_id: uuid.UUID, *, now: dt.datetime, reason: str = "logout-all"
) -> list[uuid.UUID]:
    result = await db.execute(
        update(Session)
        .where(Session.user_id == user_id, Session.revoked_at.is_(None))
        .values(revoked_at=now, revoke_reason=reason)
        .returning(Session.id)
    )
    return list(result.scalars())


async def revoke_others(db: AsyncSession, user_id: uuid.UUID, *, keep: uuid.UUID, now: dt.datetime) -> list[uuid.UUID]:
    """After a password change: every session of the user but the caller's."""
    result = await db.execute(
        update(Session)
        .where(Session.user_id == user_id, Session.revoked_at.is_(None), Session.id != keep)
        .values(revoked_at=now, revoke_reason="password-change")
        .returning(Session.id)
    )
    return list(result.scalars())


async def revoke_own(db: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID, *, now: dt.datetime) -> bool:
    """End the user's session ``session_id``; True if it is theirs (ended now or before), False if not."""
    owner = (
        await db.execute(select(Session.user_id).where(Session.id == session_id).with_for_update())
    ).scalar_one_or_none()
    if owner != user_id:
        return False
    await revoke(db, session_id, now=now, reason="ended-by-user")
    return True


async def active(db: AsyncSession, user_id: uuid.UUID, *, now: dt.datetime, idle_since: dt.datetime) -> list[Session]:
    """The user's sessions that could still refresh: not ended, not past their lifetime, used since
    ``idle_since`` (the refresh-token lifetime ago: older ones hold no live token). Newest use first."""
    result = await db.execute(
        select(Session)
        .where(
            Session.user_id == user_id, Session.revoked_at.is_(None), Session.expires_at > now,
            Session.last_used_at > idle_since,
        )
        .order_by(Session.last_used_at.desc(), Session.created_at.desc())
    )
    return list(result.scalars())


@dataclasses.dataclass(frozen=True)
class RefreshInfo:
    user: User
    session_id: uuid.UUID
    issued_at: dt.datetime
    expires_at: dt.datetime
    client_id: str | None = None
    scope: frozenset[str] = frozenset()


async def live_refresh(db: AsyncSession, token: str, *, now: dt.datetime) -> RefreshInfo | None:
    """For introspection: the refresh token if it could be used right now."""
    row = (
        await db.execute(
            select(RefreshToken.created_at, RefreshToken.expires_at, Session.id, Session.client_id, Session.scope, User)
            .join(Session, Session.id == RefreshToken.session_id)
            .join(User, User.id == Session.user_id)
            .where(
                RefreshToken.token_hash == tokens.digest(token),
                RefreshToken.used_at.is_(None),
                RefreshToken.expires_at > now,
                Session.revoked_at.is_(None),
                Session.expires_at > now,
                User.is_active.is_(True),
            )
        )
    ).one_or_none()
    if row is None:
        return None
    created_at, expires_at, session_id, client_id, scope, user = row
    return RefreshInfo(user, session_id, created_at, expires_at, client_id, _scope(scope))


async def live_of_user(
    db: AsyncSession, user_id: uuid.UUID, *, now: dt.datetime, before: tuple[dt.datetime, uuid.UUID] | None,
    limit: int,
) -> list[Session]:
    """The user's sessions that have not ended, newest first; ``before`` is the last of the previous page."""
    query = select(Session).where(
        Session.user_id == user_id, Session.revoked_at.is_(None), Session.expires_at > now
    )
    if before is not None:
        query = query.where(tuple_(Session.created_at, Session.id) < tuple_(*before))
    query = query.order_by(Session.created_at.desc(), Session.id.desc()).limit(limit)
    return list((await db.execute(query)).scalars())


async def revoke_of_user(
    db: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID, *, now: dt.datetime, reason: str
) -> bool | None:
    """End one session of this user: True if it ended now, False if it had already, None if it is not theirs."""
    found = (
        await db.execute(select(Session.revoked_at).where(Session.id == session_id, Session.user_id == user_id))
    ).one_or_none()
    if found is None:
        return None
    return await revoke(db, session_id, now=now, reason=reason)
