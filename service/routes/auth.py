"""The `/api/v1/auth/*` routes, compatible with the old app's clients."""

from __future__ import annotations

import datetime as dt
import hmac
import uuid
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service import audit, clients, errors, lifecycle, metrics, ratelimit, schemas, tokens, web
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
    if res.settings.registration_enumeration_safe:  # one answer whether or not a name is taken
        await lifecycle.register_quietly(res, data)
        return JSONResponse(lifecycle.ACCEPTED, status_code=202)
    user = await lifecycle.register(res, data)  # with its verification mail
    return JSONResponse(schemas.shape_user(user), status_code=201)


async def token(request: Request) -> JSONResponse:
    res = resources(request)
    ip = _ip(res, request)
    await res.limiter.hit("ip", ip or "-")
    grant = schemas.parse_token_form(await web.form_body(request))
    if isinstance(grant, schemas.RefreshGrant):
        await res.limiter.hit("refresh", ip or "-")
        return _old_shape(await rotate(res, grant.refresh_token, request=request))
    # the old route knows no clients and ignores `scope`, as the old app did
    granted = clients.password_grant(res.settings, None, None)
    return _old_shape(await password_login(res, request, grant, ip, granted))


def _old_shape(body: dict[str, Any]) -> JSONResponse:
    """The old app's token pair: exactly its five fields."""
    return JSONResponse({name: value for name, value in body.items() if name != "scope"})


async def password_login(
    res: Resources, request: Request, grant: schemas.PasswordGrant, ip: str | None, granted: clients.Grant
) -> dict[str, Any]:
    """The password grant, for both token routes: limit → admit → read → hash → write → sign."""
    await res.limiter.hit("token", ip or "-")
    # the name as typed, folded: a name hammered from many IPs is refused without a query
    await res.limiter.hit("token_user", "typed", users.fold(grant.username))
    res.hasher.admit()  # shed an overload before the query, not after it
    async with res.sessions() as db:  # short read; the connection goes back before hashing
        user = await users.by_login(db, grant.username)
    # the account, whichever of its names was typed; an unknown name is charged the same way
    account = ratelimit.account(user.id if user else None, grant.username)
    await res.limiter.hit("token_user", "account", account)  # slows spraying one account from many IPs
    await res.limiter.check_backoff(account, ip)  # before any bcrypt
    checked = await res.hasher.verify(grant.password, user.password_hash if user else None)
    if user is None or not checked.ok or not user.is_active:
        await res.limiter.login_failed(account, ip)
        await res.audit.write(_login_failed(res, request, grant.username, user, checked.ok, granted))
        raise errors.InvalidCredentials()  # one answer for unknown user, wrong password, inactive
    await res.limiter.login_succeeded(account, ip)
    lifecycle.check_login(res, user)  # an unverified address, only now that the password is proven
    # another cost, or a hash of the password before NFKC normalisation: store the current form
    rehashed = await res.hasher.hash(grant.password) if checked.rehash else None
    now = utcnow()
    async with res.sessions.begin() as db:  # short write
        if rehashed:
            await users.replace_hash(db, user.id, user.password_hash, rehashed, now)
        started = await sessions.start(
            db, user_id=user.id, now=now, refresh_ttl=res.settings.refresh_token_ttl,
            max_age=res.settings.session_max_age, user_agent=request.headers.get("user-agent"), client_ip=ip,
            client_id=granted.client_id, scope=granted.scope,
        )
        await audit.record(db, audit.LOGIN_SUCCEEDED, actor=audit.Actor.user(user.id),
                           subject=audit.Subject.session(started.session_id), user_id=user.id,
                           client_id=granted.client_id, request=request, now=now)
    if rehashed:
        await res.cache.forget_user(user.id)
    return _token_body(res, user, started, now, granted)


def _login_failed(
    res: Resources, request: Request, name: str, user: User | None, password_ok: bool, granted: clients.Grant
) -> dict[str, Any]:
    """The event of a refused login: the account when the name is one, else the name as a keyed hash."""
    if user is None:
        details = {"reason": "unknown_user", "name_hash": res.audit.name_hash(name)}
    else:
        details = {"reason": "wrong_password" if not password_ok else "inactive"}
    return audit.event(
        audit.LOGIN_FAILED, actor=audit.ANONYMOUS, subject=audit.Subject.user(user.id) if user else None,
        client_id=granted.client_id, request=request, details=details,
    )


async def refresh(request: Request) -> JSONResponse:
    res = resources(request)
    await _limit(res, _ip(res, request), "ip", "refresh")
    data = schemas.parse_refresh(await web.json_body(request))
    return _old_shape(await rotate(res, data.refresh_token, request=request))


async def rotate(
    res: Resources, refresh_token: str, client: clients.Client | None = None,
    scope: frozenset[str] | None = None, *, request: Request | None = None,
) -> dict[str, Any]:
    """The refresh grant, for every route: rotate, then check the token was the caller's to use."""
    now = utcnow()
    async with res.sessions.begin() as db:
        outcome = await sessions.rotate(
            db, refresh_token, now=now, refresh_ttl=res.settings.refresh_token_ttl,
            grace=res.settings.refresh_reuse_grace,
        )
        if isinstance(outcome, sessions.Refused):
            raise errors.InvalidGrant()  # rolls back: the token stays as it was
        if isinstance(outcome, sessions.Reused):  # recorded with the revocation it caused
            await audit.record(
                db, audit.REFRESH_REUSE, actor=audit.Actor.client(client.id) if client else audit.ANONYMOUS,
                subject=audit.Subject.session(outcome.session_id), user_id=outcome.user_id, request=request,
                now=now,
            )
        if isinstance(outcome, sessions.Rotated):  # another client's token, or a wider scope: rolls back too
            granted = clients.refresh_grant(res.settings, client, outcome.client_id, outcome.scope, scope)
    if isinstance(outcome, sessions.Reused):  # committed: the family is revoked
        metrics.REFRESH_REUSE.inc()
        await res.cache.revoke([outcome.session_id])
        raise errors.InvalidGrant("Refresh token reuse detected; the session has been revoked")
    return _token_body(res, outcome.user, outcome.started, now, granted)


def _token_body(
    res: Resources, user: User, started: sessions.Started, now: dt.datetime, granted: clients.Grant
) -> dict[str, Any]:
    settings = res.settings
    with tracer.start_as_current_span("token.sign", attributes={"token.algorithm": res.keys.signing.algorithm}):
        access = tokens.issue_access(
            res.keys, user_id=user.id, username=user.username, session_id=started.session_id,
            issuer=settings.issuer, audience=settings.jwt_audience, ttl=granted.access_ttl, now=now,
            client_id=granted.client_id or tokens.NO_CLIENT, scope=granted.scope,
        )
    return {
        "access_token": access,
        "token_type": "bearer",
        "expires_in": granted.access_ttl,
        "refresh_token": started.refresh_token,
        "refresh_expires_in": int((started.refresh_expires_at - now).total_seconds()),
        "scope": tokens.scope_text(granted.scope),
    }


async def revoke(request: Request) -> Response:
    """RFC 7009: idempotent, and an unknown token is not an error."""
    res = resources(request)
    await _limit(res, _ip(res, request), "ip")
    if web.media_type(request) == "application/json":
        token = schemas.parse_refresh(await request.body()).refresh_token
    else:
        token = schemas.parse_token_param(await web.form_body(request))
    await revoke_token(res, token, utcnow(), request=request)
    return Response(status_code=204)


async def revoke_token(
    res: Resources, token: str, now: dt.datetime, check: Callable[[str | None], None] | None = None, *,
    request: Request | None = None, client: clients.Client | None = None,
) -> None:
    """End the session a refresh or access token belongs to, for both revoke routes. ``check`` is
    handed the client the session was granted to (None: no registered client) and may refuse.
    ``client`` is the client that authenticated, if one did (the actor of the logout event)."""
    async with res.sessions.begin() as db:
        if token.count(".") == 2:  # an access token: end the session it belongs to
            try:
                claims = _verify(res, token, now)
            except errors.InvalidToken:
                return
            session_id, client_id = claims.session_id, claims.raw.get("client_id", tokens.NO_CLIENT)
            owner: str | None = None if client_id == tokens.NO_CLIENT else str(client_id)
            user_id: uuid.UUID | None = claims.user_id
        else:
            found = await sessions.owner(db, token)
            if found is None:
                return
            session_id, owner, user_id = found.session_id, found.client_id, found.user_id
        if check is not None:
            check(owner)
        if await sessions.revoke(db, session_id, now=now, reason="revoked"):
            holder = audit.Actor.user(user_id) if user_id else audit.ANONYMOUS  # whoever held the token
            await audit.record(db, audit.LOGOUT, actor=audit.Actor.client(client.id) if client else holder,
                               subject=audit.Subject.session(session_id), user_id=user_id, client_id=owner,
                               request=request, now=now)
    await res.cache.revoke([session_id])


async def logout_all(request: Request) -> Response:
    res = resources(request)
    await _limit(res, _ip(res, request), "ip")
    now = utcnow()
    claims = _verify(res, web.bearer(request), now)
    async with res.sessions.begin() as db:
        if await users.with_live_session(db, claims.user_id, claims.session_id, now) is None:
            raise errors.InvalidToken()
        ended = await sessions.revoke_all(db, claims.user_id, now=now)
        await audit.record(db, audit.LOGOUT_ALL, actor=audit.Actor.user(claims.user_id),
                           subject=audit.Subject.user(claims.user_id), request=request, now=now,
                           details={"sessions_ended": len(ended)})
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

    A warm, complete cache answers in one Redis round trip; otherwise the database does, in one query
    that checks the session and the user, and a live answer is cached for this session.
    """
    found = await res.cache.lookup(claims.session_id, claims.user_id)
    if found.revoked:
        return None
    if found.user is not None:
        return found.user if found.user["is_active"] else None
    live = await _live_user(res, claims.user_id, claims.session_id, now)
    if live is None:
        return None
    shaped = schemas.shape_user(live.user)
    await res.cache.put(claims.session_id, found, shaped, live.session_expires_at, now)
    return shaped


async def _live_user(
    res: Resources, user_id: uuid.UUID, session_id: uuid.UUID, now: dt.datetime
) -> users.Live | None:
    async with res.reads() as db:
        live = await users.with_live_session(db, user_id, session_id, now)
    if live is None and res.reads is not res.sessions:  # the replica may lag behind a fresh login
        async with res.sessions() as db:
            live = await users.with_live_session(db, user_id, session_id, now)
    return live


async def introspect(request: Request) -> JSONResponse:
    """RFC 7662 for resource servers: registered clients, or the deprecated AUTH_INTROSPECTION_SECRET."""
    res = resources(request)
    await res.limiter.hit("introspect", _ip(res, request) or "-")
    form = await web.form_body(request)
    if not _legacy_bearer(res, request):
        caller = await clients.authenticate(
            res.settings, res.sessions, res.limiter, request.headers.get("authorization"), form, utcnow(),
            budget=None,  # resource servers introspect at request rate: the per-IP budget above applies
        )
        if not clients.may_introspect(caller):
            raise errors.InvalidClient()
    token = schemas.parse_token_param(form)
    return JSONResponse(await describe(res, token, utcnow(), access_type="access_token"))


def _legacy_bearer(res: Resources, request: Request) -> bool:
    """``Authorization: Bearer <AUTH_INTROSPECTION_SECRET>``, as the first release accepted."""
    secret = res.settings.introspection_secret
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    if secret is None or not hmac.compare_digest(credentials.strip().encode(), str(secret).encode()):
        raise errors.InvalidClient()
    return True


async def describe(res: Resources, token: str, now: dt.datetime, *, access_type: str) -> dict[str, Any]:
    """RFC 7662 §2.2: what a token is, or ``{"active": false}`` for anything not live right now.

    A user's access token is live while its session is; a client's while the client is enabled; a
    refresh token until it is used, expires or its session ends. ``access_type`` is the token_type
    of access tokens ("Bearer" per the RFC on /oauth2/introspect, "access_token" on the old route).
    """
    inactive: dict[str, Any] = {"active": False}
    settings = res.settings
    if token.count(".") == 2:
        try:  # a user's token for our audience: the cached verification `me` uses
            raw = _verify(res, token, now).raw
        except errors.InvalidToken:
            try:  # a client's token, for any audience
                raw = tokens.decode(res.keys, token, issuer=settings.issuer, audience=None, now=now)
            except errors.InvalidToken:
                return inactive
        common = {
            "active": True, "token_type": access_type, "scope": raw.get("scope", ""),
            "client_id": raw.get("client_id", tokens.NO_CLIENT), "sub": raw["sub"], "exp": raw["exp"],
            "iat": raw["iat"], "jti": raw["jti"], "iss": raw["iss"], "aud": raw["aud"],
        }
        if "sid" not in raw:  # a client-credentials token: sub is the client
            if raw["sub"] != raw["client_id"] or not await clients.active(settings, res.sessions, raw["sub"]):
                return inactive
            return common
        try:
            claims = tokens.user_claims(raw)
        except errors.InvalidToken:
            return inactive
        user = await _current_user(res, claims, now)
        if user is None:
            return inactive
        return {
            **common, "username": user["username"], "sid": str(claims.session_id),
            "email_verified": user.get("email_verified", False),
        }
    async with res.sessions() as db:
        info = await sessions.live_refresh(db, token, now=now)
    if info is None:
        return inactive
    return {
        "active": True, "token_type": "refresh_token", "scope": " ".join(sorted(info.scope)),
        "client_id": info.client_id or tokens.NO_CLIENT, "sub": str(info.user.id),
        "username": info.user.username, "exp": int(info.expires_at.timestamp()),
        "iat": int(info.issued_at.timestamp()), "sid": str(info.session_id), "iss": settings.issuer,
    }


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
