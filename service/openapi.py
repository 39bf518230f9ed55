"""The OpenAPI 3.1 document. Request schemas come from the msgspec structs that enforce them;
a test compares documented status codes against real answers."""

from __future__ import annotations

from typing import Any

import msgspec

from service import __version__, admin, audit, clients, schemas, web

REF = "#/components/schemas/{name}"
LINKS = [
    ("/api/v1/auth/register", "register", "POST"),
    ("/api/v1/auth/token", "token", "POST"),
    ("/api/v1/auth/refresh", "refresh", "POST"),
    ("/api/v1/auth/revoke", "revoke", "POST"),
    ("/api/v1/auth/logout-all", "logout-all", "POST"),
    ("/api/v1/auth/me", "me", "GET"),
    ("/api/v1/auth/introspect", "introspect", "POST"),
    ("/api/v1/auth/password", "password-change", "POST"),
    ("/api/v1/auth/password-reset", "password-reset", "POST"),
    ("/api/v1/auth/password-reset/confirm", "password-reset-confirm", "POST"),
    ("/api/v1/auth/verify-email", "verify-email", "POST"),
    ("/api/v1/auth/verify-email/resend", "verify-email-resend", "POST"),
    ("/api/v1/auth/sessions", "sessions", "GET"),
    ("/oauth2/token", "oauth2-token", "POST"),
    ("/oauth2/revoke", "oauth2-revoke", "POST"),
    ("/oauth2/introspect", "oauth2-introspect", "POST"),
    ("/.well-known/jwks.json", "jwks", "GET"),
    ("/.well-known/oauth-authorization-server", "oauth-authorization-server", "GET"),
    ("/.well-known/openid-configuration", "openid-configuration", "GET"),
    ("/health/readiness", "readiness", "GET"),
    ("/openapi.json", "openapi", "GET"),
]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name=name)}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _json(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


FORM = "application/x-www-form-urlencoded"
# what the schemas cannot count: a field repeated (an array) counts once per value
FORM_LIMIT = f"a form: at most {web.FORM_MAX_FIELDS} fields, a repeated one counting each time"


def _body(schema: str, media: str = "application/json") -> dict[str, Any]:
    described = {"description": FORM_LIMIT} if media == FORM else {}
    return {"required": True, **described, "content": {media: {"schema": _ref(schema)}}}


INVALID = _error("invalid body: malformed, missing/extra fields, or a field out of range")
TIMED_OUT = _error("the body did not arrive within AUTH_REQUEST_BODY_TIMEOUT; the connection is closed")
TOO_LARGE = _error("body over AUTH_MAX_BODY_BYTES")
NOT_JSON = _error("Content-Type is not application/json")
NOT_FORM = _error("Content-Type is not a form")
RETRY_AFTER = {"Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 1}}}
CHALLENGE = {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}}
LIMITED = {**_error("rate limited; see Retry-After"), "headers": RETRY_AFTER}
UNAVAILABLE = {
    **_error("overloaded (`overloaded`) or the database unreachable (`database_unavailable`); see Retry-After"),
    "headers": RETRY_AFTER,
}
UNAUTHORIZED = {
    **_error("missing, invalid, expired or revoked credentials"),
    "headers": CHALLENGE,
}
# /oauth2/*: RFC 6749 §5.2 statuses; a wrong Content-Type is 400 invalid_request there, not 415
INVALID_CLIENT = {
    **_error("invalid_client: client authentication failed (an unknown client, a wrong secret and a disabled "
             "client get this one answer), or is required and missing"),
    "headers": {"WWW-Authenticate": {"required": True, "schema": {"type": "string", "pattern": "^Basic "}}},
}
OAUTH_ERRORS = {
    "401": INVALID_CLIENT,
    "408": TIMED_OUT,
    "413": TOO_LARGE,
    "429": LIMITED,
    "503": UNAVAILABLE,
}
CLIENT_AUTH: list[dict[str, list[str]]] = [{"clientBasic": []}, {}]  # {}: in the form, or no client
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
# OpenAPI links: what a client does next with an answer (schemathesis' stateful phase follows them)
LOGIN = {
    "Login": {
        "operationId": "token",
        "requestBody": {"username": "$request.body#/username", "password": "$request.body#/password"},
    }
}
WITH_PAIR = {
    "Refresh": {"operationId": "refresh", "requestBody": {"refresh_token": "$response.body#/refresh_token"}},
    "Revoke": {"operationId": "revoke", "requestBody": {"refresh_token": "$response.body#/refresh_token"}},
    "Introspect": {"operationId": "introspect", "requestBody": {"token": "$response.body#/access_token"}},
}
OAUTH_LOGIN = {
    "OAuthLogin": {
        "operationId": "oauth2-token",
        "requestBody": {
            "grant_type": "password", "username": "$request.body#/username", "password": "$request.body#/password"
        },
    }
}
WITH_OAUTH_PAIR = {
    "Refresh": {
        "operationId": "oauth2-token",
        "requestBody": {"grant_type": "refresh_token", "refresh_token": "$response.body#/refresh_token"},
    },
    "Revoke": {"operationId": "oauth2-revoke", "requestBody": {"token": "$response.body#/refresh_token"}},
    "Introspect": {"operationId": "oauth2-introspect", "requestBody": {"token": "$response.body#/access_token"}},
}
NO_NUL = {"pattern": schemas.TEXT}  # PostgreSQL text holds no NUL; refused with 422
TOKEN_VALUE = {"type": "string", "minLength": 1, "maxLength": schemas.TOKEN_MAX_LENGTH, **NO_NUL}
LOGIN_NAME = {
    "type": "string", "minLength": 1, "maxLength": schemas.LOGIN_MAX_LENGTH, **NO_NUL,
    "description": "username, or email when it holds an @",
}
LOGIN_PASSWORD = {
    "type": "string", "minLength": 1, **NO_NUL, **schemas.PASSWORD_SCHEMA, "description": "at most 72 bytes of UTF-8"
}
# RFC 6749 §3.3: scope tokens (service.config.SCOPE_TOKEN) separated by spaces; empty: none asked
SCOPE = {"type": "string", "maxLength": schemas.TOKEN_MAX_LENGTH, "pattern": r"^[\x20\x21\x23-\x5B\x5D-\x7E]*$"}
CLIENT_FIELD = {"type": "string", "maxLength": clients.FIELD_MAX_LENGTH, **NO_NUL}
CLIENT_FIELDS = {
    "client_id": {**CLIENT_FIELD, "description": "client_secret_post with client_secret, or alone a public client"},
    "client_secret": {**CLIENT_FIELD, "description": "client_secret_post; never together with Basic credentials"},
}
SECRET_NEEDS_ID = {  # RFC 6749 §2.3.1: a posted secret comes with its client_id (an empty parameter is absent)
    "anyOf": [
        {"properties": {"client_secret": {"maxLength": 0}}},
        {"required": ["client_id"], "properties": {"client_id": {"minLength": 1}}},
    ]
}
RESOURCE = {  # RFC 8707 wants an absolute URI without a fragment; the fragment (and NUL) is what is refused
    "type": "string", "maxLength": schemas.RESOURCE_MAX_LENGTH, "pattern": r"^[^#\x00]*$",
    "description": "RFC 8707: one of the client's audiences; may repeat",
}

_request_schemas, _components = msgspec.json.schema_components(
    [
        schemas.Register, schemas.RefreshRequest, schemas.PasswordChange, schemas.PasswordResetRequest,
        schemas.PasswordResetConfirm, schemas.VerifyEmail, admin.UserPatch, admin.NewClient, admin.ClientPatch,
    ],
    ref_template=REF,
)

COMPONENTS: dict[str, Any] = {
    **_components,
    "Error": {
        "type": "object",
        "required": ["error", "error_description", "detail"],
        "properties": {
            "error": {"type": "string", "description": "a code; on /oauth2/* one of RFC 6749 §5.2"},
            "error_description": {"type": "string", "description": "the message (RFC 6749 §5.2)"},
            "detail": {"type": "string", "description": "the same message, where the old app's clients read it"},
        },
    },
    "User": {
        "type": "object",
        "required": ["id", "username", "email", "is_active", "created_at"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "username": {"type": "string"},
            "email": {"type": "string", "format": "email"},
            "is_active": {"type": "boolean"},
            "email_verified": {"type": "boolean", "description": "the address was confirmed from a mail"},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "Accepted": {"type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}},
    "Sessions": {
        "type": "object",
        "required": ["sessions"],
        "properties": {
            "sessions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": [
                        "id", "created_at", "last_used_at", "expires_at", "user_agent", "client_ip", "current"
                    ],
                    "properties": {
                        "id": {"type": "string", "format": "uuid"},
                        "created_at": {"type": "string", "format": "date-time"},
                        "last_used_at": {"type": "string", "format": "date-time", "description": "last refresh"},
                        "expires_at": {"type": "string", "format": "date-time", "description": "absolute end"},
                        "user_agent": {"type": ["string", "null"]},
                        "client_ip": {"type": ["string", "null"]},
                        "current": {"type": "boolean", "description": "the session of the calling token"},
                    },
                },
            }
        },
    },
    "TokenPair": {
        "type": "object",
        "required": ["access_token", "token_type", "expires_in", "refresh_token", "refresh_expires_in"],
        "properties": {
            "access_token": {"type": "string", "description": "EdDSA JWT; verify with the JWKS"},
            "token_type": {"const": "bearer"},
            "expires_in": {"type": "integer"},
            "refresh_token": {"type": "string"},
            "refresh_expires_in": {"type": "integer"},
        },
    },
    "TokenForm": {  # RFC 6749 §3.2: parameters the grant does not use are ignored
        "oneOf": [
            {
                "title": "password grant (login)",
                "type": "object",
                "required": ["username", "password"],
                "properties": {
                    "grant_type": {"const": "password", "default": "password"},
                    "username": LOGIN_NAME,
                    "password": LOGIN_PASSWORD,
                },
            },
            {
                "title": "refresh_token grant",
                "type": "object",
                "required": ["grant_type", "refresh_token"],
                "properties": {"grant_type": {"const": "refresh_token"}, "refresh_token": TOKEN_VALUE},
            },
        ],
    },
    "TokenParam": {"type": "object", "required": ["token"], "properties": {"token": TOKEN_VALUE}},
    "OAuthTokenForm": {
        "type": "object",
        "description": "RFC 6749 §4.3, §6, §4.4. Every parameter but `resource` at most once; an empty one is an "
        "absent one (§3.2); unknown ones are ignored. The client authenticates with HTTP Basic "
        "(client_secret_basic), with client_id and client_secret here (client_secret_post), names itself with "
        "client_id alone (a public client), or is absent (password and refresh_token grants, unless "
        "AUTH_PASSWORD_GRANT_REQUIRES_CLIENT)",
        "required": ["grant_type"],
        "properties": {
            "grant_type": {"enum": list(clients.GRANT_TYPES)},
            # each read by its own grant only, but never repeated
            "username": {"type": "string"},
            "password": {"type": "string"},
            "refresh_token": {"type": "string"},
            "scope": {**SCOPE, "description": "a subset of what the client (or, without one, a user) may have"},
            **CLIENT_FIELDS,
        },
        "allOf": [SECRET_NEEDS_ID],
        "oneOf": [
            {
                "title": "password grant",
                "required": ["grant_type", "username", "password"],
                "properties": {"grant_type": {"const": "password"}, "username": LOGIN_NAME, "password": LOGIN_PASSWORD},
            },
            {
                "title": "refresh_token grant",
                "required": ["grant_type", "refresh_token"],
                "properties": {"grant_type": {"const": "refresh_token"}, "refresh_token": TOKEN_VALUE},
            },
            {
                "title": "client_credentials grant (a confidential client)",
                "required": ["grant_type"],
                "properties": {
                    "grant_type": {"const": "client_credentials"},
                    "resource": {"anyOf": [RESOURCE, {"type": "array", "items": RESOURCE}]},
                },
            },
        ],
    },
    "OAuthToken": {
        "type": "object",
        "required": ["access_token", "token_type", "expires_in", "scope"],
        "dependentRequired": {"refresh_token": ["refresh_expires_in"]},
        "properties": {
            "access_token": {"type": "string", "description": "RFC 9068 JWT (typ at+jwt); verify with the JWKS"},
            "token_type": {"const": "bearer"},
            "expires_in": {"type": "integer"},
            "scope": {"type": "string"},
            "refresh_token": {"type": "string", "description": "password and refresh_token grants only"},
            "refresh_expires_in": {"type": "integer"},
        },
    },
    "OAuthTokenParam": {
        "type": "object",
        "description": "RFC 7009 §2.1, RFC 7662 §2.1: each parameter at most once; an empty one is an absent one; "
        "unknown ones are ignored. Client authentication as on the token endpoint",
        "required": ["token"],
        "properties": {
            "token": TOKEN_VALUE,
            "token_type_hint": {
                "type": "string", "examples": ["access_token", "refresh_token"],
                "description": "ignored, whatever its value (RFC 7009 §2.1 and RFC 7662 §2.1 allow that): a JWT "
                "is an access token, anything else is looked up as a refresh token",
            },
            **CLIENT_FIELDS,
        },
        "allOf": [SECRET_NEEDS_ID],
    },
    "Introspection": {
        "type": "object",
        "required": ["active"],
        "properties": {
            "active": {"type": "boolean"},
            "token_type": {"enum": ["access_token", "refresh_token"]},
            "sub": {"type": "string"},
            "username": {"type": "string"},
            "exp": {"type": "integer"},
            "iat": {"type": "integer"},
            "sid": {"type": "string"},
            "jti": {"type": "string"},
            "email_verified": {"type": "boolean"},
            "iss": {"type": "string"},
            "aud": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "scope": {"type": "string"},
            "client_id": {"type": "string"},
        },
    },
    "OAuthIntrospection": {
        "oneOf": [
            {
                "title": "anything expired, revoked, unknown, or of a disabled client",
                "type": "object",
                "required": ["active"],
                "properties": {"active": {"const": False}},
                "additionalProperties": False,
            },
            {
                "title": "a live token: a user's access token (with username, sid), a client's (sub is the client), "
                "or a refresh token (no aud, jti)",
                "type": "object",
                "required": ["active", "token_type", "scope", "client_id", "sub", "exp", "iat", "iss"],
                "properties": {
                    "active": {"const": True},
                    "token_type": {"enum": ["Bearer", "refresh_token"]},
                    "scope": {"type": "string"},
                    "client_id": {"type": "string", "description": "`direct`: a user's token without a client"},
                    "sub": {"type": "string"},
                    "username": {"type": "string"},
                    "exp": {"type": "integer"},
                    "iat": {"type": "integer"},
                    "sid": {"type": "string", "format": "uuid"},
                    "jti": {"type": "string"},
                    "email_verified": {"type": "boolean"},
                    "iss": {"type": "string"},
                    "aud": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                },
                "additionalProperties": False,
            },
        ],
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string"},
            "checks": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "JWKS": {"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array"}}},
    # -- the admin API (docs/admin.md) --
    "AdminUser": {
        "type": "object",
        "required": ["id", "username", "email", "is_active", "created_at", "updated_at"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "username": {"type": "string"},
            "email": {"type": "string", "format": "email"},
            "is_active": {"type": "boolean"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
        },
    },
    "Session": {
        "type": "object",
        "required": ["id", "created_at", "last_used_at", "expires_at", "client_id", "scope"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "created_at": {"type": "string", "format": "date-time"},
            "last_used_at": {"type": "string", "format": "date-time"},
            "expires_at": {"type": "string", "format": "date-time", "description": "absolute lifetime"},
            "client_id": {"type": ["string", "null"], "description": "the client it was granted to"},
            "scope": {"type": "string"},
            "client_ip": {"type": ["string", "null"]},
            "user_agent": {"type": ["string", "null"]},
        },
    },
    "Client": {
        "type": "object",
        "required": ["client_id", "name", "type", "grant_types", "scope", "audiences", "created_at"],
        "properties": {
            "client_id": {"type": "string"},
            "name": {"type": "string"},
            "type": {"enum": ["confidential", "public"]},
            "grant_types": {"type": "array", "items": {"type": "string"}},
            "scope": {"type": "string"},
            "audiences": {"type": "array", "items": {"type": "string"}},
            "access_token_ttl": {"type": ["integer", "null"]},
            "created_at": {"type": "string", "format": "date-time"},
            "disabled_at": {"type": ["string", "null"], "format": "date-time"},
            "client_secret": {
                "type": ["string", "null"],
                "description": "only in the answer to a registration or a rotation: it is never shown again",
            },
            "previous_secret_valid_until": {"type": "string", "format": "date-time", "description": "rotation"},
        },
    },
    "AuditEvent": {
        "type": "object",
        "required": ["id", "occurred_at", "type", "actor", "details"],
        "properties": {
            "id": {"type": "integer"},
            "occurred_at": {"type": "string", "format": "date-time"},
            "type": {"enum": list(audit.TYPES)},
            "actor": {
                "type": "object",
                "properties": {"type": {"enum": ["user", "client", "cli", "anonymous"]},
                               "id": {"type": ["string", "null"]}},
            },
            "subject": {
                "type": ["object", "null"],
                "properties": {"type": {"enum": ["user", "session", "client"]}, "id": {"type": "string"}},
            },
            "user_id": {"type": ["string", "null"], "format": "uuid"},
            "client_id": {"type": ["string", "null"]},
            "client_ip": {"type": ["string", "null"]},
            "user_agent": {"type": ["string", "null"]},
            "request_id": {"type": ["string", "null"]},
            "trace_id": {"type": ["string", "null"]},
            "details": {"type": "object", "description": "small, never a secret or personal data"},
        },
    },
    **{
        f"{name}Page": {
            "type": "object",
            "required": [field, "next_cursor"],
            "properties": {
                field: {"type": "array", "items": _ref(name)},
                "next_cursor": {
                    "type": ["string", "null"],
                    "description": "pass as `cursor` for the next page; null on the last page",
                },
            },
        }
        for name, field in (("AdminUser", "users"), ("Session", "sessions"), ("Client", "clients"),
                            ("AuditEvent", "events"))
    },
    "ServerMetadata": {
        "type": "object",
        "description": "RFC 8414 authorization server metadata; every URL is absolute, under the issuer",
        "required": ["issuer", "token_endpoint", "jwks_uri", "response_types_supported"],
        "properties": {
            "issuer": {"type": "string", "format": "uri"},
            "token_endpoint": {"type": "string", "format": "uri"},
            "jwks_uri": {"type": "string", "format": "uri"},
            "revocation_endpoint": {"type": "string", "format": "uri"},
            "introspection_endpoint": {"type": "string", "format": "uri"},
            "grant_types_supported": {"type": "array", "items": {"type": "string"}},
            "response_types_supported": {"type": "array", "items": {"type": "string"}},
            "token_endpoint_auth_methods_supported": {"type": "array", "items": {"type": "string"}},
            "scopes_supported": {"type": "array", "items": {"type": "string"}},
        },
    },
}

FORM = "application/x-www-form-urlencoded"
ADMIN: list[dict[str, list[str]]] = [{"adminClient": ["admin"]}]
ADMIN_ERRORS = {
    "401": UNAUTHORIZED,
    "403": _error("insufficient_scope: a user's token, or a client token without the admin scope"),
}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


PAGE = [
    _query("limit", f"page size, 1 to {admin.MAX_LIMIT} (default {admin.DEFAULT_LIMIT})", {"type": "integer"}),
    _query("cursor", "`next_cursor` of the previous page, with the same filters"),
]
BAD_QUERY = {"400": _error("invalid_cursor"), "422": _error("unknown, repeated or malformed query parameter")}


def _admin(summary: str, responses: dict[str, Any], *, parameters: list[dict[str, Any]] | None = None,
           body: str | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "security": ADMIN, "responses": {**responses, **ADMIN_ERRORS}}
    if parameters:
        operation["parameters"] = parameters
    if body:
        operation["requestBody"] = _body(body)
        operation["responses"].update({"415": _error("not JSON"), "422": INVALID})
    return operation


NOT_FOUND = _error("no such user (or session, or client)")
USER_ID = [_path("user_id")]

ADMIN_PATHS: dict[str, Any] = {
    "/admin/v1/users": {"get": _admin(
        "Find users by username or email prefix (any case), by lowered username", {
            "200": _json("a page of users", "AdminUserPage"), **BAD_QUERY},
        parameters=[_query("q", "a username or email prefix"),
                    _query("active", "true or false", {"type": "boolean"}), *PAGE],
    )},
    "/admin/v1/users/{user_id}": {
        "get": _admin("A user", {"200": _json("the user", "AdminUser"), "404": NOT_FOUND}, parameters=USER_ID),
        "patch": _admin(
            "Change is_active and/or email; disabling ends every session at once", {
                "200": _json("the user as changed", "AdminUser"), "404": NOT_FOUND,
                "409": _error("email taken")},
            parameters=USER_ID, body="UserPatch",
        ),
        "delete": _admin(
            "Erase the account, its sessions and tokens; the username and email become free", {
                "204": {"description": "erased"}, "404": NOT_FOUND},
            parameters=USER_ID,
        ),
    },
    "/admin/v1/users/{user_id}/password-reset": {"post": _admin(
        "Start a password reset for the user (a mail, with the lifecycle flows); answers nothing more",
        {"202": {"description": "accepted"}, "404": NOT_FOUND}, parameters=USER_ID,
    )},
    "/admin/v1/users/{user_id}/sessions": {
        "get": _admin("The user's live sessions, newest first", {
            "200": _json("a page of sessions", "SessionPage"), "404": NOT_FOUND, **BAD_QUERY},
            parameters=[*USER_ID, *PAGE]),
        "delete": _admin("End every session of the user", {"204": {"description": "ended"}, "404": NOT_FOUND},
                         parameters=USER_ID),
    },
    "/admin/v1/users/{user_id}/sessions/{session_id}": {"delete": _admin(
        "End one session of the user (idempotent)", {"204": {"description": "ended"}, "404": NOT_FOUND},
        parameters=[*USER_ID, _path("session_id")],
    )},
    "/admin/v1/clients": {
        "get": _admin("Registered clients, in registration order", {
            "200": _json("a page of clients", "ClientPage"), **BAD_QUERY}, parameters=PAGE),
        "post": _admin("Register a client; its secret is in this answer only", {
            "201": _json("the client and its secret", "Client")}, body="NewClient"),
    },
    "/admin/v1/clients/{client_id}": {
        "get": _admin("A registered client (never its secret)", {"200": _json("the client", "Client"),
                                                                  "404": NOT_FOUND},
                      parameters=[_path("client_id")]),
        "patch": _admin(
            "Change the registration and/or rotate the secret (the new one is in this answer only)", {
                "200": _json("the client", "Client"), "404": NOT_FOUND,
                "409": _error("the client is disabled, or public (no secret to rotate)")},
            parameters=[_path("client_id")], body="ClientPatch",
        ),
        "delete": _admin("Disable the client and end its sessions (idempotent; the id is never reused)", {
            "204": {"description": "disabled"}, "404": NOT_FOUND}, parameters=[_path("client_id")]),
    },
    "/admin/v1/audit": {"get": _admin(
        "Audit events, newest first", {"200": _json("a page of events", "AuditEventPage"), **BAD_QUERY},
        parameters=[
            _query("user_id", "events about this user", {"type": "string", "format": "uuid"}),
            _query("client_id", "events of this client (or about it, for client.* events)"),
            _query("type", "one event type", {"enum": list(audit.TYPES)}),
            _query("since", "ISO 8601 time with a zone, inclusive", {"type": "string", "format": "date-time"}),
            _query("until", "ISO 8601 time with a zone, exclusive", {"type": "string", "format": "date-time"}),
            *PAGE,
        ],
    )},
}

PATHS: dict[str, Any] = {
    "/": {"get": {"summary": "Service index", "responses": {"200": {"description": "name, version, links"}}}},
    "/api/v1/auth/register": {
        "post": {
            "operationId": "register",
            "summary": "Create a user",
            "requestBody": _body("Register"),
            "responses": {
                "201": {**_json("created", "User"), "links": {**LOGIN, **OAUTH_LOGIN}},
                "202": _json("AUTH_REGISTRATION_ENUMERATION_SAFE: accepted, the outcome is mailed", "Accepted"),
                "408": TIMED_OUT,
                "409": _error("username or email taken"),
                "413": TOO_LARGE,
                "415": NOT_JSON,
                "422": INVALID,
                "429": LIMITED,
                "503": UNAVAILABLE,
            },
        }
    },
    "/api/v1/auth/token": {
        "post": {
            "operationId": "token",
            "summary": "OAuth2 token endpoint: password grant (login) or refresh_token grant",
            "requestBody": _body("TokenForm", FORM),
            "responses": {
                "200": {**_json("a new token pair", "TokenPair"), "links": WITH_PAIR},
                "401": {**_error("Incorrect username or password; or an invalid refresh token"), "headers": CHALLENGE},
                "403": _error("email_not_verified (AUTH_REQUIRE_VERIFIED_EMAIL), only after the right password"),
                "408": TIMED_OUT,
                "413": TOO_LARGE,
                "415": NOT_FORM,
                "422": INVALID,
                "429": LIMITED,
                "503": UNAVAILABLE,
            },
        }
    },
    "/api/v1/auth/refresh": {
        "post": {
            "operationId": "refresh",
            "summary": "Rotate a refresh token; reuse of a used one revokes its whole session",
            "requestBody": _body("RefreshRequest"),
            "responses": {
                "200": {**_json("a new token pair", "TokenPair"), "links": WITH_PAIR},
                "401": {**_error("unknown, expired, revoked or reused refresh token"), "headers": CHALLENGE},
                "408": TIMED_OUT,
                "413": TOO_LARGE,
                "415": NOT_JSON,
                "422": INVALID,
                "429": LIMITED,
                "503": UNAVAILABLE,
            },
        }
    },
    "/api/v1/auth/revoke": {
        "post": {
            "operationId": "revoke",
            "summary": "End the session a token belongs to (RFC 7009; idempotent)",
            "requestBody": {
                "required": True,
                "description": f"JSON, or {FORM_LIMIT}",
                "content": {
                    "application/json": {"schema": _ref("RefreshRequest")},
                    FORM: {"schema": _ref("TokenParam")},
                },
            },
            "responses": {
                "204": {"description": "revoked, or nothing to revoke"},
                "408": TIMED_OUT,
                "413": TOO_LARGE,
                "415": _error("neither JSON nor a form"),
                "422": INVALID,
                "429": LIMITED,
                "503": UNAVAILABLE,
            },
        }
    },
    "/api/v1/auth/logout-all": {
        "post": {
            "summary": "End every session of the caller",
            "security": BEARER,
            "responses": {
                "204": {"description": "all sessions ended"},
                "401": UNAUTHORIZED,
                "429": LIMITED,
                "503": UNAVAILABLE,
            },
        }
    },
    "/api/v1/auth/me": {
        "get": {
            "summary": "The caller",
            "security": BEARER,
            "responses": {
                "200": _json("the user", "User"),
                "401": UNAUTHORIZED,
                "429": LIMITED,
                "503": UNAVAILABLE,
            },
        }
    },
    "/api/v1/auth/introspect": {
        "post": {
            "operationId": "introspect",
            "summary": "RFC 7662 token introspection for resource servers",
            "security": [{"introspectionBasic": []}, {"introspectionBearer": []}],
            "requestBody": _body("TokenParam", FORM),
            "responses": {
                "200": _json("token state", "Introspection"),
                "401": {**_error("caller without the introspection secret"), "headers": CHALLENGE},
                "408": TIMED_OUT,
                "413": TOO_LARGE,
                "415": NOT_FORM,
                "422": INVALID,
                "429": LIMITED,
                "503": UNAVAILABLE,
            },
        }
    },
    "/oauth2/token": {
        "post": {
            "operationId": "oauth2-token",
            "summary": "OAuth 2.0 token endpoint (RFC 6749): password, refresh_token, client_credentials",
            "security": CLIENT_AUTH,
            "requestBody": _body("OAuthTokenForm", FORM),
            "responses": {
                "200": {**_json("tokens", "OAuthToken"), "links": WITH_OAUTH_PAIR},
                "400": _error("RFC 6749 §5.2: invalid_request (also for a body that is not a form), invalid_grant "
                              "(a wrong password; an unknown, expired, reused or another client's refresh token), "
                              "unsupported_grant_type, invalid_scope, unauthorized_client; RFC 8707 invalid_target"),
                **OAUTH_ERRORS,
            },
        }
    },
    "/oauth2/revoke": {
        "post": {
            "operationId": "oauth2-revoke",
            "summary": "RFC 7009 revocation: ends the session of a refresh or user access token",
            "security": CLIENT_AUTH,
            "requestBody": _body("OAuthTokenParam", FORM),
            "responses": {
                "200": {"description": "revoked, or nothing to revoke (an unknown token is not an error)"},
                "400": _error("invalid_request (also for a body that is not a form); unauthorized_client for "
                              "another client's token"),
                **OAUTH_ERRORS,
            },
        }
    },
    "/oauth2/introspect": {
        "post": {
            "operationId": "oauth2-introspect",
            "summary": "RFC 7662 introspection, for confidential clients (Basic, or client_secret_post in the form)",
            "security": CLIENT_AUTH,
            "requestBody": _body("OAuthTokenParam", FORM),
            "responses": {
                "200": _json("token state", "OAuthIntrospection"),
                "400": _error("invalid_request (also for a body that is not a form)"),
                **OAUTH_ERRORS,
            },
        }
    },
    "/api/v1/auth/password": {
        "post": {
            "summary": "Change the caller's password; every other session of theirs ends",
            "security": BEARER,
            "requestBody": _body("PasswordChange"),
            "responses": {
                "204": {"description": "changed; the calling session stays, every other one is ended"},
                "401": UNAUTHORIZED,
                "403": _error("wrong_password: the current password is incorrect"),
                "409": _error("the password was changed meanwhile"),
                "415": _error("not JSON"),
                "422": _error("invalid body, or weak_password: too short, too common or breached"),
                "429": LIMITED,
                "503": _error("overloaded, or the breach check is unavailable (fail-closed); see Retry-After"),
            },
        }
    },
    "/api/v1/auth/password-reset": {
        "post": {
            "summary": "Mail a reset link: one answer, in one time, whether or not the address has an account",
            "requestBody": _body("PasswordResetRequest"),
            "responses": {
                "202": _json("accepted", "Accepted"),
                "415": _error("not JSON"),
                "422": INVALID,
                "429": LIMITED,
            },
        }
    },
    "/api/v1/auth/password-reset/confirm": {
        "post": {
            "summary": "Set a new password with the token from a reset link; every session of the user ends",
            "requestBody": _body("PasswordResetConfirm"),
            "responses": {
                "204": {"description": "the password is set"},
                "404": _error("invalid_token: unknown, used, expired or superseded by a newer link"),
                "415": _error("not JSON"),
                "422": _error("invalid body, or weak_password"),
                "429": LIMITED,
                "503": _error("overloaded, or the breach check is unavailable (fail-closed); see Retry-After"),
            },
        }
    },
    "/api/v1/auth/verify-email": {
        "post": {
            "summary": "Confirm the email address with the token from a verification link",
            "requestBody": _body("VerifyEmail"),
            "responses": {
                "204": {"description": "confirmed"},
                "404": _error("invalid_token: unknown, used, expired, superseded, or the address changed"),
                "415": _error("not JSON"),
                "422": INVALID,
                "429": LIMITED,
            },
        }
    },
    "/api/v1/auth/verify-email/resend": {
        "post": {
            "summary": "Mail a new verification link to the caller (older links stop working)",
            "security": BEARER,
            "responses": {"202": _json("accepted", "Accepted"), "401": UNAUTHORIZED, "429": LIMITED},
        }
    },
    "/api/v1/auth/sessions": {
        "get": {
            "summary": "The caller's active sessions",
            "security": BEARER,
            "responses": {"200": _json("sessions, most recently used first", "Sessions"), "401": UNAUTHORIZED},
        }
    },
    "/api/v1/auth/sessions/{session_id}": {
        "delete": {
            "summary": "End one of the caller's own sessions (idempotent)",
            "security": BEARER,
            "parameters": [
                {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
            ],
            "responses": {
                "204": {"description": "ended (or already ended)"},
                "401": UNAUTHORIZED,
                "404": _error("no session of the caller has this id"),
            },
        }
    },
    "/account/reset-password": {
        "get": {
            "summary": "The page the default reset link opens (token in the URL fragment)",
            "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}},
        }
    },
    "/account/verify-email": {
        "get": {
            "summary": "The page the default verification link opens (token in the URL fragment)",
            "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}},
        }
    },
    "/.well-known/jwks.json": {
        "get": {"summary": "Every accepted signing key", "responses": {"200": _json("JWKS", "JWKS")}}
    },
    "/.well-known/oauth-authorization-server": {
        "get": {"summary": "RFC 8414 discovery", "responses": {"200": _json("metadata", "ServerMetadata")}}
    },
    "/.well-known/openid-configuration": {
        "get": {
            "summary": "OpenID Connect Discovery (the fields that apply)",
            "responses": {"200": _json("metadata", "ServerMetadata")},
        }
    },
    "/health/liveness": {"get": {"responses": {"200": _json("alive", "Health")}}},
    "/health/readiness": {
        "get": {"responses": {"200": _json("ready", "Health"), "503": _json("a check failed", "Health")}}
    },
    "/health/startup": {"get": {"responses": {"200": _json("started", "Health")}}},
    "/openapi.json": {"get": {"responses": {"200": {"description": "this document"}}}},
    **ADMIN_PATHS,
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics (text exposition format); keep it off the public ingress",
            "responses": {"200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}},
        }
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "authsvc",
        "version": __version__,
        "description": "Authentication service and OAuth 2.0 authorization server (docs/oauth.md). "
        "Errors are JSON {error, error_description, detail}; any route may also answer "
        "404/405 for a wrong path or method, and 500 `internal_error` for a bug.",
    },
    "paths": PATHS,
    "components": {
        "schemas": COMPONENTS,
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "introspectionBasic": {"type": "http", "scheme": "basic"},
            "clientBasic": {
                "type": "http", "scheme": "basic",
                "description": "client_secret_basic: base64(urlencode(client_id):urlencode(client_secret)). "
                "OpenAPI has no scheme for credentials in a form body: without this header a client sends "
                "client_id and client_secret in the form (client_secret_post) or client_id alone (public)",
            },
            "oauth2": {
                "type": "oauth2",
                "description": "the flows /oauth2/token serves; their access tokens are the `bearer` JWTs. Scopes "
                "are AUTH_USER_SCOPES for users and each client's registered scopes",
                "flows": {
                    "password": {"tokenUrl": "/oauth2/token", "refreshUrl": "/oauth2/token", "scopes": {}},
                    "clientCredentials": {"tokenUrl": "/oauth2/token", "scopes": {}},
                },
            },
            "introspectionBearer": {"type": "http", "scheme": "bearer"},
            "adminClient": {
                "type": "oauth2",
                "description": "a client-credentials access token with the admin scope (docs/admin.md)",
                "flows": {"clientCredentials": {"tokenUrl": "/oauth2/token",
                                                "scopes": {"admin": "the admin API"}}},
            },
        },
    },
}
