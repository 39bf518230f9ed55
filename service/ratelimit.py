"""Rate limits shared by every replica, and exponential backoff after failed logins.

Windows are counted by the ``limits`` library (sliding-window counters) in Redis, so N replicas
allow the limit once, not N times. When Redis is down the same limits are counted in this
process's memory: looser across replicas, never unlimited. Every check runs before any bcrypt work,
and all but a login's per-account ones before any database query, so a refused request costs almost
nothing; the per-account ones need the login's one indexed lookup to know the account.

Backoff: each failed login doubles the wait before the next attempt for that account, and for
that (account, client IP) pair; a success clears both. The account is the user once the login's
lookup found it, whatever name or email (in whatever case or Unicode form) was typed; an unknown
name is counted as an account of its own under its folded form, exactly like a known one, so the
backoff does not tell an attacker which names exist.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from opentelemetry import trace

from service import errors, metrics
from service.config import Settings
from service.db import users
from service.store import MemoryStore, RedisStore, Store, StoreDown

tracer = trace.get_tracer("service.ratelimit")
PREFIX = "auth:rl"
BACKOFF = "auth:backoff:"


def account(user_id: uuid.UUID | None, login: str) -> str:
    """Whom the per-account budget and the backoff count: the user, else the unknown name, folded.

    Known and unknown accounts live in one namespace and are charged the same way, so neither the
    budget nor the backoff behaves differently for a name that exists.
    """
    return f"user:{user_id}" if user_id is not None else f"name:{users.fold(login)}"


def _limits_uri(url: str) -> str:
    if url.startswith("unix://"):
        return "async+redis+unix://" + url.removeprefix("unix://")
    return "async+" + url  # redis:// and rediss://


class Limiter:
    def __init__(self, settings: Settings, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock  # backoff deadlines only; the windows are the limits library's
        self.enabled = settings.rate_limit_enabled
        self.base, self.cap = settings.login_backoff_base, settings.login_backoff_cap
        self.items: dict[str, RateLimitItem] = {
            "ip": parse(settings.rate_limit_ip),
            "register": parse(settings.rate_limit_register),
            "token": parse(settings.rate_limit_token),
            "token_user": parse(settings.rate_limit_token_per_user),
            "refresh": parse(settings.rate_limit_refresh),
            "introspect": parse(settings.rate_limit_introspect),
            "password_reset": parse(settings.rate_limit_password_reset),  # reset requests, verification resends
            "password_reset_address": parse(settings.rate_limit_password_reset_per_address),
            "client": parse(settings.rate_limit_client),  # per client id: each client authentication
        }
        self.store = store
        self.memory_store = store if isinstance(store, MemoryStore) else MemoryStore()
        self.memory = SlidingWindowCounterRateLimiter(MemoryStorage())
        self.shared: SlidingWindowCounterRateLimiter | None = None
        if isinstance(store, RedisStore):
            storage = RedisStorage(
                _limits_uri(store.url), implementation="redispy", wrap_exceptions=True, key_prefix=PREFIX,
                connection_pool=store.client.connection_pool,  # type: ignore[arg-type]  # one pool, one set of timeouts
            )
            self.shared = SlidingWindowCounterRateLimiter(storage)

    async def hit(self, name: str, *identifiers: str) -> None:
        """Count one request against ``name``'s budget for ``identifiers``; raise when it is spent."""
        if not self.enabled:
            return
        item = self.items[name]
        with tracer.start_as_current_span("ratelimit.check", attributes={"ratelimit.name": name}) as span:
            limiter = self._limiter()
            try:
                allowed = await limiter.hit(item, name, *identifiers)
            except StorageError as exc:
                self.store.failed("ratelimit", exc)  # type: ignore[union-attr]  # only the shared one raises
                limiter = self.memory
                allowed = await limiter.hit(item, name, *identifiers)
            span.set_attribute("ratelimit.allowed", allowed)
        if not allowed:
            metrics.RATE_LIMITED.labels(name).inc()
            raise errors.RateLimited(await self._retry_after(limiter, item, name, *identifiers))

    def _limiter(self) -> SlidingWindowCounterRateLimiter:
        if self.shared is None or not isinstance(self.store, RedisStore):
            return self.memory
        if self.store.available():
            return self.shared
        metrics.REDIS_FALLBACK.labels("ratelimit").inc()
        return self.memory

    async def _retry_after(
        self, limiter: SlidingWindowCounterRateLimiter, item: RateLimitItem, *identifiers: str
    ) -> int:
        try:
            stats = await limiter.get_window_stats(item, *identifiers)
        except StorageError:
            return int(item.get_expiry())
        return max(1, math.ceil(stats.reset_time - time.time()))

    # -- login backoff ------------------------------------------------------------------------------

    @staticmethod
    def _backoff_keys(account: str, ip: str | None) -> tuple[str, str]:
        # the pair's count outlives a success from the owner's IP, so a sprayer stays slowed
        return f"{BACKOFF}u:{account}", f"{BACKOFF}ui:{account}|{ip or '-'}"

    async def check_backoff(self, account: str, ip: str | None) -> None:
        """Raise while ``account`` (see ``account()``), or it from ``ip``, is waiting after failures."""
        if not self.enabled:
            return
        keys = [f"{key}:until" for key in self._backoff_keys(account, ip)]
        untils = await self._backoff_store("mget", lambda s: s.mget(*keys))
        now = self.clock()
        waits = [float(until) - now for until in untils if until is not None]
        if waits and max(waits) > 0:
            metrics.RATE_LIMITED.labels("backoff").inc()
            wait = math.ceil(max(waits))
            raise errors.RateLimited(wait, f"Too many failed logins; try again in {wait}s")

    async def login_failed(self, account: str, ip: str | None) -> None:
        if not self.enabled:
            return
        now = self.clock()
        for key in self._backoff_keys(account, ip):
            # the count is forgotten after twice the cap without a failure
            count = await self._backoff_store("incr", lambda s, k=key: s.incr(f"{k}:count", 2 * self.cap + 1))
            wait = min(self.cap, self.base * 2 ** (count - 1))
            if wait > 0:
                await self._backoff_store(
                    "set", lambda s, k=key, w=wait: s.set(f"{k}:until", str(now + w).encode(), w)
                )

    async def login_succeeded(self, account: str, ip: str | None) -> None:
        if not self.enabled:
            return
        keys = [f"{key}:{part}" for key in self._backoff_keys(account, ip) for part in ("count", "until")]
        await self._backoff_store("delete", lambda s: s.delete(*keys))

    async def _backoff_store(self, operation: str, call: Any) -> Any:
        try:
            return await call(self.store)
        except StoreDown:
            return await call(self.memory_store)
