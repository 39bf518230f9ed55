"""Password-reset and email-verification tokens: 32 random bytes, only the SHA-256 stored, single-use.

Issuing a token deletes the user's older ones of the same purpose, so only the newest link works.
Using one is one conditional UPDATE … RETURNING: of two concurrent uses exactly one gets the row.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service import tokens
from service.db.models import AccountToken, User

RESET, VERIFY = "reset", "verify"


async def issue(
    db: AsyncSession, *, user_id: uuid.UUID, purpose: str, email: str, ttl: int, now: dt.datetime
) -> str:
    """A new token for ``purpose``; the user's older ones of that purpose stop working."""
    await db.execute(delete(AccountToken).where(AccountToken.user_id == user_id, AccountToken.purpose == purpose))
    token, digest = tokens.new_refresh()  # the same shape: 32 random bytes, base64url, SHA-256 stored
    db.add(
        AccountToken(
            id=uuid.uuid4(), user_id=user_id, purpose=purpose, token_hash=digest, email=email,
            created_at=now, expires_at=now + dt.timedelta(seconds=ttl),
        )
    )
    await db.flush()
    return token


@dataclasses.dataclass(frozen=True)
class Usable:
    user: User
    email: str


async def peek(db: AsyncSession, token: str, *, purpose: str, now: dt.datetime) -> Usable | None:
    """The active user a token would act for if used now, without using it (to spare bcrypt for junk)."""
    row = (
        await db.execute(
            select(User, AccountToken.email)
            .join(User, User.id == AccountToken.user_id)
            .where(*_usable(token, purpose, now), User.is_active.is_(True))
        )
    ).one_or_none()
    return Usable(*row) if row is not None else None


async def use(db: AsyncSession, token: str, *, purpose: str, now: dt.datetime) -> Usable | None:
    """Spend the token: its user and address, or None when it is unknown, used, expired or superseded.

    The token is spent only if the caller's transaction commits; the user must still be active and,
    for a verification, still have the address the token was sent to.
    """
    claimed = (
        await db.execute(
            update(AccountToken)
            .where(*_usable(token, purpose, now))
            .values(used_at=now)
            .returning(AccountToken.user_id, AccountToken.email)
        )
    ).one_or_none()
    if claimed is None:
        return None
    user_id, email = claimed
    user = (
        await db.execute(select(User).where(User.id == user_id, User.is_active.is_(True)).with_for_update())
    ).scalar_one_or_none()
    if user is None or (purpose == VERIFY and user.email.lower() != email.lower()):
        return None
    return Usable(user, email)


def _usable(token: str, purpose: str, now: dt.datetime) -> tuple[ColumnElement[bool], ...]:
    return (
        AccountToken.token_hash == tokens.digest(token),
        AccountToken.purpose == purpose,
        AccountToken.used_at.is_(None),
        AccountToken.expires_at > now,
    )


async def mark_verified(db: AsyncSession, user_id: uuid.UUID, email: str, now: dt.datetime) -> bool:
    """Record that the user proved they read mail at ``email``, if it is still their address."""
    result = await db.execute(
        update(User)
        .where(User.id == user_id, func.lower(User.email) == email.lower(), User.email_verified_at.is_(None))
        .values(email_verified_at=now, updated_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
