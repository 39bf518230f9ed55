"""The standard OAuth 2.0 endpoints under ``/oauth2/`` and the discovery documents that advertise them.

Errors here follow RFC 6749 §5.2 (web.error_response picks the RFC's status and code for these paths).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.config import Settings
from service.keys import KeySet
from service.resources import resources

TOKEN = "/oauth2/token"  # noqa: S105  # a path, not a password
REVOKE = "/oauth2/revoke"
INTROSPECT = "/oauth2/introspect"
JWKS = "/.well-known/jwks.json"
AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]  # "none": public clients send client_id
GRANT_TYPES = ["password", "refresh_token", "client_credentials"]
DISCOVERY_CACHE = "public, max-age=3600"  # nothing in it changes without a restart


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


ROUTES = [
    Route("/.well-known/oauth-authorization-server", authorization_server, methods=["GET"]),
    Route("/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
]
