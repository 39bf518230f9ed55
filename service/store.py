"""The shared store: Redis when configured, else per-process memory; and what happens when Redis is down.

Both stores offer the few operations the service needs (get, set with a TTL, delete, incr, and for
the cache setdefault and an all-or-nothing write). A ``RedisStore`` that cannot reach Redis within
``AUTH_REDIS_TIMEOUT`` raises ``StoreDown`` and then stops trying for ``RETRY_INTERVAL`` seconds (so an
outage costs one timeout per interval, not one per request); the next call after that tries again, and
the first success ends the outage. Callers decide what "down" means for them: the rate limiter falls
back to memory, the cache is bypassed, the revoked-session check asks the database.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from cachetools import TLRUCache
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from service import metrics

T = TypeVar("T")
log = logging.getLogger("service.store")
RETRY_INTERVAL = 1.0
MEMORY_ENTRIES = 100_000  # bounds per-process memory under a flood of distinct keys


class StoreDown(Exception):
    """Redis did not answer in time; the caller falls back."""


class MemoryStore:
    """Per-process TTL store: the embedded default's, and the rate limiter's fallback."""

    shared = False

    def __init__(self, maxsize: int = MEMORY_ENTRIES) -> None:
        # entries are (value, expires_at on the monotonic clock); the cache drops them when due
        self._data: TLRUCache[str, tuple[bytes, float]] = TLRUCache(maxsize, ttu=lambda _k, v, _now: v[1])

    async def get(self, key: str) -> bytes | None:
        entry = self._data.get(key)
        return entry[0] if entry else None

    async def mget(self, *keys: str) -> list[bytes | None]:
        return [await self.get(key) for key in keys]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self._data[key] = (value, time.monotonic() + ttl)

    async def setdefault(self, key: str, value: bytes) -> bytes:
        """The key's value, set to ``value`` (with no expiry) if it had none."""
        current = await self.get(key)
        if current is None:
            await self.set(key, value, math.inf)
        return current if current is not None else value

    async def write(self, values: dict[str, tuple[bytes, float]], delete: list[str]) -> None:
        """Set each key to (value, ttl) and delete others, all or nothing."""
        for key, (value, ttl) in values.items():
            await self.set(key, value, ttl)
        await self.delete(*delete)

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._data.pop(key, None)

    async def incr(self, key: str, ttl: float) -> int:
        """Add one and (re)start the key's TTL; returns the new count."""
        current = await self.get(key)
        count = int(current or 0) + 1
        await self.set(key, str(count).encode(), ttl)
        return count

    async def ping(self) -> None:
        return None

    def available(self) -> bool:
        return True


class RedisStore:
    shared = True

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry_on_timeout=False,  # a slow Redis is an outage: fall back, don't wait twice
            health_check_interval=30,
        )
        self.down_until = 0.0
        self.degraded = False

    async def close(self) -> None:
        await self.client.aclose()

    def available(self) -> bool:
        """False for RETRY_INTERVAL after a failure: then one call tries Redis again."""
        return time.monotonic() >= self.down_until

    async def run(self, operation: str, call: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        if not self.available():
            metrics.REDIS_FALLBACK.labels(operation).inc()
            raise StoreDown(operation)
        try:
            result = await call(self.client)
        except (RedisError, OSError, TimeoutError) as exc:
            self.failed(operation, exc)
            raise StoreDown(operation) from None
        if self.degraded:
            self.degraded = False
            log.warning("redis is back; using it again", extra={"operation": operation})
        return result

    def failed(self, operation: str, exc: BaseException) -> None:
        metrics.REDIS_FALLBACK.labels(operation).inc()
        self.down_until = time.monotonic() + RETRY_INTERVAL
        if not self.degraded:
            self.degraded = True
            log.warning(
                "redis unavailable (%s); falling back: in-process rate limits, no cache, "
                "revocations checked in the database", type(exc).__name__, extra={"operation": operation},
            )

    async def get(self, key: str) -> bytes | None:
        value = await self.run("get", lambda r: r.get(key))
        return value.encode() if isinstance(value, str) else value

    async def mget(self, *keys: str) -> list[bytes | None]:
        values = await self.run("mget", lambda r: r.mget(keys))
        return [value.encode() if isinstance(value, str) else value for value in values]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self.run("set", lambda r: r.set(key, value, px=max(1, math.ceil(ttl * 1000))))

    async def setdefault(self, key: str, value: bytes) -> bytes:
        async def atomic(r: aioredis.Redis) -> Any:
            async with r.pipeline(transaction=True) as pipe:  # MULTI: nothing can delete it in between
                pipe.set(key, value, nx=True)
                pipe.get(key)
                return await pipe.execute()

        _, current = await self.run("setdefault", atomic)
        return current.encode() if isinstance(current, str) else bytes(current)

    async def write(self, values: dict[str, tuple[bytes, float]], delete: list[str]) -> None:
        async def atomic(r: aioredis.Redis) -> Any:
            async with r.pipeline(transaction=True) as pipe:
                for key, (value, ttl) in values.items():
                    pipe.set(key, value, px=max(1, math.ceil(ttl * 1000)))
                if delete:
                    pipe.delete(*delete)
                return await pipe.execute()

        await self.run("write", atomic)

    async def delete(self, *keys: str) -> None:
        await self.run("delete", lambda r: r.delete(*keys))

    async def incr(self, key: str, ttl: float) -> int:
        async def pipelined(r: aioredis.Redis) -> Any:
            async with r.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.pexpire(key, max(1, math.ceil(ttl * 1000)))
                return await pipe.execute()

        count, _ = await self.run("incr", pipelined)
        return int(count)

    async def ping(self) -> None:
        await self.run("ping", lambda r: r.ping())


Store = MemoryStore | RedisStore


def create(url: str | None, timeout: float) -> Store:
    return RedisStore(url, timeout) if url else MemoryStore()
