"""Key material for the keys Secret: new private keys, their public halves, and what an entry holds.

The same formats the service reads (``service/keys.py``): PKCS#8 PEM ``<kid>.pem`` for a private key,
SubjectPublicKeyInfo PEM ``<kid>.pub.pem`` for a public one; Ed25519, EC P-256 or RSA 3072. Written
with ``cryptography`` directly: ``service.keys`` writes into a folder and pulls in the service's
metrics on import. Nothing here logs, and no error message carries key material.
"""

from __future__ import annotations

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from authsvc_operator import rotation

PRIVATE_SUFFIX, PUBLIC_SUFFIX = ".pem", ".pub.pem"


def generate(algorithm: str) -> bytes:
    """A new private key as PKCS#8 PEM."""
    key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if algorithm == "EdDSA":
        key = ed25519.Ed25519PrivateKey.generate()
    elif algorithm == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    else:
        raise ValueError(f"algorithm must be one of {', '.join(rotation.ALGORITHMS)}")
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_half(private_pem: bytes) -> bytes:
    private = serialization.load_pem_private_key(private_pem, password=None)
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def kid_of(entry: str) -> str | None:
    """The kid of a Secret entry named like a key, else None (``active-kid`` and anything else)."""
    if entry.endswith(PUBLIC_SUFFIX):
        return entry.removesuffix(PUBLIC_SUFFIX)
    if entry.endswith(PRIVATE_SUFFIX):
        return entry.removesuffix(PRIVATE_SUFFIX)
    return None


def inspect(entry: str, data: bytes) -> rotation.Material:
    """What a ``<kid>.pem`` or ``<kid>.pub.pem`` entry holds; ValueError (naming the entry only) otherwise."""
    try:
        if entry.endswith(PUBLIC_SUFFIX):
            return rotation.Material(_algorithm(serialization.load_pem_public_key(data)), private=False)
        private = serialization.load_pem_private_key(data, password=None)
        return rotation.Material(_algorithm(private.public_key()), private=True)
    except (ValueError, TypeError, UnsupportedAlgorithm):  # TypeError: an encrypted key
        raise ValueError(f"{entry} is not a key the service can load") from None


def _algorithm(public: object) -> str:
    if isinstance(public, ed25519.Ed25519PublicKey):
        return "EdDSA"
    if isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1):
        return "ES256"
    if isinstance(public, rsa.RSAPublicKey) and public.key_size >= 2048:
        return "RS256"
    raise ValueError("unsupported key type")
