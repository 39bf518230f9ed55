"""Cache-aside for the user behind `me`, and the revoked-session list. Owns the key prefixes.

A cached user is the shaped ``me`` body, kept ``AUTH_USER_CACHE_TTL`` seconds and dropped on every
change the service makes to the user. A revoked session's id stays listed for the access-token
lifetime, the longest any of its access tokens can live, so `me` and `introspect` refuse those
tokens at once instead of at ``exp``.

With Redis down the cache is bypassed and ``lookup`` says revoked=None ("unknown"): the caller then
asks the database, which always has the truth. Revocations that could not reach Redis are kept and
written as soon as Redis answers again.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterable
from typing import Any

from service import metrics
from service.store import Store, StoreDown

USER = "auth:user:"
REVOKED = "auth:revoked:"


class Cache:
    def __init__(self, store: Store, user_ttl: int, revoked_ttl: int) -> None:
        self.store = store
        self.user_ttl = user_ttl
        self.revoked_ttl = revoked_ttl
        self.pending_revocations: set[str] = set()

    async def lookup(self, session_id: uuid.UUID, user_id: uuid.UUID) -> tuple[bool | None, dict[str, Any] | None]:
        """Is the session revoked, and the cached user: one round trip for the hot path of `me`.

        Revoked is None when the list cannot be read (ask the database); the user is None on a miss.
        """
        try:
            if self.pending_revocations:
                await self._flush()
            revoked, raw = await self.store.mget(f"{REVOKED}{session_id}", f"{USER}{user_id}")
        except StoreDown:
            return None, None
        if revoked is not None or not self.user_ttl:
            return revoked is not None, None
        if raw is None:
            metrics.USER_CACHE.labels("miss").inc()
            return False, None
        metrics.USER_CACHE.labels("hit").inc()
        user: dict[str, Any] = json.loads(raw)
        return False, user

    async def put_user(self, user_id: uuid.UUID, shaped: dict[str, Any]) -> None:
        if self.user_ttl:
            with contextlib.suppress(StoreDown):  # uncached this time; the database answered anyway
                await self.store.set(f"{USER}{user_id}", json.dumps(shaped).encode(), self.user_ttl)

    async def forget_user(self, user_id: uuid.UUID) -> None:
        with contextlib.suppress(StoreDown):  # the entry expires within user_ttl; the database has the change
            await self.store.delete(f"{USER}{user_id}")

    async def revoke(self, session_ids: Iterable[uuid.UUID]) -> None:
        self.pending_revocations.update(str(sid) for sid in session_ids)
        await self._flush()

    async def _flush(self) -> None:
        if not self.pending_revocations:
            return
        pending = sorted(self.pending_revocations)
        try:
            await self.store.set_many([REVOKED + sid for sid in pending], b"1", self.revoked_ttl)
        except StoreDown:
            return
        self.pending_revocations.difference_update(pending)
