"""Queries on users. Every function takes the AsyncSession of the caller's unit of work."""

from __future__ import annotations

import datetime as dt
import unicodedata
import uuid
from typing import NamedTuple

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

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


def search_key(column: InstrumentedAttribute[str], dialect: str) -> ColumnElement[str]:
    """``lower(column)`` in byte order: what ix_users_username_search and ix_users_email_search index on
    PostgreSQL (``COLLATE "C"``); SQLite compares bytes already and indexes ``lower()`` itself."""
    lowered = func.lower(column)
    return lowered.collate("C") if dialect == "postgresql" else lowered


def prefix_range(prefix: str) -> tuple[str, str | None]:
    """[low, high) of the strings that start with ``prefix``, in byte order (which for UTF-8 is code point
    order): high is the prefix with its last character incremented; None when there is no such string."""
    stem = prefix
    while stem:
        last = ord(stem[-1]) + 1
        if 0xD800 <= last <= 0xDFFF:  # surrogates are no characters: the next one is U+E000
            last = 0xE000
        if last <= 0x10FFFF:
            return prefix, stem[:-1] + chr(last)
        stem = stem[:-1]
    return prefix, None


async def search(
    session: AsyncSession, *, prefix: str | None, active: bool | None, after: str | None, limit: int
) -> list[User]:
    """Users whose username or email starts with ``prefix`` (case-insensitively), in the order of their
    lowered username (unique: a total order for keyset pages); ``after`` is the last one of the previous
    page. Each condition is a range on its index: the list is an ordered index scan that stops after
    ``limit`` rows; a prefix reads the matches of both indexes (a bitmap OR), then takes the first ones.
    """
    dialect = session.get_bind().dialect.name
    name = search_key(User.username, dialect)
    query = select(User)
    if prefix:
        low, high = prefix_range(prefix.lower())
        email = search_key(User.email, dialect)
        by_name, by_email = name >= low, email >= low
        if high is not None:
            by_name, by_email = by_name & (name < high), by_email & (email < high)
        query = query.where(by_email if "@" in prefix else by_name | by_email)  # usernames hold no "@"
    if active is not None:
        query = query.where(User.is_active.is_(active))
    if after is not None:
        query = query.where(name > after)
    query = query.order_by(name).limit(limit)
    return list((await session.execute(query)).scalars())


def order_key(user: User) -> str:
    """The keyset position of a user in ``search``: its lowered username, as PostgreSQL lowers it (ASCII)."""
    return user.username.lower()


async def set_email(session: AsyncSession, user_id: uuid.UUID, email: str, now: dt.datetime) -> None:
    try:
        await session.execute(update(User).where(User.id == user_id).values(email=email, updated_at=now))
    except IntegrityError as exc:
        raise errors.EmailTaken(email) from exc


async def delete_user(session: AsyncSession, user_id: uuid.UUID) -> bool:
    """Delete the user; its sessions and refresh tokens go with it (ON DELETE CASCADE)."""
    result = await session.execute(delete(User).where(User.id == user_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]
