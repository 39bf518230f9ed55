"""The account lifecycle: registration's mail, password change and reset, email verification, sessions.

Each flow keeps the order the login keeps (``routes/auth.token``): rate limits, then a short read,
then bcrypt holding no connection, then one short write; and after the commit, the cache hears of
every session that ended (``Cache.revoke``) and every user that changed (``Cache.forget_user``), so
``me`` and introspection refuse them on every replica at once. Mails are rows of the outbox written in
the transaction of the token they carry (``service/mail.py``). docs/accounts.md draws each flow.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from service import errors, mail, metrics, policy, ratelimit, schemas, tokens
from service.db import account_tokens, mails, sessions, users
from service.db.models import User
from service.resources import Resources

ACCEPTED = {"detail": "Accepted: if the address can receive mail from us, a message is on its way"}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def queued(res: Resources, kind: str) -> None:
    """After the commit of a mail: count it and have this process's sender send it now."""
    metrics.MAIL_QUEUED.labels(kind).inc()
    res.sender.wake()


async def _password_ok(res: Resources, password: str, stored: str) -> bool:
    checked: object = await res.hasher.verify(password, stored)
    # a bool today; a result object with `.ok` once verify reports re-hashing: never let a truthy object pass
    return getattr(checked, "ok", checked) is True


# -- registration ------------------------------------------------------------------------------------------
async def register(res: Resources, data: schemas.Register) -> User:
    """Create the user and, in the same transaction, the verification mail. 409 when a name is taken."""
    policy.check(res.settings, data.password, username=data.username, email=data.email)
    res.hasher.admit()  # shed an overload before the query, not after it
    async with res.sessions() as db:  # cheap check first: no bcrypt for a name that is taken
        await users.check_available(db, data.username, data.email)
    await res.breach.check(data.password)
    password_hash = await res.hasher.hash(data.password)  # no connection held meanwhile
    now = utcnow()
    async with res.sessions.begin() as db:
        user = await users.create(
            db, username=data.username, email=data.email, password_hash=password_hash, now=now
        )
        await queue_verification(res, db, user, now)
    queued(res, mail.VERIFY)
    return user


async def register_quietly(res: Resources, data: schemas.Register) -> None:
    """AUTH_REGISTRATION_ENUMERATION_SAFE: one answer (202) whether or not the name or address is taken.

    A new account gets its verification mail. A taken address gets a mail to its owner saying so; a
    taken username (with a free address) a mail to that address saying so. bcrypt runs on every path,
    so the answer takes as long either way.
    """
    policy.check(res.settings, data.password, username=data.username, email=data.email)
    res.hasher.admit()
    async with res.sessions() as db:
        owner = await users.by_email(db, data.email)
        try:
            await users.check_available(db, data.username, data.email)
            taken = owner is not None
        except errors.Conflict:
            taken = True
    await res.breach.check(data.password)
    password_hash = await res.hasher.hash(data.password)
    now = utcnow()
    if not taken:
        try:
            async with res.sessions.begin() as db:
                user = await users.create(
                    db, username=data.username, email=data.email, password_hash=password_hash, now=now
                )
                await queue_verification(res, db, user, now)
            queued(res, mail.VERIFY)
            return
        except errors.Conflict:  # lost a race with a concurrent registration: tell whoever owns it
            async with res.sessions() as db:
                owner = await users.by_email(db, data.email)
    async with res.sessions.begin() as db:
        if owner is not None:
            kind = mail.ACCOUNT_EXISTS
            _enqueue(res, db, kind, owner.email, owner.id, {"username": owner.username}, now)
        else:
            kind = mail.USERNAME_TAKEN
            _enqueue(res, db, kind, data.email, None, {"username": data.username}, now)
    queued(res, kind)


def _enqueue(
    res: Resources, db: AsyncSession, kind: str, recipient: str, user_id: uuid.UUID | None,
    values: dict[str, str], now: dt.datetime,
) -> None:
    body = res.templates.render(kind, values)
    mails.enqueue(
        db, kind=kind, recipient=recipient, user_id=user_id, body=body,
        domain=mail.domain_of(res.settings.mail_from), now=now,
    )


def check_login(res: Resources, user: User) -> None:
    """After the password was proven right: refuse an unverified address when the settings ask to.

    Only here, after bcrypt, so the distinct answer tells nothing to someone without the password.
    """
    if res.settings.require_verified_email and user.email_verified_at is None:
        raise errors.EmailNotVerified()


# -- email verification --------------------------------------------------------------------------------------
async def queue_verification(res: Resources, db: AsyncSession, user: User, now: dt.datetime) -> None:
    """In the caller's transaction: a new verification token (older ones stop working) and its mail."""
    settings = res.settings
    token = await account_tokens.issue(
        db, user_id=user.id, purpose=account_tokens.VERIFY, email=user.email,
        ttl=settings.email_verification_ttl, now=now,
    )
    values = {
        "username": user.username, "link": mail.link(settings.email_verification_url, token),
        "valid_for": mail.valid_for(settings.email_verification_ttl),
    }
    _enqueue(res, db, mail.VERIFY, user.email, user.id, values, now)


async def verify_email(res: Resources, token: str) -> None:
    now = utcnow()
    async with res.sessions.begin() as db:
        used = await account_tokens.use(db, token, purpose=account_tokens.VERIFY, now=now)
        if used is None:
            raise errors.InvalidLink()  # rolls back: nothing was spent
        await account_tokens.mark_verified(db, used.user.id, used.email, now)
    await res.cache.forget_user(used.user.id)  # `me` shows email_verified: true at once


async def resend_verification(res: Resources, claims: tokens.AccessClaims, ip: str | None) -> None:
    await res.limiter.hit("password_reset", ip or "-")
    await res.limiter.hit("password_reset_address", "verify", str(claims.user_id))
    now = utcnow()
    async with res.sessions.begin() as db:
        live = await users.with_live_session(db, claims.user_id, claims.session_id, now)
        if live is None:
            raise errors.InvalidToken()
        if live.user.email_verified_at is not None:
            return  # nothing to confirm
        await queue_verification(res, db, live.user, now)
    queued(res, mail.VERIFY)


# -- password change and reset ---------------------------------------------------------------------------------
async def change_password(
    res: Resources, claims: tokens.AccessClaims, current: str, new: str, ip: str | None
) -> None:
    """Verify the current password like a login, set the new one, end every other session."""
    who = ratelimit.account(claims.user_id, "")
    await res.limiter.hit("token_user", "account", who)  # the login's own per-account budget and backoff
    await res.limiter.check_backoff(who, ip)
    res.hasher.admit()
    now = utcnow()
    async with res.sessions() as db:
        live = await users.with_live_session(db, claims.user_id, claims.session_id, now)
    if live is None:
        raise errors.InvalidToken()
    user = live.user
    policy.check(res.settings, new, username=user.username, email=user.email)  # no bcrypt for a weak one
    if not await _password_ok(res, current, user.password_hash):
        await res.limiter.login_failed(who, ip)
        raise errors.WrongPassword()
    await res.limiter.login_succeeded(who, ip)
    await res.breach.check(new)
    new_hash = await res.hasher.hash(new)
    async with res.sessions.begin() as db:
        if await users.with_live_session(db, user.id, claims.session_id, now) is None:
            raise errors.InvalidToken()  # the caller's session ended meanwhile
        if not await users.replace_hash(db, user.id, user.password_hash, new_hash, now):
            raise errors.Conflict("The password was changed meanwhile; try again")
        ended = await sessions.revoke_others(db, user.id, keep=claims.session_id, now=now)
    await res.cache.revoke(ended)
    await res.cache.forget_user(user.id)


async def request_reset(res: Resources, email: str, ip: str | None) -> None:
    """The same work for every address: one outbox row, prepared by the sender (``Sender._prepare``).

    Whether the address has an account is looked up only there, after the answer: the request's
    statements, rows and time are the same for a known and an unknown address by construction.
    """
    await res.limiter.hit("password_reset", ip or "-")
    await res.limiter.hit("password_reset_address", "reset", email.casefold())
    now = utcnow()
    async with res.sessions.begin() as db:
        mails.enqueue(
            db, kind=mail.RESET, recipient=email, user_id=None, body=None,
            domain=mail.domain_of(res.settings.mail_from), now=now,
        )
    queued(res, mail.RESET)


async def confirm_reset(res: Resources, token: str, new: str) -> None:
    """Set the password from a reset link and end every session of the user."""
    now = utcnow()
    async with res.sessions() as db:  # a junk or spent token costs no bcrypt
        usable = await account_tokens.peek(db, token, purpose=account_tokens.RESET, now=now)
    if usable is None:
        raise errors.InvalidLink()
    policy.check(res.settings, new, username=usable.user.username, email=usable.user.email)
    await res.breach.check(new)
    res.hasher.admit()
    new_hash = await res.hasher.hash(new)
    async with res.sessions.begin() as db:
        used = await account_tokens.use(db, token, purpose=account_tokens.RESET, now=utcnow())
        if used is None:
            raise errors.InvalidLink()  # spent by a concurrent confirm: roll back
        await users.set_password(db, used.user.id, new_hash, now)
        await account_tokens.mark_verified(db, used.user.id, used.email, now)  # the mail was read there
        ended = await sessions.revoke_all(db, used.user.id, now=now, reason="password-reset")
    await res.cache.revoke(ended)
    await res.cache.forget_user(used.user.id)


# -- sessions ----------------------------------------------------------------------------------------------
async def list_sessions(res: Resources, claims: tokens.AccessClaims) -> list[dict[str, Any]]:
    now = utcnow()
    async with res.sessions() as db:
        if await users.with_live_session(db, claims.user_id, claims.session_id, now) is None:
            raise errors.InvalidToken()
        active = await sessions.active(
            db, claims.user_id, now=now, idle_since=now - dt.timedelta(seconds=res.settings.refresh_token_ttl)
        )
    return [schemas.shape_session(row, current=row.id == claims.session_id) for row in active]


async def end_session(res: Resources, claims: tokens.AccessClaims, session_id: uuid.UUID) -> None:
    """End one of the caller's own sessions (idempotent); anyone else's, or none, is 404."""
    now = utcnow()
    async with res.sessions.begin() as db:
        if await users.with_live_session(db, claims.user_id, claims.session_id, now) is None:
            raise errors.InvalidToken()
        if not await sessions.revoke_own(db, claims.user_id, session_id, now=now):
            raise errors.NotFound("No such session")
    await res.cache.revoke([session_id])
