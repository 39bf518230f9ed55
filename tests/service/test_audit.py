"""The audit log on PostgreSQL: every event type with its actor, address and request; stored with the change it
records or not at all; failed logins batched but never acknowledged before they are stored; no secret in any
row or log line; log lines and metrics; retention in batches."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine

from service import audit, cleanup
from service.config import Settings
from service.db import audit as audit_queries
from service.db.models import AuditEvent
from tests.service.conftest import (
    PASSWORD,
    Running,
    bearer,
    counting_queries,
    eventually,
    login,
    make_settings,
    register,
)
from tests.service.test_admin import ADMIN_SECRET, AUDIT, CLIENTS, USERS, Admin, as_admin, basic, client_token
from tests.service.test_observability_metrics import moved, requests, scrape
from tests.stack import Stack

pytestmark = pytest.mark.anyio
CLIENT_IP, AGENT = "203.0.113.7", "audit-test/1.0"


async def events(app: Running) -> list[AuditEvent]:
    async with app.resources.sessions() as db:
        return list((await db.execute(select(AuditEvent).order_by(AuditEvent.id))).scalars())


def sid_of(pair: dict[str, Any]) -> str:
    import jwt

    return str(jwt.decode(pair["access_token"], options={"verify_signature": False})["sid"])


@pytest.fixture
def proxied_settings(stack: Stack, keys_dir: Any) -> Settings:
    """Behind a trusted proxy (the test client's 127.0.0.1), with the bootstrap admin client."""
    return make_settings(stack, keys_dir, AUTH_BOOTSTRAP_CLIENT_SECRET=ADMIN_SECRET,
                         AUTH_TRUSTED_PROXIES="127.0.0.1/32")


@pytest.fixture
async def proxied(running_app: Any, proxied_settings: Settings) -> AsyncIterator[tuple[Admin, set[str]]]:
    """An admin over an app whose every request comes through the proxy from CLIENT_IP with a request id."""
    sent: set[str] = set()

    async def stamp(request: httpx.Request) -> None:
        request.headers["x-request-id"] = uuid.uuid4().hex
        request.headers["x-forwarded-for"] = CLIENT_IP
        request.headers["user-agent"] = AGENT
        sent.add(request.headers["x-request-id"])

    async with running_app(proxied_settings) as app:
        app.client.event_hooks["request"] = [stamp]
        yield await as_admin(app), sent


async def every_flow(admin: Admin) -> dict[str, Any]:
    """Each event type the service records, once; returns what a leak scan must not find."""
    client = admin.client
    alice, bob = await register(client), await register(client, "bob")
    first = await login(client, alice)  # login.succeeded
    for name, password in (("alice", "wrong!!!"), ("mallory", PASSWORD)):  # login.failed, twice
        refused = await client.post("/api/v1/auth/token", data={"username": name, "password": password})
        assert refused.status_code == 401
    rotated = (await client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})).json()
    reuse = await client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401  # refresh.reuse_detected
    second = await login(client, alice)
    logout = await client.post("/api/v1/auth/revoke", json={"refresh_token": second["refresh_token"]})
    assert logout.status_code == 204
    third = await login(client, alice)
    assert (await client.post("/api/v1/auth/logout-all", headers=bearer(third["access_token"]))).status_code == 204
    bobs = await login(client, bob)
    await admin.ok("DELETE", f"{USERS}/{bob.id}/sessions/{sid_of(bobs)}", 204)  # session.ended
    await admin.ok("PATCH", f"{USERS}/{bob.id}", json={"email": "robert@example.com"})
    await admin.ok("PATCH", f"{USERS}/{bob.id}", json={"is_active": False})
    await admin.ok("PATCH", f"{USERS}/{bob.id}", json={"is_active": True})
    await admin.ok("POST", f"{USERS}/{bob.id}/password-reset", 202)
    created = await admin.ok("POST", CLIENTS, 201, json={"name": "app", "grant_types": ["client_credentials"],
                                                          "scope": "orders:read"})
    client_token_value = await client_token(client, created["client_id"], created["client_secret"])
    await admin.ok("PATCH", f"{CLIENTS}/{created['client_id']}", json={"name": "app 2"})
    rotated_secret = (await admin.ok("PATCH", f"{CLIENTS}/{created['client_id']}", json={"rotate_secret": True}))[
        "client_secret"]
    await admin.ok("DELETE", f"{CLIENTS}/{created['client_id']}", 204)
    await admin.ok("DELETE", f"{USERS}/{bob.id}", 204)
    return {
        "alice": alice, "bob": bob, "client_id": created["client_id"],
        "secrets": [
            PASSWORD, "wrong!!!", ADMIN_SECRET, created["client_secret"], rotated_secret, client_token_value,
            admin.headers["Authorization"].split()[1],
            *(pair[kind] for pair in (first, rotated, second, third, bobs)
              for kind in ("access_token", "refresh_token")),
        ],
        "personal": ["alice", "mallory", alice.email, bob.email, "robert@example.com"],
    }


async def test_every_event_type_is_recorded_with_its_actor_address_and_request(
    proxied: tuple[Admin, set[str]],
) -> None:
    admin, sent = proxied
    flow = await every_flow(admin)
    alice_id, bob_id, client_id = flow["alice"].id, flow["bob"].id, flow["client_id"]
    rows = await events(admin.app)
    seen = {row.type for row in rows}
    assert seen == set(audit.TYPES) - {audit.PASSWORD_CHANGED, audit.PASSWORD_RESET, audit.EMAIL_VERIFIED}

    user, admin_client, anonymous = ("user", alice_id), ("client", "bootstrap"), ("anonymous", None)
    expected = {  # type: (actor, user_id) of its first row
        audit.LOGIN_SUCCEEDED: (user, alice_id),
        audit.REFRESH_REUSE: (anonymous, alice_id),
        audit.LOGOUT: (user, alice_id),
        audit.LOGOUT_ALL: (user, alice_id),
        audit.SESSION_ENDED: (admin_client, bob_id),
        audit.USER_UPDATED: (admin_client, bob_id),
        audit.USER_DISABLED: (admin_client, bob_id),
        audit.USER_ENABLED: (admin_client, bob_id),
        audit.PASSWORD_RESET_REQUESTED: (admin_client, bob_id),
        audit.USER_DELETED: (admin_client, bob_id),
        audit.CLIENT_CREATED: (admin_client, None),
        audit.CLIENT_UPDATED: (admin_client, None),
        audit.CLIENT_SECRET_ROTATED: (admin_client, None),
        audit.CLIENT_DISABLED: (admin_client, None),
    }
    for kind, (actor, user_id) in expected.items():
        row = next(row for row in rows if row.type == kind)
        assert (row.actor_type, row.actor_id) == actor, kind
        assert row.user_id == (uuid.UUID(user_id) if user_id else None), kind
        if kind.startswith("client."):
            assert (row.client_id, row.subject_type, row.subject_id) == (client_id, "client", client_id)
    failures = [row for row in rows if row.type == audit.LOGIN_FAILED]
    assert [(row.actor_type, row.user_id, row.details.get("reason")) for row in failures] == [
        ("anonymous", uuid.UUID(alice_id), "wrong_password"), ("anonymous", None, "unknown_user")]
    assert set(failures[1].details) == {"reason", "name_hash"}
    for row in rows:  # every request came from CLIENT_IP through the trusted proxy
        assert (row.client_ip, row.user_agent) == (CLIENT_IP, AGENT), row.type
        assert row.request_id in sent, row.type
        assert row.occurred_at.tzinfo is not None


async def test_no_row_and_no_log_line_holds_a_password_token_hash_secret_or_name(
    proxied: tuple[Admin, set[str]], stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    admin, _ = proxied
    caplog.set_level(logging.INFO, logger="service.audit")
    flow = await every_flow(admin)
    engine = create_async_engine(stack.admin_url)
    try:
        async with engine.connect() as connection:
            stored = "\n".join((await connection.execute(text("SELECT t::text FROM audit_events t"))).scalars())
            hashes = (await connection.execute(text(
                "SELECT password_hash FROM users UNION ALL SELECT encode(token_hash, 'hex') FROM refresh_tokens "
                "UNION ALL SELECT encode(secret_hash, 'hex') FROM clients WHERE secret_hash IS NOT NULL"
            ))).scalars().all()
    finally:
        await engine.dispose()
    assert "login.succeeded" in stored and len(hashes) >= 3  # the scan sees the rows
    logged = "\n".join(str(vars(record)) for record in caplog.records if record.name == "service.audit")
    assert "login.failed" in logged
    digests = [hashlib.sha256(secret.encode()).hexdigest() for secret in flow["secrets"]]
    for needle in [*flow["secrets"], *digests, *hashes, *flow["personal"]]:
        assert needle.lower() not in stored.lower(), needle
        assert needle.lower() not in logged.lower(), needle


async def test_tries_of_an_unknown_name_group_by_a_keyed_hash_not_the_name(
    running_app: Any, stack: Stack, keys_dir: Any
) -> None:
    key = "k" * 40
    async with running_app(make_settings(stack, keys_dir, AUTH_AUDIT_KEY=key)) as app:
        full_width = "\uff2d\uff21\uff2c\uff2c\uff2f\uff32\uff39"  # MALLORY
        for name in ("Mallory", "mallory", full_width, "eve"):  # one name in every form logins compare
            response = await app.client.post("/api/v1/auth/token", data={"username": name, "password": PASSWORD})
            assert response.status_code == 401
        tried = [row.details["name_hash"] for row in await events(app)]
        same_key = audit.Log(app.resources.sessions, audit.root_key(app.resources.settings, app.resources.keys))
    assert tried[0] == tried[1] == tried[2] != tried[3]
    assert tried[0] == same_key.name_hash("mallory")
    assert tried[0] not in {hashlib.sha256(b"mallory").hexdigest()[:32], hashlib.md5(b"mallory").hexdigest()}  # noqa: S324
    other = make_settings(stack, keys_dir, AUTH_AUDIT_KEY="o" * 40)
    elsewhere = audit.Log(app.resources.sessions, audit.root_key(other, app.resources.keys))
    assert elsewhere.name_hash("mallory") != tried[0]  # only the key's holder can test a guess


async def test_an_event_is_stored_logged_and_counted_only_if_its_change_commits(
    app: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="service.audit")
    before = await scrape(app.client)
    with pytest.raises(RuntimeError):
        async with app.resources.sessions.begin() as db:
            await audit.record(db, audit.USER_DISABLED, actor=audit.CLI, subject=audit.Subject.user(uuid.uuid4()))
            raise RuntimeError("the change failed")
    unknown = await app.client.post("/api/v1/auth/refresh", json={"refresh_token": "x" * 43})
    assert unknown.status_code == 401  # a refused refresh changes nothing and records nothing
    assert await events(app) == []
    assert [r for r in caplog.records if r.name == "service.audit"] == []
    async with app.resources.sessions.begin() as db:  # the lifecycle flows' types, through the same API
        for kind in (audit.PASSWORD_CHANGED, audit.PASSWORD_RESET, audit.EMAIL_VERIFIED):
            await audit.record(db, kind, actor=audit.Actor.user(uuid.uuid4()), details={"via": "test"})
    after = await scrape(app.client)
    assert [row.type for row in await events(app)] == [audit.PASSWORD_CHANGED, audit.PASSWORD_RESET,
                                                        audit.EMAIL_VERIFIED]
    assert moved(before, after, "auth_audit_events_total", type=audit.USER_DISABLED) == 0
    assert moved(before, after, "auth_audit_events_total", type=audit.EMAIL_VERIFIED) == 1
    lines = [r for r in caplog.records if r.name == "service.audit"]
    assert [getattr(r, "event.type") for r in lines] == [audit.PASSWORD_CHANGED, audit.PASSWORD_RESET,
                                                         audit.EMAIL_VERIFIED]
    with pytest.raises(ValueError, match="may not carry"):
        audit.event(audit.USER_UPDATED, actor=audit.CLI, details={"new_password": "x"})
    with pytest.raises(ValueError, match="unknown"):
        audit.event("user.teleported", actor=audit.CLI)


async def test_each_event_is_a_log_line_with_event_fields(app: Running, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="service.audit")
    alice = await register(app.client)
    await login(app.client, alice)
    (line,) = [r for r in caplog.records if r.name == "service.audit"]
    fields = {key: value for key, value in vars(line).items() if key.startswith("event.")}
    assert fields["event.type"] == "login.succeeded" and fields["event.user_id"] == alice.id
    assert (fields["event.actor_type"], fields["event.actor_id"]) == ("user", alice.id)
    assert fields["event.subject_type"] == "session" and fields["event.client_ip"] == "127.0.0.1"
    assert dt.datetime.fromisoformat(fields["event.occurred_at"]).tzinfo is not None


async def test_failed_logins_are_stored_in_shared_inserts_and_none_is_lost(app: Running) -> None:
    rows = [audit.event(audit.LOGIN_FAILED, actor=audit.ANONYMOUS, details={"reason": "unknown_user"})
            for _ in range(200)]
    with counting_queries(app) as statements:
        await asyncio.gather(*(app.resources.audit.write(row) for row in rows))
    inserts = [s for s in statements if s.startswith("INSERT INTO audit_events")]
    assert len(await events(app)) == 200
    assert 1 <= len(inserts) <= 2, len(inserts)  # 200 events waiting together: one round trip, not 200
    storm = await asyncio.gather(*(
        app.client.post("/api/v1/auth/token", data={"username": f"nobody{i}", "password": PASSWORD})
        for i in range(40)
    ))
    assert {response.status_code for response in storm} == {401}
    assert len(await events(app)) == 240  # every refused login of the storm is in the log


async def test_a_failed_login_is_answered_only_once_its_event_is_stored(app: Running, stack: Stack) -> None:
    engine = create_async_engine(stack.admin_url)
    try:
        async with engine.connect() as holder, engine.connect() as watcher:
            await holder.execute(text("LOCK TABLE audit_events IN EXCLUSIVE MODE"))  # inserts wait; reads do not
            attempt = asyncio.create_task(
                app.client.post("/api/v1/auth/token", data={"username": "nobody", "password": PASSWORD})
            )

            async def insert_waits() -> bool:
                waiting = await watcher.execute(text(
                    "SELECT count(*) FROM pg_locks WHERE relation = 'audit_events'::regclass AND NOT granted"
                ))
                return bool(waiting.scalar())

            await eventually(insert_waits)
            assert not attempt.done()  # no 401 while its event is not stored
            await holder.commit()  # the lock goes
            response = await attempt
    finally:
        await engine.dispose()
    assert response.status_code == 401
    assert [row.type for row in await events(app)] == [audit.LOGIN_FAILED]


async def test_old_events_are_deleted_in_batches_and_recent_ones_kept(
    running_app: Any, stack: Stack, keys_dir: Any
) -> None:
    settings = make_settings(stack, keys_dir, AUTH_CLEANUP_BATCH_SIZE="10", AUTH_AUDIT_RETENTION="86400")
    now = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
    async with running_app(settings) as app:
        async with app.resources.sessions.begin() as db:
            await audit_queries.insert(db, [
                audit.event(audit.LOGIN_FAILED, actor=audit.ANONYMOUS, now=now - dt.timedelta(days=1, seconds=i + 1))
                for i in range(25)
            ] + [audit.event(audit.LOGOUT, actor=audit.ANONYMOUS, now=now - dt.timedelta(hours=23)) for _ in range(5)])
        with counting_queries(app) as statements:
            counts = await cleanup.run_once(app.resources.sessions, settings, now)
        deletes = [s for s in statements if s.startswith("DELETE FROM audit_events")]
        remaining = await events(app)
    assert counts.audit_events == 25
    assert len(deletes) == 3  # 10 + 10 + 5: each its own short transaction
    assert [row.type for row in remaining] == [audit.LOGOUT] * 5


async def test_admin_requests_and_audit_events_are_counted(running_app: Any, stack: Stack, keys_dir: Any) -> None:
    settings = make_settings(stack, keys_dir, AUTH_BOOTSTRAP_CLIENT_SECRET=ADMIN_SECRET)
    async with running_app(settings) as app:
        admin = await as_admin(app)
        alice = await register(app.client)
        before = await scrape(app.client)
        await login(app.client, alice)
        await admin.ok("GET", f"{USERS}/{alice.id}")
        assert (await admin.call("GET", f"{USERS}/{uuid.uuid4()}")).status_code == 404
        await admin.ok("GET", AUDIT)
        after = await scrape(app.client)
    route = "/admin/v1/users/{user_id}"
    count = "http_server_request_duration_seconds_count"
    assert moved(before, after, count, **requests(route, "GET", 200)) == 1
    assert moved(before, after, count, **requests(route, "GET", 404)) == 1
    assert moved(before, after, "auth_audit_events_total", type="login.succeeded") == 1


async def test_a_client_that_revokes_its_users_token_is_the_actor(running_app: Any, admin_settings: Settings) -> None:
    async with running_app(admin_settings) as app:
        admin = await as_admin(app)
        web = await admin.ok("POST", CLIENTS, 201, json={"name": "web", "grant_types": ["password", "refresh_token"],
                                                         "scope": "profile"})
        alice = await register(app.client)
        auth = basic(web["client_id"], web["client_secret"])
        pair = (await app.client.post("/oauth2/token", headers=auth, data={
            "grant_type": "password", "username": "alice", "password": PASSWORD})).json()
        revoked = await app.client.post("/oauth2/revoke", headers=auth, data={"token": pair["refresh_token"]})
        assert revoked.status_code == 200
        rows = await events(app)
    logged_in = [row for row in rows if row.type == audit.LOGIN_SUCCEEDED]
    out = [row for row in rows if row.type == audit.LOGOUT]
    assert [(row.actor_type, row.actor_id, row.client_id) for row in logged_in] == [
        ("user", alice.id, web["client_id"])]
    assert [(row.actor_type, row.actor_id, row.client_id, str(row.user_id)) for row in out] == [
        ("client", web["client_id"], web["client_id"], alice.id)]


@pytest.fixture
def admin_settings(stack: Stack, keys_dir: Any) -> Settings:
    return make_settings(stack, keys_dir, AUTH_BOOTSTRAP_CLIENT_SECRET=ADMIN_SECRET)

