"""Signing keys: loaded from a directory (a mounted Kubernetes Secret), published as a JWKS, followed.

``<kid>.pem`` holds a private key; ``<kid>.pub.pem`` a public key that is still accepted but no
longer signs (a retired key during rotation). One private key signs: the kid an ``active-kid``
entry names, else ``AUTH_SIGNING_KEY_ID``, else the only one there is. Every key is published, so
apps keep verifying tokens across a rotation.

The kubelet updates a mounted Secret atomically: the entries are symlinks ``name -> ..data/name``
and ``..data`` is a symlink to a timestamped folder, swapped for a new one on each change. A
``Keyring`` re-reads the folder ``..data`` points at whenever a cheap stamp of it changes (the
target and each entry's inode, mtime and size) and keeps its last good key set when the new state
does not load: a broken Secret never stops signing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from service import metrics
from service.config import ConfigError

log = logging.getLogger("service.keys")
PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | rsa.RSAPublicKey | ec.EllipticCurvePublicKey
ALGORITHMS = ("EdDSA", "RS256", "ES256")
ACTIVE_KID = "active-kid"  # an entry holding the kid that signs (the operator writes it)
KUBELET_DATA = "..data"  # the kubelet's symlink to the current version of a mounted Secret


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
    """The keys in ``directory`` as they are now; ``ConfigError`` naming the entry when they do not load."""
    folder = snapshot(directory)
    keys: dict[str, Key] = {}
    for path in sorted(folder.glob("*.pem")) if folder.is_dir() else []:
        kid = path.name.removesuffix(".pem").removesuffix(".pub")
        try:
            keys[kid] = _read(path, kid)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:  # TypeError: an encrypted key
            raise ConfigError(f"AUTH_KEYS_DIR: {path.name}: {exc}") from None
        except OSError as exc:  # unreadable: permissions, a folder or a dangling link named *.pem
            raise ConfigError(f"AUTH_KEYS_DIR: cannot read {path}: {exc.strerror or exc}") from None
    private = [key for key in keys.values() if key.private is not None]
    if not private:
        raise ConfigError(
            f"AUTH_KEYS_DIR: no private key (<kid>.pem) in {directory}; create one with "
            f"`authsvc keys generate --dir {directory}`"
        )
    active = _active_kid(folder)
    if active is not None:
        signing = keys.get(active)
        if signing is None or signing.private is None:
            raise ConfigError(f"AUTH_KEYS_DIR: {ACTIVE_KID} names {active}, but there is no private key {active}.pem")
        return KeySet(signing, keys)
    if signing_kid is None:
        if len(private) > 1:
            raise ConfigError(
                "AUTH_SIGNING_KEY_ID: several private keys are loaded "
                f"({', '.join(k.kid for k in private)}); name the one that signs (or write it into {ACTIVE_KID})"
            )
        return KeySet(private[0], keys)
    signing = keys.get(signing_kid)
    if signing is None or signing.private is None:
        raise ConfigError(f"AUTH_SIGNING_KEY_ID: no private key {signing_kid}.pem in {directory}")
    return KeySet(signing, keys)


def snapshot(directory: Path) -> Path:
    """The folder to read: the one ``..data`` points at in a mounted Secret (one consistent version,
    which the kubelet never changes in place), else the directory itself."""
    data = directory / KUBELET_DATA
    return data.resolve() if data.is_dir() else directory


def stamp(directory: Path) -> tuple[object, ...]:
    """What changes whenever the keys do, at the cost of one stat per entry; never raises."""
    folder = snapshot(directory)
    entries: list[tuple[object, ...]] = []
    try:
        with os.scandir(folder) as found:
            for entry in found:
                try:
                    status = entry.stat()  # follows a plain folder's symlinks too
                    entries.append((entry.name, status.st_ino, status.st_mtime_ns, status.st_size))
                except OSError as exc:
                    entries.append((entry.name, type(exc).__name__))
    except OSError as exc:
        return (str(folder), type(exc).__name__)
    return (str(folder), *sorted(entries))


def _active_kid(folder: Path) -> str | None:
    path = folder / ACTIVE_KID
    try:
        kid = path.read_text().strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"AUTH_KEYS_DIR: {ACTIVE_KID}: {exc}") from None
    if not kid:
        raise ConfigError(f"AUTH_KEYS_DIR: {ACTIVE_KID} is empty")
    return kid


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


class Reload(enum.Enum):
    UNCHANGED = "unchanged"
    LOADED = "loaded"
    REFUSED = "refused"  # the folder's new state does not load; the last good key set stays


class Keyring:
    """The key set of a folder, re-read by ``refresh`` when the folder changed.

    At start a folder that does not load is fatal (there is nothing to fall back on); after that a
    broken change is refused once (``problem`` says why) and the last good key set stays current.
    """

    def __init__(self, directory: Path, signing_kid: str | None) -> None:
        self.directory, self.signing_kid = directory, signing_kid
        self._stamp = stamp(directory)
        self.current = load(directory, signing_kid)
        self.problem: str | None = None  # why the folder's present state was refused

    def refresh(self) -> Reload:
        """Blocking (it reads files): run it in a thread."""
        for _ in range(3):  # a state that changes while it is read (a ..data swap) is read again
            before = stamp(self.directory)
            if before == self._stamp:
                return Reload.UNCHANGED
            try:
                loaded = load(self.directory, self.signing_kid)
            except ConfigError as exc:
                if stamp(self.directory) != before:
                    continue
                self._stamp, self.problem = before, str(exc)
                return Reload.REFUSED
            self._stamp = before
            same = _summary(loaded) == _summary(self.current)
            recovered, self.problem = self.problem is not None, None
            if same and not recovered:
                return Reload.UNCHANGED  # touched, not changed (a re-written file): keep the caches
            self.current = loaded
            return Reload.LOADED
        return Reload.UNCHANGED  # still changing: the next look reads it


def _summary(keyset: KeySet) -> tuple[object, ...]:
    """Equal for equal key sets (a public key determines its private one)."""
    private = sorted(kid for kid, key in keyset.by_kid.items() if key.private is not None)
    return keyset.signing.kid, private, keyset.jwks_json()


async def follow(keyring: Keyring, interval: float, use: Callable[[KeySet], None]) -> None:
    """Every ``interval`` seconds, re-read the folder if it changed and hand a new key set to ``use``.

    Runs for the life of the process; nothing here may end it. Each process logs one line per change.
    """
    while True:
        await asyncio.sleep(interval)
        try:
            outcome = await anyio.to_thread.run_sync(keyring.refresh)
        except Exception:  # a bug here must not stop signing: the current keys stay
            log.exception("reading AUTH_KEYS_DIR failed; the current keys stay")
            continue
        if outcome is Reload.UNCHANGED:
            continue
        metrics.KEYS_RELOADS.labels(outcome.value).inc()
        current = keyring.current
        if outcome is Reload.REFUSED:
            metrics.KEYS_DEGRADED.set(1)
            log.error(
                "AUTH_KEYS_DIR changed but does not load, keeping kids %s (signing %s): %s",
                ", ".join(current.by_kid), current.signing.kid, keyring.problem,
            )
            continue
        metrics.KEYS_DEGRADED.set(0)
        use(current)
        log.info("AUTH_KEYS_DIR reloaded: kids %s, signing %s", ", ".join(current.by_kid), current.signing.kid)
