"""Registered OAuth 2.0 clients: registration, authentication (RFC 6749 §2.3), and what a client may be granted.

A client authenticates with ``client_secret_basic`` (``Authorization: Basic``, each part form-urlencoded
first, RFC 6749 §2.3.1) or ``client_secret_post`` (``client_id`` and ``client_secret`` in the form); a
public client names itself with ``client_id`` alone (``none``). Secrets are 256 random bits shown once at
registration; only their SHA-256 is stored and compared, with ``hmac.compare_digest``. An unknown client,
a wrong secret and a disabled client get one answer (401 ``invalid_client``) after the same work.

Two built-in clients come from settings rather than the table: the bootstrap client
(``AUTH_BOOTSTRAP_CLIENT_*``: client credentials with the admin scope, for the operator and admin tasks)
and the deprecated introspection client (``AUTH_INTROSPECTION_CLIENT_ID``/``_SECRET``: introspection only).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import secrets
import urllib.parse
from base64 import b64decode
from binascii import Error as Base64Error
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from starlette.datastructures import FormData

from service import audit, errors
from service.config import SCOPE_TOKEN, Settings
from service.db import clients as queries
from service.db import models
from service.ratelimit import Limiter

PASSWORD, REFRESH, CLIENT_CREDENTIALS = "password", "refresh_token", "client_credentials"
GRANT_TYPES = (PASSWORD, REFRESH, CLIENT_CREDENTIALS)
SECRET_BYTES = 32
_DUMMY = hashlib.sha256(b"no such client").digest()  # compared against when there is nothing to compare


@dataclasses.dataclass(frozen=True)
class Client:
    id: str
    name: str
    confidential: bool
    grant_types: frozenset[str]
    scopes: frozenset[str]
    audiences: tuple[str, ...]
    access_token_ttl: int | None = None
    created_at: dt.datetime | None = None
    disabled_at: dt.datetime | None = None
    builtin: bool = False

    @classmethod
    def from_row(cls, row: models.Client) -> Client:
        return cls(
            id=row.id, name=row.name, confidential=row.confidential, grant_types=frozenset(row.grant_types),
            scopes=frozenset(row.scopes), audiences=tuple(row.audiences), access_token_ttl=row.access_token_ttl,
            created_at=row.created_at, disabled_at=row.disabled_at,
        )

    def shape(self) -> dict[str, Any]:
        """What ``authsvc clients list`` prints: everything but the secret, which is never kept."""
        return {
            "client_id": self.id,
            "name": self.name,
            "type": "confidential" if self.confidential else "public",
            "grant_types": sorted(self.grant_types),
            "scope": " ".join(sorted(self.scopes)),
            "audiences": list(self.audiences),
            "access_token_ttl": self.access_token_ttl,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "disabled_at": self.disabled_at.isoformat() if self.disabled_at else None,
        }


@dataclasses.dataclass(frozen=True)
class Grant:
    """What a token request is granted: to which client (None: no registered client), which scope, how long."""

    client: Client | None
    scope: frozenset[str]
    access_ttl: int

    @property
    def client_id(self) -> str | None:
        return self.client.id if self.client else None


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def new_secret() -> tuple[str, bytes]:
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return secret, digest(secret)


# -- registration (the CLI and the admin API) --------------------------------------------------------


def check_registration(
    *, name: str, grant_types: list[str], scopes: frozenset[str], audiences: list[str], confidential: bool,
    access_token_ttl: int | None,
) -> None:
    if not 1 <= len(name) <= 100:
        raise errors.InvalidRequest("the name must be 1 to 100 characters")
    unknown = set(grant_types) - set(GRANT_TYPES)
    if not grant_types or unknown:
        raise errors.InvalidRequest(f"grant types must be some of {', '.join(GRANT_TYPES)}")
    if not confidential and CLIENT_CREDENTIALS in grant_types:
        raise errors.InvalidRequest("a public client cannot use client_credentials (RFC 6749 section 4.4)")
    if not all(SCOPE_TOKEN.match(scope) for scope in scopes):
        raise errors.InvalidRequest('scopes are printable ASCII without spaces, " or \\')
    if any(not audience or len(audience) > 512 or any(c.isspace() for c in audience) for audience in audiences):
        raise errors.InvalidRequest("an audience is a non-empty string without spaces, at most 512 characters")
    if access_token_ttl is not None and not 30 <= access_token_ttl <= 86400:
        raise errors.InvalidRequest("the token lifetime must be 30 to 86400 seconds")


async def register(
    sessions: async_sessionmaker[Any], *, name: str, grant_types: list[str], scopes: frozenset[str],
    audiences: list[str], confidential: bool, access_token_ttl: int | None, now: dt.datetime,
    actor: audit.Actor, request: audit.Origin | None = None,
) -> tuple[Client, str | None]:
    """A new client and its secret (None for a public client): the only time the secret is seen."""
    check_registration(name=name, grant_types=grant_types, scopes=scopes, audiences=audiences,
                       confidential=confidential, access_token_ttl=access_token_ttl)
    secret, hashed = new_secret() if confidential else (None, None)
    async with sessions.begin() as db:
        row = await queries.create(
            db, client_id=secrets.token_urlsafe(16), name=name, confidential=confidential, secret_hash=hashed,
            grant_types=sorted(set(grant_types)), scopes=sorted(scopes), audiences=list(dict.fromkeys(audiences)),
            access_token_ttl=access_token_ttl, now=now,
        )
        client = Client.from_row(row)
        await audit.record(db, audit.CLIENT_CREATED, actor=actor, subject=audit.Subject.client(client.id),
                           request=request, now=now, details={"grant_types": sorted(client.grant_types)})
    return client, secret


async def every(sessions: async_sessionmaker[Any]) -> list[Client]:
    async with sessions() as db:
        return [Client.from_row(row) for row in await queries.every(db)]


async def update(
    sessions: async_sessionmaker[Any], client_id: str, changes: dict[str, Any], now: dt.datetime,
    actor: audit.Actor, request: audit.Origin | None = None,
) -> Client | None:
    """Change some of name, grant_types, scopes, audiences, access_token_ttl of an enabled client; None when
    there is no such client. Sessions granted before keep their scope until they end (docs/admin.md)."""
    async with sessions.begin() as db:
        row = await queries.by_id(db, client_id)
        if row is None or row.disabled_at is not None:
            return None
        merged = {
            "name": row.name, "grant_types": list(row.grant_types), "scopes": frozenset(row.scopes),
            "audiences": list(row.audiences), "access_token_ttl": row.access_token_ttl, **changes,
        }
        check_registration(confidential=row.confidential, **merged)
        values = {
            **merged, "grant_types": sorted(set(merged["grant_types"])), "scopes": sorted(merged["scopes"]),
            "audiences": list(dict.fromkeys(merged["audiences"])),
        }
        await queries.update_client(db, client_id, {key: values[key] for key in changes})
        await audit.record(db, audit.CLIENT_UPDATED, actor=actor, subject=audit.Subject.client(client_id),
                           request=request, now=now, details={"fields": sorted(changes)})
        await db.refresh(row)
        return Client.from_row(row)


async def disable(
    sessions: async_sessionmaker[Any], client_id: str, now: dt.datetime, actor: audit.Actor,
    request: audit.Origin | None = None,
) -> bool:
    """Refuse the client from now on and end every session granted to it; False when there is no such client."""
    async with sessions.begin() as db:
        row = await queries.by_id(db, client_id)
        if row is None:
            return False
        if row.disabled_at is None:
            await queries.disable(db, client_id, now)
            await audit.record(db, audit.CLIENT_DISABLED, actor=actor, subject=audit.Subject.client(client_id),
                               request=request, now=now)
        return True


async def rotate_secret(
    sessions: async_sessionmaker[Any], client_id: str, keep_previous: int, now: dt.datetime, actor: audit.Actor,
    request: audit.Origin | None = None,
) -> str | None:
    """A new secret; the current one stays valid ``keep_previous`` seconds so callers can switch over."""
    secret, hashed = new_secret()
    async with sessions.begin() as db:
        rotated = await queries.rotate_secret(db, client_id, hashed, now + dt.timedelta(seconds=keep_previous))
        if rotated:
            await audit.record(db, audit.CLIENT_SECRET_ROTATED, actor=actor, subject=audit.Subject.client(client_id),
                               request=request, now=now, details={"keep_previous_seconds": keep_previous})
    return secret if rotated else None


# -- authentication ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Credentials:
    client_id: str
    secret: str | None  # None: a public client naming itself
    method: str  # client_secret_basic | client_secret_post | none


def credentials(authorization: str | None, form: FormData) -> Credentials | None:
    """The client credentials of a request, or None when it carries none."""
    posted_id, posted_secret = _one(form, "client_id"), _one(form, "client_secret")
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() == "basic":
        if posted_secret is not None:
            raise errors.InvalidRequest("use one client authentication method, not Basic and client_secret both")
        try:
            username, colon, password = b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (Base64Error, UnicodeDecodeError, ValueError):
            raise errors.InvalidClient("malformed Basic credentials") from None
        client_id, secret = urllib.parse.unquote_plus(username), urllib.parse.unquote_plus(password)
        if not colon or not client_id or (posted_id is not None and posted_id != client_id):
            raise errors.InvalidClient()
        return Credentials(client_id, secret, "client_secret_basic")
    if posted_id is None:
        if posted_secret is not None:
            raise errors.InvalidRequest("client_secret without client_id")
        return None
    if posted_secret is None:
        return Credentials(posted_id, None, "none")
    return Credentials(posted_id, posted_secret, "client_secret_post")


def _one(form: FormData, name: str) -> str | None:
    values = form.getlist(name)
    if len(values) > 1:
        raise errors.InvalidRequest(f"form field `{name}` is given more than once")
    value = values[0] if values else None
    if not isinstance(value, str) or value == "":  # RFC 6749 §3.2: an empty parameter is an absent one
        return None
    if len(value) > 512:
        raise errors.InvalidClient()
    return value


async def authenticate(
    settings: Settings, sessions: async_sessionmaker[Any], limiter: Limiter, authorization: str | None,
    form: FormData, now: dt.datetime, *, budget: str | None = "client",
) -> Client | None:
    """The authenticated client, None when the request names none; InvalidClient when it fails."""
    given = credentials(authorization, form)
    if given is None:
        return None
    if budget:
        await limiter.hit(budget, given.client_id)
    client, hashes = builtin(settings, given.client_id)
    if client is None:
        async with sessions() as db:  # the primary: a client registered a moment ago must work
            row = await queries.by_id(db, given.client_id)
        if row is not None:
            client = Client.from_row(row)
            hashes = [h for h in (row.secret_hash,) if h is not None]
            if row.previous_secret_hash is not None and row.previous_secret_expires_at is not None \
                    and row.previous_secret_expires_at > now:
                hashes.append(row.previous_secret_hash)
    presented = digest(given.secret) if given.secret is not None else _DUMMY
    matched = False
    for expected in hashes or [_DUMMY]:  # always compare something: unknown ids cost the same
        matched |= hmac.compare_digest(presented, expected)
    if client is None or client.disabled_at is not None:
        raise errors.InvalidClient()
    if client.confidential and (given.secret is None or not matched):
        raise errors.InvalidClient()
    if not client.confidential and given.secret is not None:
        raise errors.InvalidClient()  # a public client has no secret to present
    return client


def builtin(settings: Settings, client_id: str) -> tuple[Client | None, list[bytes]]:
    """The built-in client of that id, if its secret is configured, and the digest of that secret."""
    if settings.bootstrap_client_secret is not None and client_id == settings.bootstrap_client_id:
        client = Client(
            id=client_id, name="bootstrap", confidential=True, grant_types=frozenset({CLIENT_CREDENTIALS}),
            scopes=settings.bootstrap_client_scopes, audiences=(), builtin=True,
        )
        return client, [digest(str(settings.bootstrap_client_secret))]
    if settings.introspection_secret is not None and client_id == settings.introspection_client_id:
        client = Client(
            id=client_id, name="introspection (AUTH_INTROSPECTION_SECRET, deprecated)", confidential=True,
            grant_types=frozenset(), scopes=frozenset(), audiences=(), builtin=True,
        )
        return client, [digest(str(settings.introspection_secret))]
    return None, []


async def active(settings: Settings, sessions: async_sessionmaker[Any], client_id: str) -> bool:
    """Is this client still allowed tokens? For introspecting a client-credentials token."""
    if builtin(settings, client_id)[0] is not None:
        return True
    async with sessions() as db:
        row = await queries.by_id(db, client_id)
    return row is not None and row.disabled_at is None


def may_introspect(client: Client | None) -> bool:
    """RFC 7662 §2.1: the caller must be authorized; every confidential client (a resource server) is."""
    return client is not None and client.confidential


# -- what a client may be granted -------------------------------------------------------------------


def parse_scope(raw: str | None) -> frozenset[str] | None:
    """RFC 6749 §3.3: space-delimited scope tokens; None when the request names none."""
    if raw is None or not raw.strip(" "):
        return None
    found = frozenset(raw.split(" ")) - {""}
    if not all(SCOPE_TOKEN.match(scope) for scope in found):
        raise errors.InvalidScope("scope must be space-separated scope tokens (RFC 6749 section 3.3)")
    return found


def choose_scope(requested: frozenset[str] | None, allowed: frozenset[str], default: frozenset[str]) -> frozenset[str]:
    if requested is None:
        return default & allowed
    refused = requested - allowed
    if refused:
        raise errors.InvalidScope(f"scope not allowed: {' '.join(sorted(refused))}")
    return requested


def require_grant(client: Client, grant_type: str) -> None:
    if grant_type not in client.grant_types:
        raise errors.UnauthorizedClient(f"this client may not use the {grant_type} grant")


def password_grant(settings: Settings, client: Client | None, requested: frozenset[str] | None) -> Grant:
    """Resource owner password credentials (RFC 6749 §4.3), with or without a registered client."""
    if client is None:
        if settings.password_grant_requires_client:
            raise errors.InvalidClient("this server requires client authentication for the password grant")
        return Grant(None, choose_scope(requested, settings.user_scopes, settings.default_scopes),
                     settings.access_token_ttl)
    require_grant(client, PASSWORD)
    return Grant(client, choose_scope(requested, client.scopes, client.scopes),
                 client.access_token_ttl or settings.access_token_ttl)


def refresh_grant(
    settings: Settings, client: Client | None, session_client_id: str | None, session_scope: frozenset[str],
    requested: frozenset[str] | None,
) -> Grant:
    """RFC 6749 §6: the refresh token must have been issued to this client; the scope may only narrow."""
    if (client.id if client else None) != session_client_id:
        raise errors.InvalidGrant("The refresh token was issued to another client")
    if client is not None:
        require_grant(client, REFRESH)
    scope = choose_scope(requested, session_scope, session_scope)
    ttl = (client.access_token_ttl if client else None) or settings.access_token_ttl
    return Grant(client, scope, ttl)


def required(client: Client | None, grant_type: str) -> Client:
    if client is None:
        raise errors.InvalidClient(f"client authentication is required for the {grant_type} grant")
    return client


def client_credentials_grant(
    settings: Settings, client: Client, requested: frozenset[str] | None, resources: tuple[str, ...]
) -> tuple[Grant, tuple[str, ...]]:
    """RFC 6749 §4.4: the client acts for itself; the audiences from its own list or RFC 8707 ``resource``."""
    if not client.confidential:
        raise errors.UnauthorizedClient("a public client may not use the client_credentials grant")
    require_grant(client, CLIENT_CREDENTIALS)
    scope = choose_scope(requested, client.scopes, client.scopes)  # none asked: all it may have
    allowed = client.audiences or (settings.jwt_audience,)
    refused = [resource for resource in resources if resource not in allowed]
    if refused:
        raise errors.InvalidTarget(f"resource not allowed for this client: {' '.join(refused)}")
    audiences = tuple(dict.fromkeys(resources)) or allowed
    return Grant(client, scope, client.access_token_ttl or settings.client_token_ttl), audiences
