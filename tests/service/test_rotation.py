"""Refresh rotation under concurrency, the grace window, and session lifetimes."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import select, update

from devtools.stack import Stack
from service.config import Settings
from service.db.models import RefreshToken, Session
from tests.service.conftest import Account, Running, login, register

pytestmark = pytest.mark.anyio


async def test_concurrent_refreshes_of_one_token_yield_exactly_one_success(app: Running) -> None:
    alice = await register(app.client)
    pair = await login(app.client, alice)
    responses = await asyncio.gather(
        *(app.client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}) for _ in range(12))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [401] * 11
    async with app.resources.sessions() as db:
        tokens = (await db.execute(select(RefreshToken))).scalars().all()
    used = [t for t in tokens if t.used_at is not None]
    assert len(tokens) == 2 and len(used) == 1  # one rotation, never two
    assert used[0].replaced_by == next(t.id for t in tokens if t.used_at is None)


async def test_losers_of_a_race_count_as_reuse_by_default_and_end_the_family(app: Running) -> None:
    alice = await register(app.client)
    pair = await login(app.client, alice)
    responses = await asyncio.gather(
        *(app.client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}) for _ in range(2))
    )
    winner = next(r for r in responses if r.status_code == 200).json()
    again = await app.client.post("/api/v1/auth/refresh", json={"refresh_token": winner["refresh_token"]})
    assert again.status_code == 401  # grace 0: strict, the family is gone


async def test_within_the_grace_window_a_racing_duplicate_is_refused_without_revoking(
    running_app, stack: Stack, keys_dir, settings: Settings  # type: ignore[no-untyped-def]
) -> None:
    from tests.service.conftest import make_settings

    async with running_app(make_settings(stack, keys_dir, AUTH_REFRESH_REUSE_GRACE="30")) as app:
        alice = await register(app.client)
        pair = await login(app.client, alice)
        first = await app.client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        duplicate = await app.client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert (first.status_code, duplicate.status_code) == (200, 401)
        assert "reuse" not in duplicate.json()["detail"]
        follow_up = await app.client.post("/api/v1/auth/refresh", json={"refresh_token": first.json()["refresh_token"]})
        assert follow_up.status_code == 200  # the family survived

        # outside the window it is reuse again
        async with app.resources.sessions.begin() as db:
            await db.execute(
                update(RefreshToken)
                .where(RefreshToken.used_at.is_not(None))
                .values(used_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=31))
            )
        late = await app.client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert "reuse" in late.json()["detail"]


async def test_an_expired_refresh_token_is_refused_and_stays_unused(app: Running, alice: Account) -> None:
    pair = await login(app.client, alice)
    async with app.resources.sessions.begin() as db:
        await db.execute(update(RefreshToken).values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
    response = await app.client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert response.status_code == 401
    async with app.resources.sessions() as db:
        assert (await db.execute(select(RefreshToken.used_at))).scalar_one() is None


async def test_a_session_past_its_absolute_lifetime_cannot_refresh(app: Running, alice: Account) -> None:
    pair = await login(app.client, alice)
    async with app.resources.sessions.begin() as db:
        await db.execute(update(Session).values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
    response = await app.client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert response.status_code == 401


async def test_a_refresh_token_never_outlives_its_session(
    running_app, stack: Stack, keys_dir  # type: ignore[no-untyped-def]
) -> None:
    from tests.service.conftest import make_settings

    async with running_app(make_settings(stack, keys_dir, AUTH_SESSION_MAX_AGE="600")) as app:
        alice = await register(app.client)
        pair = await login(app.client, alice)
        assert 590 <= pair["refresh_expires_in"] <= 600


async def test_only_the_sha256_of_a_refresh_token_is_stored(app: Running, alice: Account) -> None:
    import hashlib

    pair = await login(app.client, alice)
    async with app.resources.sessions() as db:
        stored = (await db.execute(select(RefreshToken.token_hash))).scalar_one()
    assert stored == hashlib.sha256(pair["refresh_token"].encode()).digest()
    assert pair["refresh_token"].encode() not in stored
