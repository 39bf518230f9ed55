"""The `/api/v1/auth/*` routes, compatible with the old app's clients."""

from __future__ import annotations

import datetime as dt
import hmac
import uuid
from base64 import b64decode
from binascii import Error as Base64Error
from typing import Any

from opentelemetry import trace
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service import errors, metrics, schemas, tokens, web
from service.db import sessions, users
from service.db.models import User
from service.resources import Resources, resources

PREFIX = "/api/v1/auth"
tracer = trace.get_tracer("service.routes.auth")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ip(res: Resources, request: Request) -> str | None:
    return web.client_ip(request, res.settings.trusted_proxies)


async def _limit(res: Resources, ip: str | None, *budgets: str) -> None:
    """The per-IP budgets, before any parsing, query or hash."""
    for budget in budgets:
        await res.limiter.hit(budget, ip or "-")


async def register(request: Request) -> JSONResponse:
    res = resources(request)
    await _limit(res, _ip(res, request), "ip", "register")
    data = schemas.parse_register(await web.json_body(request))
    res.hasher.admit()  # shed an overload before the query, not after it
    async with res.sessions() as db:  # cheap check first: no bcrypt for a name that is taken
        await users.check_available(db, data.username, data.email)
    password_hash = await res.hasher.hash(data.password)  # no connection held meanwhile
    async with res.sessions.begin() as db:
        user = await users.create(
            db, username=data.username, email=data.email, password_hash=password_hash, now=utcnow()
        )
    return JSONResponse(schemas.shape_user(user), status_code=201)


async def token(request: Request) -> JSONResponse:
    res = resources(request)
    ip = _ip(res, request)
    await res.limiter.hit("ip", ip or "-")
    grant = schemas.parse_token_form(await web.form_body(request))
    if isinstance(grant, schemas.RefreshGrant):
        await res.limiter.hit("refresh", ip or "-")
        return await _rotate(res, grant.refresh_token)
    await res.limiter.hit("token", ip or "-")
    await res.limiter.hit("token_user", grant.username.lower())  # slows spraying one account from many IPs
    await res.limiter.check_backoff(grant.username, ip)
    res.hasher.admit()  # shed an overload before the query, not after it
    async with res.sessions() as db:  # short read; the connection goes back before hashing
        user = await users.by_login(db, grant.username)
    ok = await res.hasher.verify(grant.password, user.password_hash if user else None)
    if user is None or not ok or not user.is_active:
        await res.limiter.login_failed(grant.username, ip)  # unknown names count like known ones
        raise errors.InvalidCredentials()  # one answer for unknown user, wrong password, inactive
    await res.limiter.login_succeeded(grant.username, ip)
    rehashed = await res.hasher.hash(grant.password) if res.hasher.needs_rehash(user.password_hash) else None
    now = utcnow()
    async with res.sessions.begin() as db:  # short write
        if rehashed:
            await users.replace_hash(db, user.id, user.password_hash, rehashed, now)
        started = await sessions.start(
            db, user_id=user.id, now=now, refresh_ttl=res.settings.refresh_token_ttl,
            max_age=res.settings.session_max_age, user_agent=request.headers.get("user-agent"), client_ip=ip,
        )
    if rehashed:
        await res.cache.forget_user(user.id)
    return _token_response(res, user, started, now)


async def refresh(request: Request) -> JSONResponse:
    res = resources(request)
    await _limit(res, _ip(res, request), "ip", "refresh")
    data = schemas.parse_refresh(await web.json_body(request))
    return await _rotate(res, data.refresh_token)


async def _rotate(res: Resources, refresh_token: str) -> JSONResponse:
    now = utcnow()
    async with res.sessions.begin() as db:
        outcome = await sessions.rotate(
            db, refresh_token, now=now, refresh_ttl=res.settings.refresh_token_ttl,
            grace=res.settings.refresh_reuse_grace,
        )
        if isinstance(outcome, sessions.Refused):
            raise errors.InvalidGrant()  # rolls back: the token stays as it was
    if isinstance(outcome, sessions.Reused):  # committed: the family is revoked
        metrics.REFRESH_REUSE.inc()
        await res.cache.revoke([outcome.session_id])
        raise errors.InvalidGrant("Refresh token reuse detected; the session has been revoked")
    return _token_response(res, outcome.user, outcome.started, now)


def _token_response(res: Resources, user: User, started: sessions.Started, now: dt.datetime) -> JSONResponse:
    settings = res.settings
    with tracer.start_as_current_span("token.sign", attributes={"token.algorithm": res.keys.signing.algorithm}):
        access = tokens.issue_access(
            res.keys, user_id=user.id, username=user.username, session_id=started.session_id,
            issuer=settings.issuer, audience=settings.jwt_audience, ttl=settings.access_token_ttl, now=now,
        )
    return JSONResponse(
        {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": settings.access_token_ttl,
            "refresh_token": started.refresh_token,
            "refresh_expires_in": int((started.refresh_expires_at - now).total_seconds()),
        }
    )


async def revoke(request: Request) -> Response:
    """RFC 7009: idempotent, and an unknown token is not an error."""
    res = resources(request)
    await _limit(res, _ip(res, request), "ip")
    if web.media_type(request) == "application/json":
        token = schemas.parse_refresh(await request.body()).refresh_token
    else:
        token = schemas.parse_token_param(await web.form_body(request))
    now = utcnow()
    ended: uuid.UUID | None
    async with res.sessions.begin() as db:
        if token.count(".") == 2:  # an access token: end the session it belongs to
            try:
                claims = _verify(res, token, now)
            except errors.InvalidToken:
                return Response(status_code=204)
            await sessions.revoke(db, claims.session_id, now=now, reason="revoked")
            ended = claims.session_id
        else:
            ended = await sessions.revoke_by_token(db, token, now=now)
    if ended is not None:
        await res.cache.revoke([ended])
    return Response(status_code=204)


async def logout_all(request: Request) -> Response:
    res = resources(request)
    await _limit(res, _ip(res, request), "ip")
    now = utcnow()
    claims = _verify(res, web.bearer(request), now)
    async with res.sessions.begin() as db:
        if await users.with_live_session(db, claims.user_id, claims.session_id, now) is None:
            raise errors.InvalidToken()
        ended = await sessions.revoke_all(db, claims.user_id, now=now)
    await res.cache.revoke(ended)
    return Response(status_code=204)


async def me(request: Request) -> JSONResponse:
    res = resources(request)
    await _limit(res, _ip(res, request), "ip")
    now = utcnow()
    user = await _current_user(res, _verify(res, web.bearer(request), now), now)
    if user is None:
        raise errors.InvalidToken()
    return JSONResponse(user)


async def _current_user(res: Resources, claims: tokens.AccessClaims, now: dt.datetime) -> dict[str, Any] | None:
    """The shaped user behind a verified access token, or None when its session has ended.

    The revoked list answers "has this session ended?" without the database; the cache answers
    "who is this?". Without Redis both questions go to the database, in one query.
    """
    revoked, cached = await res.cache.lookup(claims.session_id, claims.user_id)
    if revoked:
        return None
    if cached is not None:
        return cached if cached["is_active"] else None
    user = await _live_user(res, claims.user_id, claims.session_id, now)
    if user is None:
        return None
    shaped = schemas.shape_user(user)
    if revoked is False:
        await res.cache.put_user(user.id, shaped)
    return shaped


async def _live_user(res: Resources, user_id: uuid.UUID, session_id: uuid.UUID, now: dt.datetime) -> User | None:
    async with res.reads() as db:
        user = await users.with_live_session(db, user_id, session_id, now)
    if user is None and res.reads is not res.sessions:  # the replica may lag behind a fresh login
        async with res.sessions() as db:
            user = await users.with_live_session(db, user_id, session_id, now)
    return user


async def introspect(request: Request) -> JSONResponse:
    """RFC 7662 for resource servers holding the introspection secret."""
    res = resources(request)
    await res.limiter.hit("introspect", _ip(res, request) or "-")
    _authenticate_client(res, request)
    token = schemas.parse_token_param(await web.form_body(request))
    now = utcnow()
    body: dict[str, Any] = {"active": False}
    if token.count(".") == 2:
        try:
            claims = _verify(res, token, now)
        except errors.InvalidToken:
            return JSONResponse(body)
        user = await _current_user(res, claims, now)
        if user is not None:
            body = {
                "active": True, "token_type": "access_token", "sub": user["id"], "username": user["username"],
                "exp": claims.expires_at, "iat": claims.issued_at, "sid": str(claims.session_id),
                "jti": claims.jti, "iss": res.settings.issuer, "aud": res.settings.jwt_audience,
            }
    else:
        async with res.sessions() as db:
            info = await sessions.live_refresh(db, token, now=now)
        if info is not None:
            body = {
                "active": True, "token_type": "refresh_token", "sub": str(info.user.id),
                "username": info.user.username, "exp": int(info.expires_at.timestamp()),
                "iat": int(info.issued_at.timestamp()), "sid": str(info.session_id),
                "iss": res.settings.issuer,
            }
    return JSONResponse(body)


def _authenticate_client(res: Resources, request: Request) -> None:
    secret = res.settings.introspection_secret
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if secret is None or not credentials:
        raise errors.InvalidClient()
    expected = str(secret).encode()
    if scheme.lower() == "bearer":
        ok = hmac.compare_digest(credentials.strip().encode(), expected)
    elif scheme.lower() == "basic":
        try:
            client_id, _, given = b64decode(credentials.strip(), validate=True).decode().partition(":")
        except (Base64Error, UnicodeDecodeError, ValueError):
            raise errors.InvalidClient() from None
        ok = hmac.compare_digest(given.encode(), expected) & hmac.compare_digest(
            client_id.encode(), res.settings.introspection_client_id.encode()
        )
    else:
        ok = False
    if not ok:
        raise errors.InvalidClient()


def _verify(res: Resources, token: str, now: dt.datetime) -> tokens.AccessClaims:
    return res.verifier.verify(token, now)


ROUTES = [
    Route(f"{PREFIX}/register", register, methods=["POST"]),
    Route(f"{PREFIX}/token", token, methods=["POST"]),
    Route(f"{PREFIX}/refresh", refresh, methods=["POST"]),
    Route(f"{PREFIX}/revoke", revoke, methods=["POST"]),
    Route(f"{PREFIX}/logout-all", logout_all, methods=["POST"]),
    Route(f"{PREFIX}/me", me, methods=["GET"]),
    Route(f"{PREFIX}/introspect", introspect, methods=["POST"]),
]
