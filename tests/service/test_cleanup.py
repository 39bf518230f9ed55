"""`authsvc cleanup`: deletes what has expired or died long ago, and nothing else."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import select, text

from devtools.stack import Stack
from service import cleanup, tokens
from service.config import Settings
from service.db.models import RefreshToken, Session, User
from tests.service.conftest import Running, make_settings

pytestmark = pytest.mark.anyio
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


async def seed(app: Running) -> dict[str, uuid.UUID]:
    """Sessions named by what cleanup must do with them, each with one refresh token."""
    ids: dict[str, uuid.UUID] = {}
    retention, refresh_ttl = 7 * DAY, 7 * DAY
    async with app.resources.sessions.begin() as db:
        user = User(
            id=uuid.uuid4(), username="alice", email="a@example.com", password_hash="x", is_active=True,
            created_at=NOW, updated_at=NOW,
        )
        db.add(user)
        await db.flush()
        cases = {
            # name: (last_used_at, revoked_at, token expires_at)
            "live": (NOW - DAY, None, NOW + DAY),
            "live_token_expired": (NOW - DAY, None, NOW - dt.timedelta(seconds=1)),
            "revoked_recently": (NOW - DAY, NOW - DAY, NOW + DAY),
            "revoked_long_ago": (NOW - 9 * DAY, NOW - retention - DAY, NOW - DAY),
            "idle_long_ago": (NOW - refresh_ttl - retention - DAY, None, NOW - retention - DAY),
        }
        for name, (last_used, revoked, token_expires) in cases.items():
            ids[name] = uuid.uuid4()
            db.add(Session(
                id=ids[name], user_id=user.id, created_at=last_used, expires_at=NOW + 30 * DAY,
                last_used_at=last_used, revoked_at=revoked,
            ))
            await db.flush()
            db.add(RefreshToken(
                id=uuid.uuid4(), session_id=ids[name], token_hash=tokens.digest(name), created_at=last_used,
                expires_at=token_expires,
            ))
    return ids


async def remaining(app: Running) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    async with app.resources.sessions() as db:
        session_ids = set((await db.execute(select(Session.id))).scalars())
        token_sessions = set((await db.execute(select(RefreshToken.session_id))).scalars())
    return session_ids, token_sessions


async def test_cleanup_deletes_expired_tokens_and_long_dead_sessions_only(app: Running) -> None:
    ids = await seed(app)
    counts = await cleanup.run_once(app.resources.sessions, app.resources.settings, NOW)
    sessions_left, tokens_left = await remaining(app)
    assert sessions_left == {ids["live"], ids["live_token_expired"], ids["revoked_recently"]}
    assert tokens_left == {ids["live"], ids["revoked_recently"]}
    # revoked_long_ago's and idle_long_ago's tokens had expired too: the first sweep took them
    assert (counts.refresh_tokens, counts.sessions, counts.skipped) == (3, 2, False)
    again = await cleanup.run_once(app.resources.sessions, app.resources.settings, NOW)
    assert (again.refresh_tokens, again.sessions) == (0, 0)


async def test_cleanup_works_in_batches(running_app, stack: Stack, keys_dir) -> None:  # type: ignore[no-untyped-def]
    async with running_app(make_settings(stack, keys_dir, AUTH_CLEANUP_BATCH_SIZE="1")) as app:
        ids = await seed(app)
        counts = await cleanup.run_once(app.resources.sessions, app.resources.settings, NOW)
        assert (counts.refresh_tokens, counts.sessions) == (3, 2)
        assert (await remaining(app))[0] == {ids["live"], ids["live_token_expired"], ids["revoked_recently"]}


async def test_cleanup_stands_aside_while_another_replica_holds_the_lock(app: Running, stack: Stack) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    await seed(app)
    other = create_async_engine(stack.database_url)
    try:
        async with other.begin() as connection:
            held = await connection.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": cleanup.LOCK_KEY})
            assert held.scalar() is True
            counts = await cleanup.run_once(app.resources.sessions, app.resources.settings, NOW)
            assert counts.skipped is True and counts.refresh_tokens == 0
    finally:
        await other.dispose()
    assert len((await remaining(app))[0]) == 5  # nothing was touched


async def test_cleanup_command_prints_counts(settings: Settings, stack: Stack) -> None:
    import os
    import sys

    import anyio

    from tests.service.conftest import environ

    env = {**os.environ, **environ(stack, settings.keys_dir)}
    result = await anyio.run_process(
        [sys.executable, "-m", "service.cli", "cleanup"], env=env, check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().startswith("cleanup: deleted 0 refresh tokens, 0 sessions")
