"""The embedded default: SQLite in a data directory, a generated key, no other server."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
import pytest
from asgi_lifespan import LifespanManager

from service import cleanup
from service.app import create_app
from service.config import Settings
from tests.service.conftest import BASE, bearer, login, register

pytestmark = pytest.mark.anyio


async def test_the_embedded_default_sets_itself_up_and_serves_the_whole_flow(sqlite_settings: Settings) -> None:
    async with LifespanManager(create_app(sqlite_settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            alice = await register(client)
            pair = await login(client, alice)
            assert (await client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))).status_code == 200
            rotated = await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
            assert rotated.status_code == 200
            reuse = await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
            assert reuse.status_code == 401
            assert (await client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))).status_code == 401
            assert (await client.get("/health/readiness")).json()["checks"] == {"database": "ok", "keys": "ok"}
            res = manager._state["resources"]
            counts = await cleanup.run_once(res.sessions, res.settings, dt.datetime.now(dt.UTC))
            assert counts.skipped is False
            kept = await login(client, alice)  # a session left alone, to be used after the restart
    assert (sqlite_settings.data_dir / "auth.db").exists()
    assert [p.name for p in sqlite_settings.keys_dir.iterdir()] == ["local.pem"]

    # a restart keeps users, sessions and the key: old tokens still verify
    async with LifespanManager(create_app(sqlite_settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            revoked = await client.get("/api/v1/auth/me", headers=bearer(rotated.json()["access_token"]))
            assert revoked.status_code == 401  # its family was revoked before the restart
            before = await client.get("/api/v1/auth/me", headers=bearer(kept["access_token"]))
            assert before.status_code == 200, before.text  # signed before the restart, with the kept key
            assert before.json()["username"] == alice.username
            refreshed = await client.post("/api/v1/auth/refresh", json={"refresh_token": kept["refresh_token"]})
            assert refreshed.status_code == 200
            again = await login(client, alice)
            assert (await client.get("/api/v1/auth/me", headers=bearer(again["access_token"]))).status_code == 200


async def test_concurrent_refreshes_on_sqlite_also_yield_one_success(sqlite_settings: Settings) -> None:
    async with LifespanManager(create_app(sqlite_settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            pair = await login(client, await register(client))
            responses = await asyncio.gather(
                *(client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}) for _ in range(6))
            )
            assert sorted(r.status_code for r in responses) == [200] + [401] * 5


async def test_upgrading_an_embedded_database_keeps_its_sessions_and_refresh_tokens(sqlite_settings: Settings) -> None:
    """0002 adds columns to sessions: copying the table instead (SQLite's usual way) would cascade-delete
    every refresh token, logging everybody out of the laptop install."""
    import anyio

    from service import keys, migrations

    await anyio.to_thread.run_sync(migrations.upgrade, sqlite_settings, "0001")
    keys.ensure(sqlite_settings.keys_dir)
    async with LifespanManager(create_app(sqlite_settings)) as manager:  # upgrades itself to head on start
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            pair = await login(client, await register(client))
    await anyio.to_thread.run_sync(migrations.downgrade, sqlite_settings, "0001")
    async with LifespanManager(create_app(sqlite_settings)) as manager:  # and up again
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            rotated = await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
            assert rotated.status_code == 200, rotated.text


async def test_the_admin_api_and_audit_log_work_on_the_embedded_default(tmp_path: object) -> None:
    from tests.service.test_admin import client_token

    settings = Settings.from_environ({
        "AUTH_DATA_DIR": str(tmp_path) + "/data", "AUTH_BCRYPT_COST": "4", "AUTH_RATE_LIMIT_ENABLED": "false",
        "AUTH_BOOTSTRAP_CLIENT_SECRET": "embedded-bootstrap-secret-0123456789",
    })
    async with LifespanManager(create_app(settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            admin = bearer(await client_token(client, "bootstrap", "embedded-bootstrap-secret-0123456789"))
            for name in ("alice", "Alicia", "bob", "carl", "dora"):
                await register(client, name)
            pair = await login(client, await register(client, "erin"))
            found = (await client.get("/admin/v1/users", params={"q": "ALI"}, headers=admin)).json()
            assert [user["username"] for user in found["users"]] == ["alice", "Alicia"]
            first = (await client.get("/admin/v1/users", params={"limit": 4}, headers=admin)).json()
            rest = (await client.get("/admin/v1/users", params={"limit": 4, "cursor": first["next_cursor"]},
                                     headers=admin)).json()
            names = [user["username"] for user in first["users"] + rest["users"]]
            assert names == ["alice", "Alicia", "bob", "carl", "dora", "erin"]
            erin = rest["users"][-1]["id"]
            patched = await client.patch(f"/admin/v1/users/{erin}", json={"is_active": False}, headers=admin)
            assert patched.status_code == 200
            assert (await client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))).status_code == 401
            events = (await client.get("/admin/v1/audit", params={"user_id": erin}, headers=admin)).json()["events"]
            assert [event["type"] for event in events] == ["user.disabled", "login.succeeded"]
            assert (await client.delete(f"/admin/v1/users/{erin}", headers=admin)).status_code == 204
            await register(client, "erin")
