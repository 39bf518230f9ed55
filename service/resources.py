"""What the lifespan creates and every request uses: built once, closed in reverse order."""

from __future__ import annotations

import dataclasses
from typing import Any, TypedDict

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from starlette.requests import Request

from service.audit import Log
from service.cache import Cache
from service.config import Settings
from service.keys import KeySet
from service.passwords import Hasher
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
    keys: KeySet
    verifier: Verifier
    jwks: bytes
    store: Store  # Redis, or this process's memory when AUTH_REDIS_URL is unset
    limiter: Limiter
    cache: Cache
    audit: Log  # writes events that have no transaction of their own (failed logins); keys of hashes, cursors


class State(TypedDict):
    resources: Resources


def resources(request: Request) -> Resources:
    return request.state.resources  # type: ignore[no-any-return]
