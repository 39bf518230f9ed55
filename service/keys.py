"""Signing keys: loaded from a directory (a mounted Kubernetes Secret), published as a JWKS.

``<kid>.pem`` holds a private key; ``<kid>.pub.pem`` a public key that is still accepted but no
longer signs (a retired key during rotation). One private key signs: ``AUTH_SIGNING_KEY_ID``, or the
only one there is. Every key is published, so apps keep verifying tokens across a rotation.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from service.config import ConfigError

PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | rsa.RSAPublicKey | ec.EllipticCurvePublicKey
ALGORITHMS = ("EdDSA", "RS256", "ES256")


@dataclasses.dataclass(frozen=True)
class Key:
    kid: str
    algorithm: str
    public: PublicKey
    private: PrivateKey | None = None

    def jwk(self) -> dict[str, Any]:
        if isinstance(self.public, ed25519.Ed25519PublicKey):
            data = OKPAlgorithm.to_jwk(self.public, as_dict=True)
        elif isinstance(self.public, rsa.RSAPublicKey):
            data = RSAAlgorithm.to_jwk(self.public, as_dict=True)
        else:
            data = ECAlgorithm.to_jwk(self.public, as_dict=True)
        return {**data, "kid": self.kid, "alg": self.algorithm, "use": "sig"}


@dataclasses.dataclass(frozen=True)
class KeySet:
    signing: Key
    by_kid: dict[str, Key]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.jwk() for key in self.by_kid.values()]}

    def jwks_json(self) -> bytes:
        return json.dumps(self.jwks(), separators=(",", ":")).encode()


def algorithm_of(key: PublicKey) -> str:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ValueError("RSA keys must have at least 2048 bits")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise ValueError("unsupported key type: use Ed25519, RSA ≥ 2048 or EC P-256")


def load(directory: Path, signing_kid: str | None) -> KeySet:
    keys: dict[str, Key] = {}
    for path in sorted(directory.glob("*.pem")) if directory.is_dir() else []:
        kid = path.name.removesuffix(".pem").removesuffix(".pub")
        try:
            keys[kid] = _read(path, kid)
        except ValueError as exc:
            raise ConfigError(f"AUTH_KEYS_DIR: {path.name}: {exc}") from None
        except OSError as exc:  # unreadable: permissions, a folder or a dangling link named *.pem
            raise ConfigError(f"AUTH_KEYS_DIR: cannot read {path}: {exc.strerror or exc}") from None
    private = [key for key in keys.values() if key.private is not None]
    if not private:
        raise ConfigError(
            f"AUTH_KEYS_DIR: no private key (<kid>.pem) in {directory}; create one with "
            f"`authsvc keys generate --dir {directory}`"
        )
    if signing_kid is None:
        if len(private) > 1:
            raise ConfigError(
                "AUTH_SIGNING_KEY_ID: several private keys are loaded "
                f"({', '.join(k.kid for k in private)}); name the one that signs"
            )
        return KeySet(private[0], keys)
    signing = keys.get(signing_kid)
    if signing is None or signing.private is None:
        raise ConfigError(f"AUTH_SIGNING_KEY_ID: no private key {signing_kid}.pem in {directory}")
    return KeySet(signing, keys)


def _read(path: Path, kid: str) -> Key:
    data = path.read_bytes()
    if path.name.endswith(".pub.pem"):
        public = serialization.load_pem_public_key(data)
        if not isinstance(public, ed25519.Ed25519PublicKey | rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise ValueError("unsupported key type")
        return Key(kid, algorithm_of(public), public)
    private = serialization.load_pem_private_key(data, password=None)
    if not isinstance(private, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError("unsupported key type")
    return Key(kid, algorithm_of(private.public_key()), private.public_key(), private)


def generate(directory: Path, kid: str | None = None, algorithm: str = "EdDSA") -> Path:
    """Write a new private key ``<kid>.pem`` (mode 0600) and return its path."""
    key: PrivateKey
    if algorithm == "EdDSA":
        key = ed25519.Ed25519PrivateKey.generate()
    elif algorithm == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    elif algorithm == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}")
    kid = kid or dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    if not kid.replace("-", "").replace("_", "").isalnum():
        raise ValueError("kid may hold letters, digits, '-' and '_' only")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{kid}.pem"
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never overwrite a key
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return path


def ensure(directory: Path) -> None:
    """The embedded default: create a key on first run, keep it in the data directory after."""
    if not any(directory.glob("*.pem")) if directory.is_dir() else True:
        generate(directory, kid="local")
