"""Cache-aside for token checks, keyed by session, and the revoked-session list. Owns the key prefixes.

The database is the source of truth; this only saves it work, and may lose entries at any moment
(Redis flushed, restarted, failed over, evicting; this process restarted). What keeps that safe:

- The cached unit is the session: ``auth:session:<sid>`` holds its user's shaped ``me`` body, written
  only from a database read that found the session live and its user active, and kept at most
  ``AUTH_USER_CACHE_TTL`` seconds (never past the session's own expiry).
- A cache that may have lost entries is cold until known complete. ``auth:epoch`` holds a random value
  with no expiry; an entry carries the epoch that was current before the read it was made from and
  counts only while that epoch still is. A flush, a restart without persistence or a failover to an
  empty replica removes the epoch, so nothing written before counts; the next lookup sets a new epoch
  before its database read.
- Ending a session deletes its entry and lists its id at ``auth:revoked:<sid>`` for the access-token
  lifetime (the longest any of its access tokens can live). The mark is read with the entry and wins
  over it: it catches an entry made from a read that raced the revocation.
- A change to a user (disabled, password or profile changed) sets ``auth:usergen:<uid>`` to a new
  random value; entries carry the value current before their read, so all the user's sessions miss.
- A revocation or user change that cannot reach Redis is kept and written as soon as Redis answers:
  retried in the background as soon as the store's retry interval allows, and before this process
  trusts the cache again. If the process dies first, ``AUTH_USER_CACHE_TTL`` bounds how long other
  replicas may still accept the session (docs/design.md states the bound for each failure mode).

The hot path of `me` is one MGET: the epoch, the entry, the revoked mark and the user's generation.
With Redis down ``lookup`` knows nothing and the caller asks the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import secrets
import uuid
from collections.abc import Iterable
from typing import Any

from service import metrics, store

EPOCH = "auth:epoch"
SESSION = "auth:session:"
REVOKED = "auth:revoked:"
USER = "auth:usergen:"


@dataclasses.dataclass(frozen=True)
class Found:
    """What the cache knows about one session."""

    revoked: bool  # listed as ended: refuse without asking the database
    user: dict[str, Any] | None  # the shaped user of a live session; None: ask the database
    stamp: tuple[str, str | None] | None  # (epoch, user generation) before the read; None: do not cache


UNKNOWN = Found(revoked=False, user=None, stamp=None)


class Cache:
    def __init__(self, shared: store.Store, session_ttl: int, revoked_ttl: int) -> None:
        self.store = shared
        self.session_ttl = session_ttl
        self.revoked_ttl = revoked_ttl
        self.pending_revocations: set[str] = set()
        self.pending_users: set[str] = set()
        self._retry: asyncio.Task[None] | None = None

    async def lookup(self, session_id: uuid.UUID, user_id: uuid.UUID) -> Found:
        sid, uid = str(session_id), str(user_id)
        try:
            await self._write_pending()  # never trust entries that a pending revocation should have ended
            if not self.session_ttl:
                (revoked,) = await self.store.mget(REVOKED + sid)
                return Found(revoked is not None, None, None)
            epoch, raw, revoked, generation = await self.store.mget(EPOCH, SESSION + sid, REVOKED + sid, USER + uid)
            if revoked is not None:
                return Found(True, None, None)
            if epoch is None:  # lost its data: nothing in it counts; a new epoch, set before the read
                epoch, raw = await self.store.setdefault(EPOCH, secrets.token_hex(16).encode()), None
        except store.StoreDown:
            return UNKNOWN
        stamp = (epoch.decode(), generation.decode() if generation is not None else None)
        if raw is not None:
            entry = json.loads(raw)
            if (entry["epoch"], entry["generation"]) == stamp and entry["user"]["id"] == uid:
                metrics.USER_CACHE.labels("hit").inc()
                return Found(False, entry["user"], stamp)
        metrics.USER_CACHE.labels("miss").inc()
        return Found(False, None, stamp)

    async def put(
        self, session_id: uuid.UUID, found: Found, shaped: dict[str, Any], expires_at: dt.datetime, now: dt.datetime
    ) -> None:
        """Cache a session the database just found live, under the stamp its lookup saw before the read."""
        ttl = min(self.session_ttl, (expires_at - now).total_seconds())
        if found.stamp is None or ttl <= 0:
            return
        epoch, generation = found.stamp
        value = json.dumps({"epoch": epoch, "generation": generation, "user": shaped}).encode()
        with contextlib.suppress(store.StoreDown):  # uncached this time; the database answered anyway
            await self.store.set(f"{SESSION}{session_id}", value, ttl)

    async def revoke(self, session_ids: Iterable[uuid.UUID]) -> None:
        """After the database committed the end of these sessions: refuse them on every replica."""
        self.pending_revocations.update(str(sid) for sid in session_ids)
        await self._write_or_retry()

    async def forget_user(self, user_id: uuid.UUID) -> None:
        """After the database committed a change to the user (disabled, password, profile): every cached
        session of theirs misses, on every replica. Ending the sessions is the caller's ``revoke``."""
        if self.session_ttl:
            self.pending_users.add(str(user_id))
            await self._write_or_retry()

    async def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry
        with contextlib.suppress(store.StoreDown):  # a last try; failing that, the entries' TTL bounds it
            await self._write_pending()

    async def _write_or_retry(self) -> None:
        try:
            await self._write_pending()
        except store.StoreDown:
            if self._retry is None or self._retry.done():
                self._retry = asyncio.get_running_loop().create_task(self._retry_until_written())

    async def _retry_until_written(self) -> None:
        # without this, other replicas would trust this session's entry until this process's next request;
        # polled at a tenth of the interval so the write follows the store's own retry closely
        while self.pending_revocations or self.pending_users:
            await asyncio.sleep(store.RETRY_INTERVAL / 10)
            if self.store.available():
                with contextlib.suppress(store.StoreDown):
                    await self._write_pending()

    async def _write_pending(self) -> None:
        """Write every pending mark in one atomic round trip, or raise StoreDown and keep them."""
        if not (self.pending_revocations or self.pending_users):
            return
        sessions, users = sorted(self.pending_revocations), sorted(self.pending_users)
        values = {REVOKED + sid: (b"1", float(self.revoked_ttl)) for sid in sessions}
        # a generation outlives every entry that could carry the one before and every token they serve
        generation_ttl = float(self.session_ttl + self.revoked_ttl)
        values.update({USER + uid: (secrets.token_hex(16).encode(), generation_ttl) for uid in users})
        await self.store.write(values, delete=[SESSION + sid for sid in sessions])
        self.pending_revocations.difference_update(sessions)
        self.pending_users.difference_update(users)
