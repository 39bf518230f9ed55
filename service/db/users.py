"""Queries on users. Every function takes the AsyncSession of the caller's unit of work."""

from __future__ import annotations

import datetime as dt
import unicodedata
import uuid
from typing import NamedTuple

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service import errors
from service.db.models import Session, User


def fold(login: str) -> str:
    """A login name in the form that compares equal for every way of typing it.

    Unicode compatibility caseless matching: NFKC, case folding, NFKC again (case folding can undo
    the normal form). "Alice", "ALICE" and full-width "\\uff41lice" fold to "alice". Rate limits key
    unknown names by this form, so lookups must find an account by it too (see ``by_login``).
    """
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", login).casefold())


async def by_login(session: AsyncSession, login: str) -> User | None:
    """The user a login name names: a username, or an email when it holds an "@".

    Usernames are ASCII, so their folded form is ``lower(username)``: a name matches exactly when its
    folded form does. Stored emails may hold any Unicode, so an email matches by ``lower()`` as it
    always did, or by its folded form; the exact match wins if both name different accounts. Both
    use their expression index.
    """
    folded = fold(login)
    if "@" not in folded:  # "@" cannot occur in a username
        result = await session.execute(select(User).where(func.lower(User.username) == folded))
        return result.scalar_one_or_none()
    email = func.lower(User.email)
    exact = email == func.lower(login)
    result = await session.execute(
        select(User).where(exact | (email == folded)).order_by(exact.desc()).limit(1)
    )
    return result.scalar_one_or_none()


async def by_email(session: AsyncSession, email: str, *, for_update: bool = False) -> User | None:
    query = select(User).where(func.lower(User.email) == email.lower())
    result = await session.execute(query.with_for_update() if for_update else query)
    return result.scalar_one_or_none()


async def by_id(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


class Live(NamedTuple):
    user: User
    session_expires_at: dt.datetime  # a cached answer must not outlive the session


async def with_live_session(
    session: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID, now: dt.datetime
) -> Live | None:
    """The active user behind an access token, if its session has not ended: one query."""
    result = await session.execute(
        select(User, Session.expires_at)
        .join(Session, Session.user_id == User.id)
        .where(
            User.id == user_id,
            User.is_active.is_(True),
            Session.id == session_id,
            Session.revoked_at.is_(None),
            Session.expires_at > now,
        )
    )
    row = result.one_or_none()
    return Live(*row) if row is not None else None


async def check_available(session: AsyncSession, username: str, email: str) -> None:
    """Raise if either is taken: cheap, so registration spends no bcrypt on a doomed request."""
    result = await session.execute(
        select(func.lower(User.username) == username.lower()).where(
            (func.lower(User.username) == username.lower()) | (func.lower(User.email) == email.lower())
        )
    )
    for (same_username,) in result:
        raise errors.UsernameTaken(username) if same_username else errors.EmailTaken(email)


async def create(
    session: AsyncSession, *, username: str, email: str, password_hash: str, now: dt.datetime
) -> User:
    user = User(
        id=uuid.uuid4(), username=username, email=email, password_hash=password_hash,
        is_active=True, created_at=now, updated_at=now,
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:  # lost a race with a concurrent registration
        message = str(exc.orig)
        if "uq_users_email_lower" in message:
            raise errors.EmailTaken(email) from exc
        raise errors.UsernameTaken(username) from exc
    return user


async def set_active(session: AsyncSession, user_id: uuid.UUID, *, active: bool, now: dt.datetime) -> bool:
    """Enable or disable a user. After the commit the caller runs ``cache.forget_user`` (and revokes the
    sessions it means to end), so replicas refuse a disabled user at once instead of within the cache TTL."""
    result = await session.execute(
        update(User).where(User.id == user_id, User.is_active.is_not(active)).values(is_active=active, updated_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def set_password(session: AsyncSession, user_id: uuid.UUID, new_hash: str, now: dt.datetime) -> None:
    await session.execute(update(User).where(User.id == user_id).values(password_hash=new_hash, updated_at=now))


async def replace_hash(
    session: AsyncSession, user_id: uuid.UUID, old_hash: str, new_hash: str, now: dt.datetime
) -> bool:
    """Re-hash at a new cost, unless the password changed meanwhile (compare-and-set)."""
    result = await session.execute(
        update(User)
        .where(User.id == user_id, User.password_hash == old_hash)
        .values(password_hash=new_hash, updated_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
