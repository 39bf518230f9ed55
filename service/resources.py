"""What the lifespan creates and every request uses: built once, closed in reverse order."""

from __future__ import annotations

import dataclasses
from typing import Any, TypedDict

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from starlette.requests import Request

from service.audit import Log
from service.cache import Cache
from service.config import Settings
from service.keys import Keyring, KeySet
from service.mail import Sender, Templates
from service.passwords import Hasher
from service.policy import BreachCheck
from service.ratelimit import Limiter
from service.store import Store
from service.tokens import Verifier


@dataclasses.dataclass
class Resources:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[Any]  # the primary: every write, and reads that must see them
    reads: async_sessionmaker[Any]  # the read replica when configured, else the primary
    hasher: Hasher
    keyring: Keyring  # AUTH_KEYS_DIR, followed: `use_keys` swaps the three fields below
    store: Store  # Redis, or this process's memory when AUTH_REDIS_URL is unset
    limiter: Limiter
    cache: Cache
    audit: Log  # writes events that have no transaction of their own (failed logins); keys of hashes, cursors
    sender: Sender  # the outbox's sender loop; wake() it after committing a mail
    templates: Templates
    breach: BreachCheck
    keys: KeySet = dataclasses.field(init=False)
    verifier: Verifier = dataclasses.field(init=False)
    jwks: bytes = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.use_keys(self.keyring.current)

    def use_keys(self, keyset: KeySet) -> None:
        """Sign and verify with ``keyset`` from now on. A fresh Verifier: its cache must not go on
        accepting tokens of a key that was removed. No await in here, so a request sees one set or
        the other, never a mix."""
        self.verifier = Verifier(keyset, self.settings.issuer, self.settings.jwt_audience)
        self.jwks = keyset.jwks_json()
        self.keys = keyset


class State(TypedDict):
    resources: Resources


def resources(request: Request) -> Resources:
    return request.state.resources  # type: ignore[no-any-return]
