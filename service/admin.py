"""The admin API's policy: who may call it, what each action changes in which transaction, what it records.

Callers are OAuth clients holding an access token with the ``admin`` scope (client credentials: the
bootstrap client, the operator, a team's automation), never users: a user's token is 403 whatever its
scope. The CLI (`authsvc users …`) calls the same functions with the actor ``cli``. Each change and its
audit event commit together; ending sessions and changing users then reach the cache (cache.revoke,
cache.forget_user), so every replica refuses a disabled user's tokens at once (docs/design.md).

Lists are keyset pages: ``{"<items>": [...], "next_cursor": str | None}``. A cursor is the position of the
last item, bound to the list and its filters and signed (HMAC-SHA-256 under a key from AUTH_AUDIT_KEY),
so it cannot be forged, edited or replayed against another query: any such cursor is a 400.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import msgspec
from email_validator import EmailNotValidError, validate_email
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import audit, clients, errors, tokens
from service.cache import Cache
from service.config import Settings
from service.db import audit as audit_queries
from service.db import clients as client_queries
from service.db import sessions as session_queries
from service.db import users
from service.db.models import AuditEvent, Session, User
from service.keys import KeySet

SCOPE = "admin"
DEFAULT_LIMIT, MAX_LIMIT = 50, 500
MAX_CURSOR = 1024


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- who may call -------------------------------------------------------------------------------------


async def authorize(
    settings: Settings, keys: KeySet, sessions: async_sessionmaker[Any], authorization: str, now: dt.datetime
) -> str:
    """The id of the admin client behind a Bearer token: 401 without a valid token, 403 for a user's
    token or one without the admin scope, 401 once the client is disabled (its tokens die with it)."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.Unauthorized()
    claims = tokens.decode(keys, token.strip(), issuer=settings.issuer, audience=settings.jwt_audience, now=now)
    if "sid" in claims or claims["sub"] != claims["client_id"]:
        raise errors.InsufficientScope("the admin API takes a client's token (client credentials), not a user's")
    if SCOPE not in str(claims.get("scope", "")).split():
        raise errors.InsufficientScope(f"the access token lacks the `{SCOPE}` scope")
    client_id = str(claims["client_id"])
    if not await clients.active(settings, sessions, client_id):
        raise errors.InvalidToken("the client of this token is disabled")
    return client_id


# -- cursors ------------------------------------------------------------------------------------------


def _mac(key: bytes, kind: str, query: Mapping[str, Any], payload: bytes) -> bytes:
    bound = json.dumps([kind, sorted(query.items())], separators=(",", ":"), default=str).encode()
    return hmac.new(key, bound + b"\0" + payload, hashlib.sha256).digest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def cursor(key: bytes, kind: str, query: Mapping[str, Any], position: Sequence[Any]) -> str:
    """The opaque, signed cursor of a position in a list (``kind``) under these filters."""
    payload = json.dumps(list(position), separators=(",", ":"), default=str).encode()
    return f"{_b64(payload)}.{_b64(_mac(key, kind, query, payload))}"


def position(key: bytes, kind: str, query: Mapping[str, Any], given: str | None) -> list[Any] | None:
    """The position a cursor names, or None without one; InvalidCursor unless this list signed it."""
    if given is None:
        return None
    payload_text, dot, mac_text = given.partition(".")
    try:
        payload, mac = _unb64(payload_text), _unb64(mac_text)
    except (binascii.Error, ValueError):
        raise errors.InvalidCursor() from None
    if not dot or not hmac.compare_digest(mac, _mac(key, kind, query, payload)):
        raise errors.InvalidCursor()
    found = json.loads(payload)
    if not isinstance(found, list):
        raise errors.InvalidCursor()
    return found


# -- query parameters ---------------------------------------------------------------------------------


def parameters(raw: Any, allowed: Sequence[str]) -> dict[str, str]:
    """The query parameters, each at most once, none unknown (a typo in a filter must not widen a list)."""
    found: dict[str, str] = {}
    for name, value in raw.multi_items():
        if name not in allowed:
            raise errors.InvalidRequest(f"unknown query parameter `{name}`; allowed: {', '.join(allowed)}")
        if name in found:
            raise errors.InvalidRequest(f"query parameter `{name}` is given more than once")
        if any(ord(c) < 0x20 for c in value) or len(value) > 1024:
            raise errors.InvalidRequest(f"query parameter `{name}` is too long or holds control characters")
        found[name] = value
    return found


def limit_of(params: Mapping[str, str]) -> int:
    raw = params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise errors.InvalidRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def _bool(params: Mapping[str, str], name: str) -> bool | None:
    raw = params.get(name)
    if raw is None:
        return None
    if raw not in ("true", "false"):
        raise errors.InvalidRequest(f"{name} must be true or false")
    return raw == "true"


def _uuid(params: Mapping[str, str], name: str) -> uuid.UUID | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise errors.InvalidRequest(f"{name} must be a UUID") from None


def _time(params: Mapping[str, str], name: str) -> dt.datetime | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(raw)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise errors.InvalidRequest(f"{name} must be an ISO 8601 time with a zone, e.g. 2026-01-31T12:00:00Z")
    return moment


def parse_id(raw: str, noun: str = "user") -> uuid.UUID:
    """An id from the path; anything that is not one is simply not found."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise errors.NotFound(f"no such {noun}") from None


# -- request bodies -----------------------------------------------------------------------------------

Unset = msgspec.UnsetType
UNSET = msgspec.UNSET
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Audience = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
GrantType = Literal["password", "refresh_token", "client_credentials"]
Lifetime = Annotated[int, msgspec.Meta(ge=30, le=86400, description="access-token lifetime, seconds")]


class UserPatch(msgspec.Struct, forbid_unknown_fields=True):
    """What an admin may change on a user. (``email_verified`` comes with the lifecycle flows.)"""

    is_active: bool | Unset = UNSET
    email: Annotated[str, msgspec.Meta(min_length=3, max_length=320)] | Unset = UNSET


class NewClient(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    grant_types: Annotated[list[GrantType], msgspec.Meta(min_length=1)]
    scope: Annotated[str, msgspec.Meta(max_length=1000, description="space-separated scopes")] = ""
    audiences: Annotated[list[Audience], msgspec.Meta(max_length=32)] = msgspec.field(default_factory=list)
    type: Literal["confidential", "public"] = "confidential"
    access_token_ttl: Lifetime | None = None


class ClientPatch(msgspec.Struct, forbid_unknown_fields=True):
    name: Name | Unset = UNSET
    grant_types: Annotated[list[GrantType], msgspec.Meta(min_length=1)] | Unset = UNSET
    scope: Annotated[str, msgspec.Meta(max_length=1000)] | Unset = UNSET
    audiences: Annotated[list[Audience], msgspec.Meta(max_length=32)] | Unset = UNSET
    access_token_ttl: Lifetime | Unset | None = UNSET
    rotate_secret: bool = False
    keep_previous_seconds: Annotated[int, msgspec.Meta(ge=0, le=2_592_000)] = 86400


def _email(raw: str) -> str:
    try:
        return validate_email(raw, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise errors.InvalidRequest(f"email: {exc}") from None


# -- shapes -------------------------------------------------------------------------------------------


def iso(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if moment else None


def shape_user(user: User) -> dict[str, Any]:
    return {
        "id": str(user.id), "username": user.username, "email": user.email, "is_active": user.is_active,
        "created_at": iso(user.created_at), "updated_at": iso(user.updated_at),
    }


def shape_session(session: Session) -> dict[str, Any]:
    return {
        "id": str(session.id), "created_at": iso(session.created_at), "last_used_at": iso(session.last_used_at),
        "expires_at": iso(session.expires_at), "client_id": session.client_id, "scope": session.scope or "",
        "client_ip": session.client_ip, "user_agent": session.user_agent,
    }


def shape_event(row: AuditEvent) -> dict[str, Any]:
    return {
        "id": row.id, "occurred_at": iso(row.occurred_at), "type": row.type,
        "actor": {"type": row.actor_type, "id": row.actor_id},
        "subject": {"type": row.subject_type, "id": row.subject_id} if row.subject_type else None,
        "user_id": str(row.user_id) if row.user_id else None, "client_id": row.client_id,
        "client_ip": row.client_ip, "user_agent": row.user_agent, "request_id": row.request_id,
        "trace_id": row.trace_id, "details": row.details,
    }


def _page(items: list[Any], limit: int, key: bytes, kind: str, query: Mapping[str, Any], last: Any) -> str | None:
    """The next cursor: the position of the last item, when the page is full (there may be more)."""
    return cursor(key, kind, query, last(items[-1])) if len(items) == limit else None


# -- users ----------------------------------------------------------------------------------------------


async def find_users(sessions: async_sessionmaker[Any], key: bytes, raw: Any) -> dict[str, Any]:
    """``q`` (a username or email prefix, any case), ``active``, ``limit``, ``cursor``."""
    params = parameters(raw, ("q", "active", "limit", "cursor"))
    limit, prefix, active = limit_of(params), params.get("q") or None, _bool(params, "active")
    if prefix is not None and len(prefix) > 320:
        raise errors.InvalidRequest("q must be at most 320 characters")
    query = {"q": prefix, "active": active}
    after = position(key, "users", query, params.get("cursor"))
    if after is not None and (len(after) != 1 or not isinstance(after[0], str)):
        raise errors.InvalidCursor()
    async with sessions() as db:
        found = await users.search(db, prefix=prefix, active=active, after=after[0] if after else None, limit=limit)
    return {
        "users": [shape_user(user) for user in found],
        "next_cursor": _page(found, limit, key, "users", query, lambda user: [users.order_key(user)]),
    }


async def get_user(sessions: async_sessionmaker[Any], user_id: uuid.UUID) -> User:
    async with sessions() as db:
        user = await users.by_id(db, user_id)
    if user is None:
        raise errors.NotFound("no such user")
    return user


async def _user(db: AsyncSession, user_id: uuid.UUID) -> User:
    user = await users.by_id(db, user_id)
    if user is None:
        raise errors.NotFound("no such user")
    return user


async def update_user(
    sessions: async_sessionmaker[Any], cache: Cache, user_id: uuid.UUID, patch: UserPatch, *,
    actor: audit.Actor, request: audit.Origin | None, now: dt.datetime,
) -> User:
    """Change a user's email and/or is_active. Disabling ends every session in the same transaction and
    then in the cache: `me`, introspection and refresh refuse at once on every replica, login too."""
    ended: list[uuid.UUID] = []
    changed = False
    async with sessions.begin() as db:
        user = await _user(db, user_id)
        if not isinstance(patch.email, Unset) and (email := _email(patch.email)) != user.email:
            await users.set_email(db, user_id, email, now)
            await audit.record(db, audit.USER_UPDATED, actor=actor, subject=audit.Subject.user(user_id),
                               request=request, now=now, details={"fields": ["email"]})
            changed = True
        if not isinstance(patch.is_active, Unset) and patch.is_active != user.is_active:
            await users.set_active(db, user_id, active=patch.is_active, now=now)
            if not patch.is_active:
                ended = await session_queries.revoke_all(db, user_id, now=now, reason="user-disabled")
            await audit.record(
                db, audit.USER_ENABLED if patch.is_active else audit.USER_DISABLED, actor=actor,
                subject=audit.Subject.user(user_id), request=request, now=now,
                details={} if patch.is_active else {"sessions_ended": len(ended)},
            )
            changed = True
        await db.refresh(user)
    if ended:
        await cache.revoke(ended)
    if changed:
        await cache.forget_user(user_id)
    return user


async def pending_data(db: AsyncSession, user_id: uuid.UUID) -> None:
    """Hook for the lifecycle flows: delete the user's pending mails and account tokens here (rows with a
    foreign key to users and ON DELETE CASCADE go by themselves). Sessions and refresh tokens cascade."""


async def delete_user(
    sessions: async_sessionmaker[Any], cache: Cache, user_id: uuid.UUID, *, actor: audit.Actor,
    request: audit.Origin | None, now: dt.datetime,
) -> None:
    """Erase the account: its row, sessions, refresh tokens and pending data. The username and email are
    free again at once; the audit log keeps the id and nothing else about the person."""
    async with sessions.begin() as db:
        await _user(db, user_id)
        ended = await session_queries.revoke_all(db, user_id, now=now, reason="user-deleted")
        await pending_data(db, user_id)
        await users.delete_user(db, user_id)
        await audit.record(db, audit.USER_DELETED, actor=actor, subject=audit.Subject.user(user_id),
                           request=request, now=now, details={"sessions_ended": len(ended)})
    await cache.revoke(ended)
    await cache.forget_user(user_id)


async def start_password_reset(db: AsyncSession, user: User, now: dt.datetime) -> None:
    """Hook for the lifecycle flows: create the reset token and queue its mail (the outbox) in this
    transaction. Until mail exists a reset request is recorded and nothing is sent."""


async def request_password_reset(
    sessions: async_sessionmaker[Any], user_id: uuid.UUID, *, actor: audit.Actor, request: audit.Origin | None,
    now: dt.datetime,
) -> None:
    async with sessions.begin() as db:
        user = await _user(db, user_id)
        await start_password_reset(db, user, now)
        await audit.record(db, audit.PASSWORD_RESET_REQUESTED, actor=actor, subject=audit.Subject.user(user_id),
                           request=request, now=now)


# -- sessions -------------------------------------------------------------------------------------------


async def find_sessions(
    sessions: async_sessionmaker[Any], key: bytes, user_id: uuid.UUID, raw: Any, now: dt.datetime
) -> dict[str, Any]:
    params = parameters(raw, ("limit", "cursor"))
    limit, query = limit_of(params), {"user_id": str(user_id)}
    before = _time_id(position(key, "sessions", query, params.get("cursor")), uuid.UUID)
    async with sessions() as db:
        await _user(db, user_id)
        found = await session_queries.live_of_user(db, user_id, now=now, before=before, limit=limit)
    return {
        "sessions": [shape_session(session) for session in found],
        "next_cursor": _page(found, limit, key, "sessions", query, lambda s: [iso(s.created_at), str(s.id)]),
    }


def _time_id(found: list[Any] | None, kind: Any) -> Any:
    """A (time, id) position from a cursor this service signed."""
    if found is None:
        return None
    try:
        moment, ident = found
        return dt.datetime.fromisoformat(moment), kind(ident)
    except (ValueError, TypeError):
        raise errors.InvalidCursor() from None


async def end_sessions(
    sessions: async_sessionmaker[Any], cache: Cache, user_id: uuid.UUID, *, actor: audit.Actor,
    request: audit.Origin | None, now: dt.datetime,
) -> int:
    async with sessions.begin() as db:
        await _user(db, user_id)
        ended = await session_queries.revoke_all(db, user_id, now=now, reason="admin")
        if ended:
            await audit.record(db, audit.SESSION_ENDED, actor=actor, subject=audit.Subject.user(user_id),
                               request=request, now=now, details={"sessions_ended": len(ended)})
    await cache.revoke(ended)
    return len(ended)


async def end_session(
    sessions: async_sessionmaker[Any], cache: Cache, user_id: uuid.UUID, session_id: uuid.UUID, *,
    actor: audit.Actor, request: audit.Origin | None, now: dt.datetime,
) -> None:
    """End one session of the user; ending one that has already ended is not an error (idempotent)."""
    async with sessions.begin() as db:
        ended = await session_queries.revoke_of_user(db, user_id, session_id, now=now, reason="admin")
        if ended is None:
            raise errors.NotFound("no such session of this user")
        if ended:
            await audit.record(db, audit.SESSION_ENDED, actor=actor, subject=audit.Subject.session(session_id),
                               user_id=user_id, request=request, now=now)
    await cache.revoke([session_id])


# -- clients --------------------------------------------------------------------------------------------


def shape_client(client: clients.Client) -> dict[str, Any]:
    return client.shape()


async def find_clients(sessions: async_sessionmaker[Any], key: bytes, raw: Any) -> dict[str, Any]:
    params = parameters(raw, ("limit", "cursor"))
    limit = limit_of(params)
    after = _time_id(position(key, "clients", {}, params.get("cursor")), str)
    async with sessions() as db:
        found = [clients.Client.from_row(row) for row in await client_queries.page(db, after=after, limit=limit)]
    return {
        "clients": [shape_client(client) for client in found],
        "next_cursor": _page(found, limit, key, "clients", {}, lambda c: [iso(c.created_at), c.id]),
    }


async def get_client(sessions: async_sessionmaker[Any], client_id: str) -> clients.Client:
    async with sessions() as db:
        row = await client_queries.by_id(db, client_id) if len(client_id) <= 64 else None
    if row is None:
        raise errors.NotFound("no such registered client (built-in clients are configured by settings)")
    return clients.Client.from_row(row)


async def create_client(
    sessions: async_sessionmaker[Any], new: NewClient, *, actor: audit.Actor, request: audit.Origin | None,
    now: dt.datetime,
) -> dict[str, Any]:
    client, secret = await clients.register(
        sessions, name=new.name, grant_types=list(new.grant_types), scopes=_scopes(new.scope),
        audiences=new.audiences, confidential=new.type == "confidential", access_token_ttl=new.access_token_ttl,
        now=now, actor=actor, request=request,
    )
    return {**shape_client(client), "client_secret": secret}  # the only time the secret is shown


def _scopes(text: str) -> frozenset[str]:
    try:
        return clients.parse_scope(text) or frozenset()
    except errors.InvalidScope as exc:
        raise errors.InvalidRequest(exc.detail) from None


async def update_client(
    sessions: async_sessionmaker[Any], client_id: str, patch: ClientPatch, *, actor: audit.Actor,
    request: audit.Origin | None, now: dt.datetime,
) -> dict[str, Any]:
    """Change the registration and/or rotate the secret (shown in this answer only)."""
    client = await get_client(sessions, client_id)
    changes: dict[str, Any] = {}
    for field in ("name", "grant_types", "audiences", "access_token_ttl"):
        value = getattr(patch, field)
        if not isinstance(value, Unset):
            changes[field] = list(value) if isinstance(value, list) else value
    if not isinstance(patch.scope, Unset):
        changes["scopes"] = _scopes(patch.scope)
    if changes:
        updated = await clients.update(sessions, client_id, changes, now, actor, request)
        if updated is None:
            raise errors.Conflict("a disabled client cannot be changed; register a new one")
        client = updated
    body = shape_client(client)
    if patch.rotate_secret:
        secret = await clients.rotate_secret(sessions, client_id, patch.keep_previous_seconds, now, actor, request)
        if secret is None:
            raise errors.Conflict("only an enabled confidential client has a secret to rotate")
        until = now + dt.timedelta(seconds=patch.keep_previous_seconds)
        body = {**body, "client_secret": secret, "previous_secret_valid_until": iso(until)}
    return body


async def disable_client(
    sessions: async_sessionmaker[Any], client_id: str, *, actor: audit.Actor, request: audit.Origin | None,
    now: dt.datetime,
) -> None:
    """Refuse the client from now on and end its sessions; the row stays (its id is never reused, and
    the audit log keeps naming it). Idempotent."""
    await get_client(sessions, client_id)
    await clients.disable(sessions, client_id, now, actor, request)


# -- audit ----------------------------------------------------------------------------------------------


async def find_events(sessions: async_sessionmaker[Any], key: bytes, raw: Any) -> dict[str, Any]:
    """``user_id``, ``client_id``, ``type``, ``since``, ``until`` (ISO 8601), ``limit``, ``cursor``: newest first."""
    params = parameters(raw, ("user_id", "client_id", "type", "since", "until", "limit", "cursor"))
    limit = limit_of(params)
    user_id, client_id, kind = _uuid(params, "user_id"), params.get("client_id"), params.get("type")
    since, until = _time(params, "since"), _time(params, "until")
    if kind is not None and kind not in audit.TYPES:
        raise errors.InvalidRequest(f"type must be one of {', '.join(audit.TYPES)}")
    if client_id is not None and not 1 <= len(client_id) <= 64:
        raise errors.InvalidRequest("client_id must be 1 to 64 characters")
    if since is not None and until is not None and since >= until:
        raise errors.InvalidRequest("since must be before until")
    query = {name: params.get(name) for name in ("user_id", "client_id", "type", "since", "until")}
    before = _time_id(position(key, "events", query, params.get("cursor")), int)
    async with sessions() as db:
        found = await audit_queries.page(
            db, user_id=user_id, client_id=client_id, type=kind, since=since, until=until, before=before,
            limit=limit,
        )
    return {
        "events": [shape_event(row) for row in found],
        "next_cursor": _page(found, limit, key, "events", query, lambda row: [row.occurred_at.isoformat(), row.id]),
    }
