"""The admin API against PostgreSQL and Redis: who may call it, user search and keyset pages, disabling and
erasing users (refused at once on another replica), sessions, clients, the audit query, and bad input."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from service.config import Settings
from service.db import users
from tests.service.conftest import (
    PASSWORD,
    Running,
    bearer,
    login,
    make_settings,
    register,
)
from tests.service.test_revocation import active, me, warm
from tests.stack import Stack

pytestmark = pytest.mark.anyio
ADMIN_SECRET = "bootstrap-secret-of-the-admin-tests-0123456789"
USERS, CLIENTS, AUDIT = "/admin/v1/users", "/admin/v1/clients", "/admin/v1/audit"


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


async def client_token(client: httpx.AsyncClient, client_id: str, secret: str, **form: str) -> str:
    response = await client.post(
        "/oauth2/token", data={"grant_type": "client_credentials", **form}, headers=basic(client_id, secret)
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


@dataclasses.dataclass
class Admin:
    app: Running
    headers: dict[str, str]

    @property
    def client(self) -> httpx.AsyncClient:
        return self.app.client

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self.client.request(method, path, headers={**self.headers, **kwargs.pop("headers", {})},
                                         **kwargs)

    async def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        response = await self.call(method, path, **kwargs)
        assert response.status_code == status, response.text
        return response.json() if response.content else None


@pytest.fixture
def admin_settings(stack: Stack, keys_dir: Any) -> Settings:
    return make_settings(stack, keys_dir, AUTH_BOOTSTRAP_CLIENT_SECRET=ADMIN_SECRET)


async def as_admin(app: Running) -> Admin:
    return Admin(app, bearer(await client_token(app.client, "bootstrap", ADMIN_SECRET)))


@pytest.fixture
async def admin(running_app: Any, admin_settings: Settings) -> AsyncIterator[Admin]:
    async with running_app(admin_settings) as app:
        yield await as_admin(app)


async def add_users(app: Running, names: list[str], *, active: bool = True) -> dict[str, uuid.UUID]:
    """Users written directly (no bcrypt): name → id."""
    now = dt.datetime.now(dt.UTC)
    made = {}
    async with app.resources.sessions.begin() as db:
        for name in names:
            email = f"{name.lower()}@example.com"
            user = await users.create(db, username=name, email=email, password_hash="x", now=now)
            user.is_active = active
            made[name] = user.id
    return made


ADMIN_ROUTES = [
    ("GET", USERS), ("GET", f"{USERS}/{{uid}}"), ("PATCH", f"{USERS}/{{uid}}"), ("DELETE", f"{USERS}/{{uid}}"),
    ("POST", f"{USERS}/{{uid}}/password-reset"), ("GET", f"{USERS}/{{uid}}/sessions"),
    ("DELETE", f"{USERS}/{{uid}}/sessions"), ("DELETE", f"{USERS}/{{uid}}/sessions/{{uid}}"),
    ("GET", CLIENTS), ("POST", CLIENTS), ("GET", f"{CLIENTS}/x"), ("PATCH", f"{CLIENTS}/x"),
    ("DELETE", f"{CLIENTS}/x"), ("GET", AUDIT),
]


# -- who may call ---------------------------------------------------------------------------------------


async def test_no_token_is_401_a_users_token_or_one_without_the_admin_scope_403(admin: Admin) -> None:
    alice = await register(admin.client)
    user_token = (await login(admin.client, alice))["access_token"]
    reader = await admin.ok("POST", CLIENTS, 201, json={
        "name": "reader", "grant_types": ["client_credentials"], "scope": "orders:read"})
    reader_token = await client_token(admin.client, reader["client_id"], reader["client_secret"])
    uid = alice.id
    for method, template in ADMIN_ROUTES:
        path = template.format(uid=uid)
        anonymous = await admin.client.request(method, path)
        assert (anonymous.status_code, anonymous.json()["error"]) == (401, "unauthorized"), (method, path)
        assert anonymous.headers["www-authenticate"] == "Bearer"
        forged = await admin.client.request(method, path, headers=bearer("not.a.token"))
        assert (forged.status_code, forged.json()["error"]) == (401, "invalid_token"), (method, path)
        for token in (user_token, reader_token):
            refused = await admin.client.request(method, path, headers=bearer(token), json={})
            assert (refused.status_code, refused.json()["error"]) == (403, "insufficient_scope"), (method, path)
    assert (await admin.client.get(f"{USERS}/{uid}", headers=bearer(user_token))).status_code == 403
    assert (await admin.call("GET", f"{USERS}/{uid}")).status_code == 200  # and the bootstrap client may


async def test_a_registered_admin_client_works_until_it_is_disabled(admin: Admin) -> None:
    ops = await admin.ok("POST", CLIENTS, 201, json={
        "name": "ops automation", "grant_types": ["client_credentials"], "scope": "admin"})
    token = await client_token(admin.client, ops["client_id"], ops["client_secret"])
    assert (await admin.client.get(USERS, headers=bearer(token))).status_code == 200
    await admin.ok("DELETE", f"{CLIENTS}/{ops['client_id']}", 204)
    refused = await admin.client.get(USERS, headers=bearer(token))  # a live token of a disabled client
    assert (refused.status_code, refused.json()["error"]) == (401, "invalid_token")


async def test_a_client_token_for_another_audience_is_refused(admin: Admin) -> None:
    other = await admin.ok("POST", CLIENTS, 201, json={
        "name": "elsewhere", "grant_types": ["client_credentials"], "scope": "admin",
        "audiences": ["https://orders.example.com"]})
    token = await client_token(admin.client, other["client_id"], other["client_secret"])
    assert (await admin.client.get(USERS, headers=bearer(token))).status_code == 401


async def test_admin_answers_are_never_cached(admin: Admin) -> None:
    response = await admin.call("GET", USERS)
    assert response.headers["cache-control"] == "no-store"


# -- users: search and pages ----------------------------------------------------------------------------


async def test_a_cursor_pages_through_every_user_exactly_once_while_users_are_added(admin: Admin) -> None:
    before = await add_users(admin.app, [f"user{i:03d}" for i in range(0, 120, 2)])
    seen: list[str] = []
    cursor: str | None = None
    added = 0
    while True:
        page = await admin.ok("GET", USERS, params={"limit": 7, **({"cursor": cursor} if cursor else {})})
        seen += [user["id"] for user in page["users"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        # between pages, new users land before and after the cursor (odd numbers interleave the even ones)
        await add_users(admin.app, [f"user{added:03d}x", f"user{119 - added:03d}x", f"a{added}", f"zz{added}"])
        added += 1
    assert len(seen) == len(set(seen))  # nothing twice
    assert set(map(str, before.values())) <= set(seen)  # every user that was there all along, once
    assert added >= 8


async def test_search_matches_username_or_email_prefixes_in_any_case(admin: Admin) -> None:
    made = await add_users(admin.app, ["alice", "Alicia", "bob", "carol"])
    async with admin.app.resources.sessions.begin() as db:
        await users.set_email(db, made["bob"], "AL.bob@Example.org", dt.datetime.now(dt.UTC))
        await users.set_active(db, made["carol"], active=False, now=dt.datetime.now(dt.UTC))

    async def names(**params: Any) -> list[str]:
        return [user["username"] for user in (await admin.ok("GET", USERS, params=params))["users"]]

    assert await names(q="ALI") == ["alice", "Alicia"]
    assert await names(q="al") == ["alice", "Alicia", "bob"]  # bob by his email
    assert await names(q="al.BOB@ex") == ["bob"]
    assert await names(q="alice@") == ["alice"]  # with an "@" only emails can match: not Alicia's
    assert await names(q="nobody") == []
    assert await names(active="false") == ["carol"]
    assert await names(active="true") == ["alice", "Alicia", "bob"]
    assert await names() == ["alice", "Alicia", "bob", "carol"]  # by lowered username
    found = (await admin.ok("GET", USERS, params={"q": "alice"}))["users"][0]
    assert set(found) == {"id", "username", "email", "is_active", "created_at", "updated_at"}


# -- users: disable, enable, delete, reset --------------------------------------------------------------


async def test_disabling_a_user_refuses_it_at_once_on_another_replica(
    running_app: Any, admin_settings: Settings
) -> None:
    async with running_app(admin_settings) as one, running_app(admin_settings) as two:
        alice = await register(one.client)
        pair = await login(one.client, alice)
        await warm(two, pair)  # replica two answers `me` from its cache
        admin = await as_admin(one)
        disabled = await admin.ok("PATCH", f"{USERS}/{alice.id}", json={"is_active": False})
        assert disabled["is_active"] is False
        assert await me(two, pair) == 401  # at once, on the other replica
        assert await active(two, pair) is False
        refresh = await two.client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert refresh.status_code == 401
        refused = await two.client.post("/api/v1/auth/token", data={"username": "alice", "password": PASSWORD})
        assert refused.status_code == 401
        assert (await admin.ok("GET", f"{USERS}/{alice.id}/sessions"))["sessions"] == []

        await admin.ok("PATCH", f"{USERS}/{alice.id}", json={"is_active": True})
        again = await login(two.client, alice)
        assert await me(one, again) == 200
        assert await me(two, pair) == 401  # the sessions that ended stay ended
        events = (await admin.ok("GET", AUDIT, params={"user_id": alice.id}))["events"]
        assert [e["type"] for e in events] == [
            "login.succeeded", "user.enabled", "login.failed", "user.disabled", "login.succeeded"]
        assert events[2]["details"] == {"reason": "inactive"}
        off = events[3]
        assert off["actor"] == {"type": "client", "id": "bootstrap"} and off["client_id"] == "bootstrap"
        assert off["details"] == {"sessions_ended": 1} and off["client_ip"] == "127.0.0.1"


async def test_deleting_a_user_erases_it_and_frees_its_name_and_email(admin: Admin) -> None:
    alice = await register(admin.client)
    pair = await login(admin.client, alice)
    await admin.ok("DELETE", f"{USERS}/{alice.id}", 204)
    assert (await admin.call("GET", f"{USERS}/{alice.id}")).status_code == 404
    assert await me(admin.app, pair) == 401
    refresh = await admin.client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refresh.status_code == 401
    async with admin.app.resources.sessions() as db:
        from sqlalchemy import text

        left = (await db.execute(text(
            "SELECT (SELECT count(*) FROM sessions WHERE user_id = :u), (SELECT count(*) FROM refresh_tokens)"
        ), {"u": uuid.UUID(alice.id)})).one()
        stored = "\n".join((await db.execute(text("SELECT t::text FROM audit_events t"))).scalars())
    assert tuple(left) == (0, 0)
    again = await register(admin.client)  # the same username and email
    assert again.id != alice.id
    events = (await admin.ok("GET", AUDIT, params={"user_id": alice.id}))["events"]
    assert [e["type"] for e in events] == ["user.deleted", "login.succeeded"]
    assert events[0]["subject"] == {"type": "user", "id": alice.id}
    assert alice.username not in stored and alice.email not in stored  # the id only, no personal data


async def test_a_password_reset_is_accepted_and_says_nothing(admin: Admin) -> None:
    alice = await register(admin.client)
    response = await admin.call("POST", f"{USERS}/{alice.id}/password-reset")
    assert (response.status_code, response.content) == (202, b"")
    (event,) = (await admin.ok("GET", AUDIT, params={"type": "password.reset_requested"}))["events"]
    assert event["user_id"] == alice.id and event["actor"]["id"] == "bootstrap"


async def test_an_email_change_is_validated_unique_and_seen_by_me_at_once(admin: Admin) -> None:
    alice, bob = await register(admin.client), await register(admin.client, "bob")
    pair = await login(admin.client, alice)
    await warm(admin.app, pair)
    changed = await admin.ok("PATCH", f"{USERS}/{alice.id}", json={"email": "Alice.New@Example.com"})
    assert changed["email"] == "Alice.New@example.com"  # normalised as at registration
    body = (await admin.client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))).json()
    assert body["email"] == "Alice.New@example.com"  # the cached answer was dropped
    taken = await admin.call("PATCH", f"{USERS}/{alice.id}", json={"email": bob.email.upper()})
    assert (taken.status_code, taken.json()["error"]) == (409, "email_taken")
    (event,) = (await admin.ok("GET", AUDIT, params={"type": "user.updated"}))["events"]
    assert event["details"] == {"fields": ["email"]}


# -- sessions -------------------------------------------------------------------------------------------


async def test_sessions_are_listed_and_ended_one_at_a_time_or_all(admin: Admin) -> None:
    alice, bob = await register(admin.client), await register(admin.client, "bob")
    pairs = [await login(admin.client, alice) for _ in range(3)]
    bobs = await login(admin.client, bob)
    path = f"{USERS}/{alice.id}/sessions"
    first = await admin.ok("GET", path, params={"limit": 2})
    rest = await admin.ok("GET", path, params={"limit": 2, "cursor": first["next_cursor"]})
    listed = [s["id"] for s in first["sessions"] + rest["sessions"]]
    assert len(set(listed)) == 3 and rest["next_cursor"] is None
    assert first["sessions"][0]["client_ip"] == "127.0.0.1"
    sid = json.loads(base64.urlsafe_b64decode(pairs[0]["access_token"].split(".")[1] + "=="))["sid"]
    await admin.ok("DELETE", f"{path}/{sid}", 204)
    await admin.ok("DELETE", f"{path}/{sid}", 204)  # already ended: idempotent
    bob_sid = json.loads(base64.urlsafe_b64decode(bobs["access_token"].split(".")[1] + "=="))["sid"]
    assert (await admin.call("DELETE", f"{path}/{bob_sid}")).status_code == 404  # not alice's
    assert [await me(admin.app, pair) for pair in pairs] == [401, 200, 200]
    await admin.ok("DELETE", path, 204)
    assert [await me(admin.app, pair) for pair in pairs] == [401, 401, 401]
    assert await me(admin.app, bobs) == 200
    ended = (await admin.ok("GET", AUDIT, params={"type": "session.ended"}))["events"]
    assert [(e["subject"]["type"], e["details"]) for e in ended] == [("user", {"sessions_ended": 2}), ("session", {})]
    assert ended[1]["subject"]["id"] == sid and ended[1]["user_id"] == alice.id


# -- clients --------------------------------------------------------------------------------------------


async def test_clients_are_registered_changed_rotated_and_disabled(admin: Admin) -> None:
    created = await admin.ok("POST", CLIENTS, 201, json={
        "name": "orders", "grant_types": ["client_credentials"], "scope": "orders:read",
        "audiences": ["https://orders.example.com"], "access_token_ttl": 600})
    client_id, secret = created["client_id"], created["client_secret"]
    assert secret and created["type"] == "confidential" and created["access_token_ttl"] == 600
    shown = await admin.ok("GET", f"{CLIENTS}/{client_id}")
    assert "client_secret" not in shown and shown["scope"] == "orders:read"
    assert client_id in [c["client_id"] for c in (await admin.ok("GET", CLIENTS))["clients"]]
    await client_token(admin.client, client_id, secret)

    changed = await admin.ok("PATCH", f"{CLIENTS}/{client_id}", json={"scope": "orders:read orders:write"})
    assert changed["scope"] == "orders:read orders:write" and "client_secret" not in changed
    await client_token(admin.client, client_id, secret, scope="orders:write")
    rotated = await admin.ok("PATCH", f"{CLIENTS}/{client_id}", json={"rotate_secret": True,
                                                                      "keep_previous_seconds": 0})
    new_secret = rotated["client_secret"]
    assert new_secret != secret and rotated["previous_secret_valid_until"]
    old = await admin.client.post("/oauth2/token", data={"grant_type": "client_credentials"},
                                  headers=basic(client_id, secret))
    assert old.status_code == 401
    await client_token(admin.client, client_id, new_secret)

    await admin.ok("DELETE", f"{CLIENTS}/{client_id}", 204)
    await admin.ok("DELETE", f"{CLIENTS}/{client_id}", 204)  # idempotent
    assert (await admin.ok("GET", f"{CLIENTS}/{client_id}"))["disabled_at"]
    refused = await admin.client.post("/oauth2/token", data={"grant_type": "client_credentials"},
                                      headers=basic(client_id, new_secret))
    assert refused.status_code == 401
    late = await admin.call("PATCH", f"{CLIENTS}/{client_id}", json={"name": "again"})
    assert late.status_code == 409

    public = await admin.ok("POST", CLIENTS, 201, json={
        "name": "web", "type": "public", "grant_types": ["password", "refresh_token"], "scope": "profile"})
    assert public["client_secret"] is None and public["type"] == "public"
    events = (await admin.ok("GET", AUDIT, params={"client_id": client_id}))["events"]
    assert [e["type"] for e in events] == [
        "client.disabled", "client.secret_rotated", "client.updated", "client.created"]
    assert all(e["actor"] == {"type": "client", "id": "bootstrap"} for e in events)
    assert events[2]["details"] == {"fields": ["scopes"]}


async def test_clients_are_paged_in_registration_order(admin: Admin) -> None:
    made = [(await admin.ok("POST", CLIENTS, 201, json={"name": f"c{i}", "grant_types": ["client_credentials"]}))
            ["client_id"] for i in range(5)]
    first = await admin.ok("GET", CLIENTS, params={"limit": 3})
    rest = await admin.ok("GET", CLIENTS, params={"limit": 3, "cursor": first["next_cursor"]})
    assert [c["client_id"] for c in first["clients"] + rest["clients"]] == made
    assert rest["next_cursor"] is None


# -- the audit query ------------------------------------------------------------------------------------


async def test_the_audit_log_answers_what_happened_to_a_user_and_what_a_client_did(admin: Admin) -> None:
    alice, bob = await register(admin.client), await register(admin.client, "bob")
    await login(admin.client, alice)
    await login(admin.client, bob)
    failed = await admin.client.post("/api/v1/auth/token", data={"username": "alice", "password": "wrong pass"})
    assert failed.status_code == 401
    middle = dt.datetime.now(dt.UTC)
    await admin.ok("PATCH", f"{USERS}/{bob.id}", json={"is_active": False})

    def kinds(page: dict[str, Any]) -> list[str]:
        return [event["type"] for event in page["events"]]

    assert kinds(await admin.ok("GET", AUDIT, params={"user_id": alice.id})) == ["login.failed", "login.succeeded"]
    assert kinds(await admin.ok("GET", AUDIT, params={"client_id": "bootstrap"})) == ["user.disabled"]
    assert kinds(await admin.ok("GET", AUDIT, params={"type": "login.succeeded"})) == ["login.succeeded"] * 2
    assert kinds(await admin.ok("GET", AUDIT, params={"since": middle.isoformat()})) == ["user.disabled"]
    assert kinds(await admin.ok("GET", AUDIT, params={"until": middle.isoformat().replace("+00:00", "Z")})) == [
        "login.failed", "login.succeeded", "login.succeeded"]
    everything = (await admin.ok("GET", AUDIT))["events"]
    paged, cursor = [], None
    while True:
        page = await admin.ok("GET", AUDIT, params={"limit": 1, **({"cursor": cursor} if cursor else {})})
        paged += page["events"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == everything and len(everything) == 4
    (miss,) = (await admin.ok("GET", AUDIT, params={"type": "login.failed"}))["events"]
    assert miss["details"] == {"reason": "wrong_password"} and miss["subject"] == {"type": "user", "id": alice.id}


# -- bad input ------------------------------------------------------------------------------------------


async def test_bad_input_is_a_4xx_json_answer_never_a_500(admin: Admin) -> None:
    alice, bob = await register(admin.client), await register(admin.client, "bob")
    users_cursor = (await admin.ok("GET", USERS, params={"limit": 1}))["next_cursor"]
    await login(admin.client, alice)
    await login(admin.client, alice)
    audit_cursor = (await admin.ok("GET", AUDIT, params={"limit": 1}))["next_cursor"]
    assert users_cursor and audit_cursor
    payload, _, mac = users_cursor.partition(".")
    forged = base64.urlsafe_b64encode(json.dumps(["zzz"]).encode()).decode().rstrip("=") + "." + mac
    unknown = uuid.uuid4()
    cases: list[tuple[str, str, dict[str, Any], int]] = [
        ("GET", USERS, {"params": {"limit": "0"}}, 422),
        ("GET", USERS, {"params": {"limit": "many"}}, 422),
        ("GET", USERS, {"params": {"limit": "501"}}, 422),
        ("GET", USERS, {"params": {"active": "maybe"}}, 422),
        ("GET", USERS, {"params": {"qq": "a"}}, 422),
        ("GET", USERS, {"params": [("q", "a"), ("q", "b")]}, 422),
        ("GET", USERS, {"params": {"q": "a\x00b"}}, 422),
        ("GET", USERS, {"params": {"q": "x" * 321}}, 422),
        ("GET", USERS, {"params": {"cursor": "garbage"}}, 400),
        ("GET", USERS, {"params": {"cursor": "!!!.???"}}, 400),
        ("GET", USERS, {"params": {"cursor": forged}}, 400),
        ("GET", USERS, {"params": {"cursor": payload + "." + mac[:-2]}}, 400),
        ("GET", USERS, {"params": {"cursor": audit_cursor}}, 400),  # another list's
        ("GET", USERS, {"params": {"cursor": users_cursor, "q": "a"}}, 400),  # another query's
        ("GET", USERS, {"params": {"cursor": "x" * 2000}}, 422),
        ("GET", f"{USERS}/not-a-uuid", {}, 404),
        ("GET", f"{USERS}/{unknown}", {}, 404),
        ("PATCH", f"{USERS}/{unknown}", {"json": {"is_active": False}}, 404),
        ("PATCH", f"{USERS}/{alice.id}", {"json": {"email_verified": True}}, 422),
        ("PATCH", f"{USERS}/{alice.id}", {"json": {"is_active": "no"}}, 422),
        ("PATCH", f"{USERS}/{alice.id}", {"json": {"email": "not an email"}}, 422),
        ("PATCH", f"{USERS}/{alice.id}", {"json": {"email": bob.email}}, 409),
        ("PATCH", f"{USERS}/{alice.id}", {"json": []}, 422),
        ("PATCH", f"{USERS}/{alice.id}", {"content": b"{", "headers": {"content-type": "application/json"}}, 422),
        ("PATCH", f"{USERS}/{alice.id}", {"content": b"\xff\xfe", "headers": {"content-type": "application/json"}},
         422),
        ("PATCH", f"{USERS}/{alice.id}", {"data": {"is_active": "false"}}, 415),
        ("PATCH", f"{USERS}/{alice.id}", {}, 415),
        ("DELETE", f"{USERS}/{unknown}", {}, 404),
        ("POST", f"{USERS}/{unknown}/password-reset", {}, 404),
        ("GET", f"{USERS}/{unknown}/sessions", {}, 404),
        ("GET", f"{USERS}/{alice.id}/sessions", {"params": {"cursor": users_cursor}}, 400),
        ("DELETE", f"{USERS}/{unknown}/sessions", {}, 404),
        ("DELETE", f"{USERS}/{alice.id}/sessions/nope", {}, 404),
        ("DELETE", f"{USERS}/{alice.id}/sessions/{unknown}", {}, 404),
        ("GET", f"{CLIENTS}/nope", {}, 404),
        ("GET", f"{CLIENTS}/{'x' * 300}", {}, 404),
        ("GET", f"{CLIENTS}/bootstrap", {}, 404),  # built-in: configured by settings, not here
        ("GET", CLIENTS, {"params": {"cursor": users_cursor}}, 400),
        ("POST", CLIENTS, {"json": {}}, 422),
        ("POST", CLIENTS, {"json": {"name": "x", "grant_types": ["magic"]}}, 422),
        ("POST", CLIENTS, {"json": {"name": "x", "grant_types": []}}, 422),
        ("POST", CLIENTS, {"json": {"name": "", "grant_types": ["password"]}}, 422),
        ("POST", CLIENTS, {"json": {"name": "x", "grant_types": ["client_credentials"], "type": "public"}}, 422),
        ("POST", CLIENTS, {"json": {"name": "x", "grant_types": ["password"], "scope": 'a"b'}}, 422),
        ("POST", CLIENTS, {"json": {"name": "x", "grant_types": ["password"], "audiences": ["a b"]}}, 422),
        ("POST", CLIENTS, {"json": {"name": "x", "grant_types": ["password"], "access_token_ttl": 5}}, 422),
        ("PATCH", f"{CLIENTS}/nope", {"json": {"name": "y"}}, 404),
        ("DELETE", f"{CLIENTS}/nope", {}, 404),
        ("GET", AUDIT, {"params": {"user_id": "xyz"}}, 422),
        ("GET", AUDIT, {"params": {"type": "bogus"}}, 422),
        ("GET", AUDIT, {"params": {"since": "yesterday"}}, 422),
        ("GET", AUDIT, {"params": {"since": "2026-01-01T00:00:00"}}, 422),  # no zone
        ("GET", AUDIT, {"params": {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}}, 422),
        ("GET", AUDIT, {"params": {"client_id": "x" * 65}}, 422),
        ("GET", AUDIT, {"params": {"cursor": audit_cursor, "type": "logout"}}, 400),
        ("GET", AUDIT, {"params": {"cursor": users_cursor}}, 400),
        ("PUT", USERS, {}, 405),
        ("GET", "/admin/v1/nothing", {}, 404),
    ]
    for method, path, kwargs, status in cases:
        response = await admin.call(method, path, **kwargs)
        assert response.status_code == status, (method, path, kwargs, response.text)
        body = response.json()
        assert set(body) == {"error", "error_description", "detail"} and body["detail"], body
    assert (await admin.ok("GET", f"{USERS}/{alice.id}"))["is_active"] is True  # nothing was half-written


async def test_every_status_an_admin_route_answers_is_documented(admin: Admin) -> None:
    from starlette.routing import Match

    from service.routes import admin as admin_routes

    document = (await admin.client.get("/openapi.json")).json()["paths"]
    alice = await register(admin.client)
    sid = json.loads(base64.urlsafe_b64decode((await login(admin.client, alice))["access_token"].split(".")[1] + "=="))[
        "sid"]
    client = await admin.ok("POST", CLIENTS, 201, json={"name": "c", "grant_types": ["client_credentials"]})
    cid, unknown = client["client_id"], uuid.uuid4()
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", USERS, {}), ("GET", USERS, {"params": {"limit": "0"}}), ("GET", USERS, {"params": {"cursor": "x"}}),
        ("GET", f"{USERS}/{alice.id}", {}), ("GET", f"{USERS}/{unknown}", {}),
        ("PATCH", f"{USERS}/{alice.id}", {"json": {"email": "a2@example.com"}}),
        ("PATCH", f"{USERS}/{alice.id}", {"json": {"x": 1}}), ("PATCH", f"{USERS}/{alice.id}", {"data": {"x": 1}}),
        ("POST", f"{USERS}/{alice.id}/password-reset", {}), ("GET", f"{USERS}/{alice.id}/sessions", {}),
        ("DELETE", f"{USERS}/{alice.id}/sessions/{sid}", {}), ("DELETE", f"{USERS}/{alice.id}/sessions", {}),
        ("GET", CLIENTS, {}), ("POST", CLIENTS, {"json": {}}), ("GET", f"{CLIENTS}/{cid}", {}),
        ("PATCH", f"{CLIENTS}/{cid}", {"json": {"rotate_secret": True}}), ("DELETE", f"{CLIENTS}/{cid}", {}),
        ("PATCH", f"{CLIENTS}/{cid}", {"json": {"name": "late"}}), ("GET", AUDIT, {}),
        ("DELETE", f"{USERS}/{alice.id}", {}), ("DELETE", f"{USERS}/{alice.id}", {}),
    ]
    calls += [(method, path, {"headers": {"Authorization": ""}}) for method, path, _ in calls[:3]]
    for method, path, kwargs in calls:
        status = (await admin.call(method, path, **kwargs)).status_code
        scope = {"type": "http", "path": path, "method": method}
        (route,) = [r for r in admin_routes.ROUTES if r.matches(scope)[0] == Match.FULL]
        documented = document[route.path][method.lower()]["responses"]
        assert str(status) in documented, (method, route.path, status)
