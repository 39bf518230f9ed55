"""Access tokens (JWT) and refresh tokens. Pure: every function takes ``now``, none reads a clock.

Access tokens are EdDSA JWTs with ``kid``; verification pins the algorithm to the key named by the
``kid``, and the issuer and audience to ours. Refresh tokens are 32 random bytes, base64url; only
their SHA-256 is stored.
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
) -> str:
    issued = int(now.timestamp())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": str(user_id),
        "username": username,
        "sid": str(session_id),
        "jti": uuid.uuid4().hex,
        "iat": issued,
        "exp": issued + ttl,
    }
    signer = keys.signing
    if signer.private is None:
        raise ValueError(f"key {signer.kid} has no private part")
    return jwt.encode(claims, signer.private, algorithm=signer.algorithm, headers={"kid": signer.kid})


def verify_access(keys: KeySet, token: str, *, issuer: str, audience: str, now: dt.datetime) -> AccessClaims:
    try:
        header = jwt.get_unverified_header(token)
        key = keys.by_kid.get(header.get("kid", ""))
        if key is None:
            raise errors.InvalidToken()
        claims = jwt.decode(
            token,
            key.public,
            algorithms=[key.algorithm],  # pinned by the key: no "alg": "none", no HMAC confusion
            audience=audience,
            issuer=issuer,
            options={"require": REQUIRED_CLAIMS, "verify_iat": False, "verify_exp": False},
        )
        if not isinstance(claims["exp"], int) or claims["exp"] <= now.timestamp():  # the caller's clock
            raise errors.InvalidToken("Token has expired")
        if not isinstance(claims["iat"], int) or claims["iat"] > now.timestamp() + CLOCK_SKEW:
            raise errors.InvalidToken("Token issued in the future")  # not by us, or a clock far off
        return AccessClaims(
            user_id=uuid.UUID(claims["sub"]),
            session_id=uuid.UUID(claims["sid"]),
            username=str(claims.get("username", "")),
            issued_at=int(claims["iat"]),
            expires_at=int(claims["exp"]),
            jti=str(claims["jti"]),
            raw=claims,
        )
    except (jwt.PyJWTError, ValueError, TypeError, KeyError, AttributeError):
        raise errors.InvalidToken() from None


class Verifier:
    """``verify_access`` with our issuer and audience, remembering tokens it has already verified.

    A client sends the same access token on every call until it expires, and the signature check is
    the largest single cost of `me` in the profile. A verified token's claims are kept (keyed by a
    128-bit BLAKE2b digest, not the token) in a bounded LRU and still checked against ``now`` on every
    use; invalid tokens are never remembered. Keys only change with a restart, which empties it.
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
