"""Signing keys: generation, loading several, choosing the signer, rotation without downtime."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from service import errors, keys, tokens
from service.config import ConfigError

NOW = dt.datetime.now(dt.UTC)
CLAIMS = {"user_id": uuid.uuid4(), "username": "alice", "session_id": uuid.uuid4(), "issuer": "i", "audience": "a"}


def issue(keyset: keys.KeySet, ttl: int = 60) -> str:
    return tokens.issue_access(keyset, ttl=ttl, now=NOW, **CLAIMS)  # type: ignore[arg-type]


def verify(keyset: keys.KeySet, token: str, now: dt.datetime = NOW) -> tokens.AccessClaims:
    return tokens.verify_access(keyset, token, issuer="i", audience="a", now=now)


@pytest.mark.parametrize("algorithm", ["EdDSA", "RS256", "ES256"])
def test_each_algorithm_signs_and_verifies(tmp_path: Path, algorithm: str) -> None:
    path = keys.generate(tmp_path, kid="k1", algorithm=algorithm)
    assert path.stat().st_mode & 0o777 == 0o600
    keyset = keys.load(tmp_path, None)
    token = issue(keyset)
    assert jwt.get_unverified_header(token) == {"alg": algorithm, "kid": "k1", "typ": "at+jwt"}  # RFC 9068
    assert verify(keyset, token).username == "alice"
    assert keyset.jwks()["keys"][0]["alg"] == algorithm


def test_rotation_keeps_old_tokens_valid_while_the_new_key_signs(tmp_path: Path) -> None:
    old = keys.generate(tmp_path, kid="old")
    old_token = issue(keys.load(tmp_path, None))
    keys.generate(tmp_path, kid="new")
    # retire the old private key: keep only its public half
    private = serialization.load_pem_private_key(old.read_bytes(), password=None)
    (tmp_path / "old.pub.pem").write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    old.unlink()
    keyset = keys.load(tmp_path, None)
    assert keyset.signing.kid == "new"
    assert {k["kid"] for k in keyset.jwks()["keys"]} == {"old", "new"}
    assert verify(keyset, old_token).username == "alice"
    assert jwt.get_unverified_header(issue(keyset))["kid"] == "new"


def test_several_private_keys_need_the_signing_key_id(tmp_path: Path) -> None:
    keys.generate(tmp_path, kid="a")
    keys.generate(tmp_path, kid="b")
    with pytest.raises(ConfigError, match="AUTH_SIGNING_KEY_ID"):
        keys.load(tmp_path, None)
    assert keys.load(tmp_path, "b").signing.kid == "b"
    with pytest.raises(ConfigError, match=r"no private key c\.pem"):
        keys.load(tmp_path, "c")


def test_no_key_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="authsvc keys generate"):
        keys.load(tmp_path, None)


def test_generate_never_overwrites_a_key(tmp_path: Path) -> None:
    keys.generate(tmp_path, kid="k")
    with pytest.raises(FileExistsError):
        keys.generate(tmp_path, kid="k")


def test_verification_pins_algorithm_issuer_audience_and_expiry(tmp_path: Path) -> None:
    keys.generate(tmp_path, kid="k")
    keyset = keys.load(tmp_path, None)
    token = issue(keyset, ttl=60)
    with pytest.raises(errors.InvalidToken):
        verify(keyset, token, now=NOW + dt.timedelta(seconds=61))
    with pytest.raises(errors.InvalidToken):
        tokens.verify_access(keyset, token, issuer="other", audience="a", now=NOW)
    with pytest.raises(errors.InvalidToken):
        tokens.verify_access(keyset, token, issuer="i", audience="other", now=NOW)
    claims = jwt.decode(token, options={"verify_signature": False})
    forged_none = jwt.encode(claims, None, algorithm="none", headers={"kid": "k"})
    forged_hmac = jwt.encode(claims, "k" * 32, algorithm="HS256", headers={"kid": "k"})
    for forged in (forged_none, forged_hmac, token[:-4] + "AAAA", "a.b.c", ""):
        with pytest.raises(errors.InvalidToken):
            verify(keyset, forged)


def test_a_token_issued_in_the_future_is_refused_beyond_a_small_clock_skew(tmp_path: Path) -> None:
    keys.generate(tmp_path, kid="k")
    keyset = keys.load(tmp_path, None)
    ahead = tokens.CLOCK_SKEW + 60
    later = tokens.issue_access(keyset, ttl=3600, now=NOW + dt.timedelta(seconds=ahead), **CLAIMS)  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidToken, match="future"):
        verify(keyset, later)
    with pytest.raises(errors.InvalidToken, match="future"):
        tokens.Verifier(keyset, "i", "a").verify(later, NOW)
    assert verify(keyset, later, now=NOW + dt.timedelta(seconds=60)).username == "alice"  # within the skew
    skewed = tokens.issue_access(keyset, ttl=60, now=NOW + dt.timedelta(seconds=5), **CLAIMS)  # type: ignore[arg-type]
    assert verify(keyset, skewed).username == "alice"  # a replica a few seconds ahead


def test_a_token_from_an_unknown_key_is_refused(tmp_path: Path) -> None:
    keys.generate(tmp_path / "one", kid="k")
    keys.generate(tmp_path / "two", kid="k")  # same kid, different key
    token = issue(keys.load(tmp_path / "one", None))
    with pytest.raises(errors.InvalidToken):
        verify(keys.load(tmp_path / "two", None), token)


def test_the_verifier_checks_a_signature_once_per_token_and_expiry_every_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys.generate(tmp_path, kid="k")
    keyset = keys.load(tmp_path, None)
    verifier = tokens.Verifier(keyset, "i", "a")
    decodes: list[str] = []
    real = jwt.decode
    monkeypatch.setattr(tokens.jwt, "decode", lambda token, *a, **k: decodes.append(token) or real(token, *a, **k))
    token = issue(keyset, ttl=60)
    assert verifier.verify(token, NOW).username == verifier.verify(token, NOW).username == "alice"
    assert len(decodes) == 1
    with pytest.raises(errors.InvalidToken):
        verifier.verify(token, NOW + dt.timedelta(seconds=61))  # remembered, and still expires
    forged = token[:-4] + "AAAA"
    for _ in range(2):
        with pytest.raises(errors.InvalidToken):
            verifier.verify(forged, NOW)
    assert len(decodes) == 3  # a bad token is checked every time, never remembered
    with pytest.raises(errors.InvalidToken):
        tokens.Verifier(keyset, "other-issuer", "a").verify(token, NOW)
