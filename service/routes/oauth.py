"""The standard OAuth 2.0 endpoints under ``/oauth2/`` and the discovery documents that advertise them.

Errors here follow RFC 6749 §5.2 (web.error_response picks the RFC's status and code for these paths).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service import clients, errors, schemas, tokens, web
from service.config import Settings
from service.keys import KeySet
from service.resources import Resources, resources
from service.routes import auth

TOKEN = "/oauth2/token"  # noqa: S105  # a path, not a password
REVOKE = "/oauth2/revoke"
INTROSPECT = "/oauth2/introspect"
JWKS = "/.well-known/jwks.json"
AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]  # "none": public clients send client_id
GRANT_TYPES = ["password", "refresh_token", "client_credentials"]
DISCOVERY_CACHE = "public, max-age=3600"  # changes only with a restart, or a key of a new algorithm


def metadata(settings: Settings, keys: KeySet) -> dict[str, Any]:
    """RFC 8414 authorization server metadata: every URL absolute, under the issuer."""
    base = settings.issuer
    return {
        "issuer": base,
        "token_endpoint": base + TOKEN,
        "jwks_uri": base + JWKS,
        "revocation_endpoint": base + REVOKE,
        "introspection_endpoint": base + INTROSPECT,
        "grant_types_supported": GRANT_TYPES,
        "response_types_supported": [],  # no authorization endpoint yet (docs/oauth.md)
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "introspection_endpoint_auth_methods_supported": AUTH_METHODS[:2],  # confidential clients only
        "scopes_supported": sorted(settings.user_scopes),
        # RFC 9068 access tokens, signed with these (every key in the JWKS)
        "access_token_signing_alg_values_supported": sorted({key.algorithm for key in keys.by_kid.values()}),
    }


def openid_metadata(settings: Settings, keys: KeySet) -> dict[str, Any]:
    """The OpenID Connect Discovery fields that apply: no ID tokens are issued yet, so the signing
    algorithms listed are those of the access tokens (what libraries reading this document expect)."""
    document = metadata(settings, keys)
    return {
        **document,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": document["access_token_signing_alg_values_supported"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope", "username", "sid"],
    }


async def authorization_server(request: Request) -> JSONResponse:
    res = resources(request)
    return JSONResponse(metadata(res.settings, res.keys), headers={"Cache-Control": DISCOVERY_CACHE})


async def openid_configuration(request: Request) -> JSONResponse:
    res = resources(request)
    return JSONResponse(openid_metadata(res.settings, res.keys), headers={"Cache-Control": DISCOVERY_CACHE})


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def _caller(
    res: Resources, request: Request, form: FormData, *, budget: str | None = "client"
) -> clients.Client | None:
    authorization = request.headers.get("authorization")
    return await clients.authenticate(
        res.settings, res.sessions, res.limiter, authorization, form, utcnow(), budget=budget
    )


async def token(request: Request) -> JSONResponse:
    """RFC 6749 §3.2: the password, refresh_token and client_credentials grants."""
    res = resources(request)
    ip = web.client_ip(request, res.settings.trusted_proxies)
    await res.limiter.hit("ip", ip or "-")
    form = await web.form_body(request)
    grant = schemas.parse_oauth_token_form(form)
    client = await _caller(res, request, form)
    if isinstance(grant, schemas.PasswordGrant):
        granted = clients.password_grant(res.settings, client, grant.scope)
        return JSONResponse(await auth.password_login(res, request, grant, ip, granted))
    if isinstance(grant, schemas.RefreshGrant):
        await res.limiter.hit("refresh", ip or "-")
        return JSONResponse(await auth.rotate(res, grant.refresh_token, client, grant.scope, request=request))
    client = clients.required(client, clients.CLIENT_CREDENTIALS)
    granted, audiences = clients.client_credentials_grant(res.settings, client, grant.scope, grant.resources)
    access = tokens.issue_client_access(
        res.keys, client_id=client.id, audiences=audiences, scope=granted.scope,
        issuer=res.settings.issuer, ttl=granted.access_ttl, now=utcnow(),
    )
    # RFC 6749 §4.4.3: no refresh token; the client simply asks again
    return JSONResponse(
        {"access_token": access, "token_type": "bearer", "expires_in": granted.access_ttl,
         "scope": tokens.scope_text(granted.scope)}
    )


async def revoke(request: Request) -> Response:
    """RFC 7009: 200 for a revoked token and for one that was unknown; a token granted to a client
    can only be revoked by that client."""
    res = resources(request)
    await res.limiter.hit("ip", web.client_ip(request, res.settings.trusted_proxies) or "-")
    form = await web.form_body(request)
    client = await _caller(res, request, form)
    token = schemas.parse_token_param(form)

    def check(owner: str | None) -> None:
        if owner == (client.id if client else None):
            return
        if client is None:
            raise errors.InvalidClient("this token was issued to a registered client: authenticate as that client")
        raise errors.UnauthorizedClient("this token was issued to another client")

    await auth.revoke_token(res, token, utcnow(), check, request=request, client=client)
    return Response(status_code=200)


async def introspect(request: Request) -> JSONResponse:
    """RFC 7662: for confidential clients (resource servers); anything not live is ``{"active": false}``."""
    res = resources(request)
    await res.limiter.hit("introspect", web.client_ip(request, res.settings.trusted_proxies) or "-")
    form = await web.form_body(request)
    caller = await _caller(res, request, form, budget=None)  # at request rate: the per-IP budget applies
    if not clients.may_introspect(caller):
        raise errors.InvalidClient("introspection needs a confidential client's credentials")
    token = schemas.parse_token_param(form)
    return JSONResponse(await auth.describe(res, token, utcnow(), access_type="Bearer"))


ROUTES = [
    Route("/.well-known/oauth-authorization-server", authorization_server, methods=["GET"]),
    Route("/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
    Route(TOKEN, token, methods=["POST"]),
    Route(REVOKE, revoke, methods=["POST"]),
    Route(INTROSPECT, introspect, methods=["POST"]),
]
