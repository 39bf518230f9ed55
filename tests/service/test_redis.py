"""Redis: limits shared by replicas, backoff, client IPs, the `me` cache, revocation, and outages."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
from redis.asyncio import Redis
from starlette.requests import Request

from devtools.polling import wait_for
from devtools.stack import Stack
from service import errors, passwords, ratelimit, store, web
from service.config import Settings
from service.ratelimit import Limiter
from tests.service.conftest import (
    PASSWORD,
    Account,
    Running,
    bearer,
    counting_queries,
    login,
    make_settings,
    register,
)

pytestmark = pytest.mark.anyio


def limited(stack: Stack, keys_dir: Path, **overrides: str) -> Settings:
    return make_settings(stack, keys_dir, AUTH_RATE_LIMIT_ENABLED="true", **overrides)


@contextlib.contextmanager
def counting_hashes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    calls: list[str] = []
    real_check, real_hash = bcrypt.checkpw, bcrypt.hashpw
    monkeypatch.setattr(passwords.bcrypt, "checkpw", lambda *a: calls.append("check") or real_check(*a))
    monkeypatch.setattr(passwords.bcrypt, "hashpw", lambda *a: calls.append("hash") or real_hash(*a))
    yield calls


# -- limits shared by replicas --------------------------------------------------------------------


async def test_a_limit_holds_across_two_replicas_sharing_redis(running_app: Any, stack: Stack, keys_dir: Path) -> None:
    settings = limited(stack, keys_dir, AUTH_RATE_LIMIT_REGISTER="3/minute")
    async with running_app(settings) as one, running_app(settings) as two:
        statuses = []
        for i, replica in enumerate([one, two, one, two]):
            body = {"username": f"user{i}", "email": f"user{i}@example.com", "password": PASSWORD}
            statuses.append((await replica.client.post("/api/v1/auth/register", json=body)).status_code)
        assert statuses == [201, 201, 201, 429]


async def test_a_limited_request_costs_no_bcrypt_and_no_query(
    running_app: Any, stack: Stack, keys_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_app(limited(stack, keys_dir, AUTH_RATE_LIMIT_TOKEN="2/minute")) as app:
        form = {"username": "nobody", "password": PASSWORD}
        for _ in range(2):
            await app.client.post("/api/v1/auth/token", data={"username": "other", "password": "x" * 8})
        with counting_hashes(monkeypatch) as hashes, counting_queries(app) as queries:
            response = await app.client.post("/api/v1/auth/token", data=form)
        assert response.status_code == 429
        assert response.json()["error"] == "rate_limited"
        assert 1 <= int(response.headers["retry-after"]) <= 60
        assert (hashes, queries) == ([], [])


async def test_one_account_sprayed_from_many_ips_is_slowed_by_the_per_username_budget(
    running_app: Any, stack: Stack, keys_dir: Path
) -> None:
    settings = limited(
        stack, keys_dir, AUTH_RATE_LIMIT_TOKEN_PER_USER="3/minute", AUTH_TRUSTED_PROXIES="127.0.0.0/8",
        AUTH_LOGIN_BACKOFF_BASE="0",
    )
    async with running_app(settings) as app:
        statuses = []
        for i in range(4):
            response = await app.client.post(
                "/api/v1/auth/token", data={"username": "victim", "password": "guess" + "x" * i * 2 + "xxx"},
                headers={"X-Forwarded-For": f"203.0.113.{i}"},
            )
            statuses.append(response.status_code)
        assert statuses == [401, 401, 401, 429]


# -- backoff --------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["redis", "memory"])
async def backoff(request: pytest.FixtureRequest, stack: Stack, keys_dir: Path) -> AsyncIterator[tuple[Limiter, Clock]]:
    settings = limited(stack, keys_dir, AUTH_LOGIN_BACKOFF_BASE="1", AUTH_LOGIN_BACKOFF_CAP="8")
    shared = store.create(stack.redis_url if request.param == "redis" else None, 0.5)
    clock = Clock()
    yield Limiter(settings, shared, clock=clock), clock
    if isinstance(shared, store.RedisStore):
        await shared.client.flushdb()
        await shared.close()


async def retry_after(limiter: Limiter, username: str, ip: str) -> int | None:
    try:
        await limiter.check_backoff(username, ip)
    except errors.RateLimited as exc:
        return exc.retry_after
    return None


async def test_each_failure_doubles_the_wait_up_to_the_cap_and_success_resets(
    backoff: tuple[Limiter, Clock],
) -> None:
    limiter, clock = backoff
    waits = []
    for _ in range(6):
        await limiter.login_failed("alice", "198.51.100.1")
        waits.append(await retry_after(limiter, "alice", "198.51.100.1"))
        clock.now += waits[-1] or 0  # the wait passes
        assert await retry_after(limiter, "alice", "198.51.100.1") is None
    assert waits == [1, 2, 4, 8, 8, 8]
    await limiter.login_succeeded("alice", "198.51.100.1")
    await limiter.login_failed("alice", "198.51.100.1")
    assert await retry_after(limiter, "alice", "198.51.100.1") == 1


async def test_the_per_account_backoff_reaches_other_ips_and_unknown_names_are_folded(
    backoff: tuple[Limiter, Clock],
) -> None:
    limiter, _ = backoff
    await limiter.login_failed(ratelimit.account(None, "Alice"), "198.51.100.1")
    for variant in ("alice", "ALICE", "\uff21lice"):  # the last with a full-width A
        assert await retry_after(limiter, ratelimit.account(None, variant), "198.51.100.2") == 1
    assert await retry_after(limiter, ratelimit.account(None, "bob"), "198.51.100.1") is None


async def test_after_a_failed_login_even_the_right_password_waits_and_unknown_names_behave_alike(
    running_app: Any, stack: Stack, keys_dir: Path
) -> None:
    async with running_app(limited(stack, keys_dir, AUTH_LOGIN_BACKOFF_BASE="30")) as app:
        await register(app.client)
        answers = []
        for username in ("alice", "nobody"):
            await app.client.post("/api/v1/auth/token", data={"username": username, "password": "wrong password"})
            response = await app.client.post("/api/v1/auth/token", data={"username": username, "password": PASSWORD})
            answers.append((response.status_code, response.json()["error"], response.headers["retry-after"]))
        assert answers[0] == answers[1] == (429, "rate_limited", "30")


# -- client IP ------------------------------------------------------------------------------------


def request_from(peer: str, forwarded: list[str] | None = None) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded or []]
    return Request({"type": "http", "client": (peer, 1234), "headers": headers, "method": "GET", "path": "/"})


TRUSTED = Settings.from_environ({"AUTH_TRUSTED_PROXIES": "10.0.0.0/8, fd00::/8"}).trusted_proxies


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.9", ["1.2.3.4"], "203.0.113.9"),  # untrusted peer: its header is ignored
        ("10.0.0.2", None, "10.0.0.2"),  # a trusted proxy without the header
        ("10.0.0.2", ["198.51.100.7"], "198.51.100.7"),
        ("10.0.0.2", ["6.6.6.6, 198.51.100.7"], "198.51.100.7"),  # the client's own prefix is ignored
        ("10.0.0.2", ["6.6.6.6, 198.51.100.7, 10.0.0.1"], "198.51.100.7"),  # two proxies deep
        ("10.0.0.2", ["6.6.6.6", "198.51.100.7"], "198.51.100.7"),  # several header lines
        ("10.0.0.2", ["10.0.0.3, 10.0.0.1"], "10.0.0.3"),  # only proxies: the farthest one
        ("10.0.0.2", ["garbage, 10.0.0.1"], "10.0.0.1"),
        ("fd00::1", ["2001:db8::5"], "2001:db8::5"),
    ],
)
def test_client_ip_follows_only_trusted_proxies(peer: str, forwarded: list[str] | None, expected: str) -> None:
    assert web.client_ip(request_from(peer, forwarded), TRUSTED) == expected


async def test_a_spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing(
    running_app: Any, stack: Stack, keys_dir: Path
) -> None:
    async with running_app(limited(stack, keys_dir, AUTH_RATE_LIMIT_REFRESH="2/minute")) as app:
        statuses = [
            (await app.client.post(
                "/api/v1/auth/refresh", json={"refresh_token": "x"}, headers={"X-Forwarded-For": f"192.0.2.{i}"}
            )).status_code
            for i in range(3)
        ]
        assert statuses == [401, 401, 429]  # one budget: the socket peer's


# -- the me cache and revocation ------------------------------------------------------------------


async def test_a_warm_me_does_no_database_query(app: Running) -> None:
    pair = await login(app.client, await register(app.client))
    first = await app.client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))
    with counting_queries(app) as queries:
        second = await app.client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))
    assert second.status_code == 200 and second.json() == first.json()
    assert queries == []


async def test_a_change_to_the_user_invalidates_the_cache(running_app: Any, stack: Stack, keys_dir: Path) -> None:
    async with running_app(make_settings(stack, keys_dir, AUTH_BCRYPT_COST="4")) as old:
        pair = await login(old.client, await register(old.client))
        await old.client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))  # cached
    async with running_app(make_settings(stack, keys_dir, AUTH_BCRYPT_COST="5")) as new:
        await login(new.client, account("alice"))  # re-hash at the new cost: a change to the user
        with counting_queries(new) as queries:
            response = await new.client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))
        assert response.status_code == 200
        assert len(queries) == 1  # the miss: one query reads the user and checks the session


async def test_logout_is_refused_by_a_warm_me_at_once_without_the_database(app: Running) -> None:
    pair = await login(app.client, await register(app.client))
    assert (await app.client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))).status_code == 200
    revoked = await app.client.post("/api/v1/auth/revoke", json={"refresh_token": pair["refresh_token"]})
    assert revoked.status_code == 204
    with counting_queries(app) as queries:
        response = await app.client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))
    assert response.status_code == 401 and queries == []


async def test_logout_on_one_replica_is_seen_by_another_at_once(running_app: Any) -> None:
    async with running_app() as one, running_app() as two:
        pair = await login(one.client, await register(one.client))
        assert (await two.client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))).status_code == 200
        await one.client.post("/api/v1/auth/logout-all", headers=bearer(pair["access_token"]))
        assert (await two.client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))).status_code == 401


# -- outages --------------------------------------------------------------------------------------


async def test_every_route_answers_while_redis_is_down_and_redis_is_used_again_when_back(
    running_app: Any, stack: Stack, keys_dir: Path, quick_retry: None, redis_restarted: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = limited(stack, keys_dir, AUTH_RATE_LIMIT_REGISTER="3/minute", AUTH_LOGIN_BACKOFF_BASE="0")
    async with running_app(settings) as app:
        client: httpx.AsyncClient = app.client
        alice = await register(client)
        pair = await login(client, alice)
        assert (await client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))).status_code == 200

        stack.redis.stop()
        ready = await client.get("/health/readiness")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok", "redis": "degraded", "keys": "ok"}
        assert "redis unavailable" in caplog.text
        assert (await client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))).status_code == 200
        rotated = await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert rotated.status_code == 200
        # a logout during the outage is enforced from the database
        other = await login(client, alice)
        revoked = await client.post("/api/v1/auth/revoke", json={"refresh_token": other["refresh_token"]})
        assert revoked.status_code == 204
        assert (await client.get("/api/v1/auth/me", headers=bearer(other["access_token"]))).status_code == 401
        # limits fall back to this process's memory: never unlimited (one registration was made before)
        statuses = []
        for i in range(4):
            body = {"username": f"user{i}", "email": f"user{i}@example.com", "password": PASSWORD}
            statuses.append((await client.post("/api/v1/auth/register", json=body)).status_code)
        assert statuses == [201, 201, 201, 429]

        stack.redis.start()  # an empty Redis, as after a restart

        async def redis_ok() -> bool:
            return bool((await client.get("/health/readiness")).json()["checks"]["redis"] == "ok")

        await wait_for(redis_ok, limit=10, interval=0.02)
        assert "redis is back" in caplog.text
        # the revocation made during the outage reached the revoked list once Redis answered
        redis = Redis.from_url(stack.redis_url)
        try:
            await client.get("/api/v1/auth/me", headers=bearer(other["access_token"]))
            assert await redis.exists(f"auth:revoked:{decode_sid(other['access_token'])}") == 1
            # and the shared limits are counted in Redis again
            await client.post("/api/v1/auth/register", json={"username": "x", "email": "x@example.com"})
            assert [key async for key in redis.scan_iter("auth:rl*")] != []
        finally:
            await redis.aclose()


def decode_sid(access_token: str) -> str:
    import jwt

    return str(jwt.decode(access_token, options={"verify_signature": False})["sid"])


async def test_a_slow_redis_counts_as_down_and_requests_still_answer(
    running_app: Any, stack: Stack, keys_dir: Path, quick_retry: None
) -> None:
    async with running_app(make_settings(stack, keys_dir, AUTH_REDIS_TIMEOUT="0.1")) as app:
        pair = await login(app.client, await register(app.client))
        blocker = Redis.from_url(stack.redis_url)
        try:
            await blocker.execute_command("CLIENT", "PAUSE", "1500", "ALL")  # Redis stops answering for 1.5 s
            await wait_for(lambda: _ping_fails(stack.redis_url), limit=10, interval=0.02)
            response = await app.client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))
            assert response.status_code == 200
            assert app.resources.store.degraded is True
            await blocker.execute_command("CLIENT", "UNPAUSE")
        finally:
            await blocker.aclose()


async def _ping_fails(url: str) -> bool:
    probe = Redis.from_url(url, socket_timeout=0.05)
    try:
        await probe.ping()
    except Exception:
        return True
    finally:
        await probe.aclose()
    return False


async def test_the_embedded_default_limits_in_process_without_redis(sqlite_settings: Settings) -> None:
    from asgi_lifespan import LifespanManager

    from service.app import create_app
    from tests.service.conftest import BASE

    settings = Settings.from_environ({
        "AUTH_DATA_DIR": str(sqlite_settings.data_dir), "AUTH_BCRYPT_COST": "4", "AUTH_RATE_LIMIT_REGISTER": "2/minute",
    })
    async with LifespanManager(create_app(settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            statuses = []
            for i in range(3):
                body = {"username": f"user{i}", "email": f"user{i}@example.com", "password": PASSWORD}
                statuses.append((await client.post("/api/v1/auth/register", json=body)).status_code)
            assert statuses == [201, 201, 429]
            pair = await login(client, account("user0"))
            assert (await client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))).status_code == 200
            await client.post("/api/v1/auth/revoke", json={"refresh_token": pair["refresh_token"]})
            assert (await client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))).status_code == 401


def account(username: str) -> Account:
    """An account registered earlier in the test, by name."""
    return Account(username, f"{username}@example.com", PASSWORD, "")
