"""Access tokens (JWT) and refresh tokens. Pure: every function takes ``now``, none reads a clock.

Access tokens are EdDSA JWTs with ``kid``, shaped per RFC 9068 (header ``typ: at+jwt``; claims
``iss``, ``sub``, ``aud``, ``client_id``, ``scope``, ``jti``, ``iat``, ``exp``). A user's token has the
user id as ``sub`` and a ``sid``; a client-credentials token has ``sub`` = ``client_id`` and no ``sid``.
Verification pins the algorithm to the key named by the ``kid``, and the issuer and audience to
ours. Refresh tokens are 32 random bytes, base64url; only their SHA-256 is stored.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import secrets
import uuid
from typing import Any

import jwt
from cachetools import LRUCache

from service import errors
from service.keys import KeySet

REQUIRED_CLAIMS = ["exp", "iat", "sub", "sid", "jti", "iss", "aud"]
ANY_TOKEN_CLAIMS = ["exp", "iat", "sub", "jti", "iss", "aud", "client_id"]
TYPE = "at+jwt"  # RFC 9068 §2.1
NO_CLIENT = "direct"  # the client_id of user tokens obtained without a registered client
CLOCK_SKEW = 30  # seconds an `iat` may lie ahead of the verifier's clock (replicas' clocks differ a little)


@dataclasses.dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    session_id: uuid.UUID
    username: str
    issued_at: int
    expires_at: int
    jti: str
    raw: dict[str, Any]


def issue_access(
    keys: KeySet, *, user_id: uuid.UUID, username: str, session_id: uuid.UUID,
    issuer: str, audience: str, ttl: int, now: dt.datetime,
    client_id: str = NO_CLIENT, scope: frozenset[str] = frozenset(),
) -> str:
    """A user's access token (password or refresh grant)."""
    return _sign(keys, {
        "iss": issuer, "sub": str(user_id), "aud": audience, "client_id": client_id, "scope": scope_text(scope),
        "username": username, "sid": str(session_id), **_times(now, ttl),
    })


def issue_client_access(
    keys: KeySet, *, client_id: str, audiences: tuple[str, ...], scope: frozenset[str],
    issuer: str, ttl: int, now: dt.datetime,
) -> str:
    """A client-credentials token (RFC 6749 §4.4): the client acts for itself, so sub = client_id."""
    audience: str | list[str] = audiences[0] if len(audiences) == 1 else list(audiences)
    return _sign(keys, {
        "iss": issuer, "sub": client_id, "aud": audience, "client_id": client_id, "scope": scope_text(scope),
        **_times(now, ttl),
    })


def scope_text(scope: frozenset[str]) -> str:
    return " ".join(sorted(scope))


def _times(now: dt.datetime, ttl: int) -> dict[str, Any]:
    issued = int(now.timestamp())
    return {"jti": uuid.uuid4().hex, "iat": issued, "exp": issued + ttl}


def _sign(keys: KeySet, claims: dict[str, Any]) -> str:
    signer = keys.signing
    if signer.private is None:
        raise ValueError(f"key {signer.kid} has no private part")
    return jwt.encode(
        claims, signer.private, algorithm=signer.algorithm, headers={"kid": signer.kid, "typ": TYPE}
    )


def decode(
    keys: KeySet, token: str, *, issuer: str, audience: str | None, now: dt.datetime,
    require: list[str] = ANY_TOKEN_CLAIMS,
) -> dict[str, Any]:
    """The verified claims of any of our access tokens; ``audience=None`` accepts every audience
    (introspection answers for tokens minted for other resource servers)."""
    try:
        header = jwt.get_unverified_header(token)
        key = keys.by_kid.get(header.get("kid", ""))
        if key is None:
            raise errors.InvalidToken()
        claims: dict[str, Any] = jwt.decode(
            token,
            key.public,
            algorithms=[key.algorithm],  # pinned by the key: no "alg": "none", no HMAC confusion
            audience=audience,
            issuer=issuer,
            options={"require": require, "verify_iat": False, "verify_exp": False, "verify_aud": audience is not None},
        )
    except (jwt.PyJWTError, ValueError, TypeError, KeyError, AttributeError):
        raise errors.InvalidToken() from None
    if not isinstance(claims["exp"], int) or claims["exp"] <= now.timestamp():  # the caller's clock
        raise errors.InvalidToken("Token has expired")
    if not isinstance(claims["iat"], int) or claims["iat"] > now.timestamp() + CLOCK_SKEW:
        raise errors.InvalidToken("Token issued in the future")  # not by us, or a clock far off
    return claims


def verify_access(keys: KeySet, token: str, *, issuer: str, audience: str, now: dt.datetime) -> AccessClaims:
    """A user's access token for our own audience (`me`, logout-all); a client's token is refused."""
    claims = decode(keys, token, issuer=issuer, audience=audience, now=now, require=REQUIRED_CLAIMS)
    return user_claims(claims)


def user_claims(claims: dict[str, Any]) -> AccessClaims:
    try:
        return AccessClaims(
            user_id=uuid.UUID(claims["sub"]),
            session_id=uuid.UUID(claims["sid"]),
            username=str(claims.get("username", "")),
            issued_at=int(claims["iat"]),
            expires_at=int(claims["exp"]),
            jti=str(claims["jti"]),
            raw=claims,
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        raise errors.InvalidToken() from None


class Verifier:
    """``verify_access`` with our issuer and audience, remembering tokens it has already verified.

    A client sends the same access token on every call until it expires, and the signature check is
    the largest single cost of `me` in the profile. A verified token's claims are kept (keyed by a
    128-bit BLAKE2b digest, not the token) in a bounded LRU and still checked against ``now`` on every
    use; invalid tokens are never remembered. A Verifier holds one key set: when the keys folder
    changes the service starts a new one (``Resources.use_keys``), so a removed key's tokens are
    refused from then on, not only once they leave the cache.
    """

    def __init__(self, keys: KeySet, issuer: str, audience: str, size: int = 10_000) -> None:
        self.keys, self.issuer, self.audience = keys, issuer, audience
        self._verified: LRUCache[bytes, AccessClaims] = LRUCache(maxsize=size)

    def verify(self, token: str, now: dt.datetime) -> AccessClaims:
        key = hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        claims = self._verified.get(key)
        if claims is None:
            claims = verify_access(self.keys, token, issuer=self.issuer, audience=self.audience, now=now)
            self._verified[key] = claims
        elif claims.expires_at <= now.timestamp():
            raise errors.InvalidToken("Token has expired")
        return claims


def new_refresh() -> tuple[str, bytes]:
    """A fresh refresh token and the digest that is stored for it."""
    token = secrets.token_urlsafe(32)
    return token, digest(token)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
