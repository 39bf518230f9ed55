"""Account lifecycle end to end: mails go through a real SMTP server, links are read from them.

PostgreSQL behind PgBouncer and Redis, as in production; bcrypt at cost 4.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from devtools.polling import wait_for
from devtools.stack import Stack
from tests.service.conftest import (
    PASSWORD,
    Account,
    Running,
    bearer,
    login,
    mail_settings,
    register,
)
from tests.service.mailbox import Mailbox, text_of, token_in

pytestmark = pytest.mark.anyio
API = "/api/v1/auth"
NEW_PASSWORD = "a brand new passphrase"


async def sql(stack: Stack, statement: str, **params: Any) -> list[Any]:
    engine = create_async_engine(stack.admin_url)
    try:
        async with engine.begin() as connection:
            result = await connection.execute(text(statement), params)
            return list(result) if result.returns_rows else []
    finally:
        await engine.dispose()


@pytest.fixture
async def app(running_app: Any, stack: Stack, keys_dir: Path, mailbox: Mailbox) -> AsyncIterator[Running]:
    async with running_app(mail_settings(stack, keys_dir, mailbox.url)) as started:
        yield started


async def me(client: httpx.AsyncClient, access: str) -> httpx.Response:
    return await client.get(f"{API}/me", headers=bearer(access))


async def refresh(client: httpx.AsyncClient, pair: dict[str, Any]) -> httpx.Response:
    return await client.post(f"{API}/refresh", json={"refresh_token": pair["refresh_token"]})


async def reset_link(client: httpx.AsyncClient, mailbox: Mailbox, account: Account) -> str:
    before = len([m for m in mailbox.received(account.email) if "Reset" in str(m["Subject"])])
    response = await client.post(f"{API}/password-reset", json={"email": account.email})
    assert response.status_code == 202, response.text
    arrived = [m for m in await mailbox.wait_for_subject(account.email, "Reset", before + 1)]
    return token_in(arrived[-1])


async def test_registration_mails_a_link_that_verifies_the_address_once(
    app: Running, mailbox: Mailbox
) -> None:
    client = app.client
    alice = await register(client)
    pair = await login(client, alice)
    assert (await me(client, pair["access_token"])).json()["email_verified"] is False

    [mail] = await mailbox.wait_for(1, alice.email)
    assert mail["Subject"] == "Confirm your email address"
    assert mail["Message-ID"] and mail["From"]
    token = token_in(mail)
    assert (await client.post(f"{API}/verify-email", json={"token": token})).status_code == 204
    assert (await me(client, pair["access_token"])).json()["email_verified"] is True  # at once: cache forgotten
    introspected = await client.post(
        f"{API}/introspect", data={"token": pair["access_token"]}, headers=bearer("introspection-secret")
    )
    assert introspected.json()["email_verified"] is True

    again = await client.post(f"{API}/verify-email", json={"token": token})
    assert (again.status_code, again.json()["error"]) == (404, "invalid_token")


async def test_a_verification_link_past_its_expiry_or_superseded_is_refused(
    app: Running, mailbox: Mailbox, stack: Stack
) -> None:
    client = app.client
    alice = await register(client)
    pair = await login(client, alice)
    [first] = await mailbox.wait_for(1, alice.email)
    resent = await client.post(f"{API}/verify-email/resend", headers=bearer(pair["access_token"]))
    assert resent.status_code == 202
    _, second = await mailbox.wait_for(2, alice.email)
    old = await client.post(f"{API}/verify-email", json={"token": token_in(first)})
    assert (old.status_code, old.json()["error"]) == (404, "invalid_token")  # the newer link wins

    await sql(stack, "UPDATE account_tokens SET expires_at = now() - interval '1 second'")
    expired = await client.post(f"{API}/verify-email", json={"token": token_in(second)})
    assert expired.status_code == 404
    assert (await me(client, pair["access_token"])).json()["email_verified"] is False


async def test_a_reset_link_sets_the_password_once_and_ends_every_session(
    app: Running, mailbox: Mailbox
) -> None:
    client = app.client
    alice = await register(client)
    first, second = await login(client, alice), await login(client, alice)
    token = await reset_link(client, mailbox, alice)

    confirmed = await client.post(f"{API}/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD})
    assert confirmed.status_code == 204, confirmed.text
    for pair in (first, second):
        assert (await me(client, pair["access_token"])).status_code == 401  # at once, by the revoked list
        assert (await refresh(client, pair)).status_code == 401
    old = await client.post(f"{API}/token", data={"username": alice.username, "password": PASSWORD})
    assert old.status_code == 401
    await login(client, Account(alice.username, alice.email, NEW_PASSWORD, alice.id))

    again = await client.post(f"{API}/password-reset/confirm", json={"token": token, "new_password": "yet another one"})
    assert (again.status_code, again.json()["error"]) == (404, "invalid_token")


async def test_only_the_newest_reset_link_works(app: Running, mailbox: Mailbox) -> None:
    client = app.client
    alice = await register(client)
    older = await reset_link(client, mailbox, alice)
    newer = await reset_link(client, mailbox, alice)
    refused = await client.post(f"{API}/password-reset/confirm", json={"token": older, "new_password": NEW_PASSWORD})
    assert refused.status_code == 404
    accepted = await client.post(f"{API}/password-reset/confirm", json={"token": newer, "new_password": NEW_PASSWORD})
    assert accepted.status_code == 204


async def test_a_reset_link_past_its_expiry_is_refused_and_changes_nothing(
    app: Running, mailbox: Mailbox, stack: Stack
) -> None:
    client = app.client
    alice = await register(client)
    pair = await login(client, alice)
    token = await reset_link(client, mailbox, alice)
    await sql(stack, "UPDATE account_tokens SET expires_at = now() - interval '1 second' WHERE purpose = 'reset'")
    expired = await client.post(f"{API}/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD})
    assert (expired.status_code, expired.json()["error"]) == (404, "invalid_token")
    assert (await me(client, pair["access_token"])).status_code == 200
    await login(client, alice)


async def test_a_reset_for_an_unknown_address_answers_the_same_and_mails_nobody(
    app: Running, mailbox: Mailbox, stack: Stack
) -> None:
    client = app.client
    alice = await register(client)
    await mailbox.wait_for(1, alice.email)  # the verification mail
    known = await client.post(f"{API}/password-reset", json={"email": alice.email})
    unknown = await client.post(f"{API}/password-reset", json={"email": "nobody@example.com"})
    assert (known.status_code, known.json()) == (unknown.status_code, unknown.json())
    await mailbox.wait_for(2, alice.email)

    async def drained() -> bool:
        return not await sql(stack, "SELECT 1 FROM mails WHERE status = 'queued'")

    await wait_for(drained, limit=10, interval=0.02)
    assert mailbox.received("nobody@example.com") == []
    assert await sql(stack, "SELECT 1 FROM mails WHERE recipient = 'nobody@example.com'") == []


async def test_changing_the_password_ends_every_other_session_and_keeps_the_callers(app: Running) -> None:
    client = app.client
    alice = await register(client)
    mine, other = await login(client, alice), await login(client, alice)
    changed = await client.post(
        f"{API}/password", headers=bearer(mine["access_token"]),
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert changed.status_code == 204, changed.text
    assert (await me(client, other["access_token"])).status_code == 401  # at once
    assert (await refresh(client, other)).status_code == 401
    assert (await me(client, mine["access_token"])).status_code == 200
    assert (await refresh(client, mine)).status_code == 200
    await login(client, Account(alice.username, alice.email, NEW_PASSWORD, alice.id))


async def test_a_wrong_current_password_or_a_weak_new_one_changes_nothing(app: Running) -> None:
    client = app.client
    alice = await register(client)
    mine, other = await login(client, alice), await login(client, alice)
    wrong = await client.post(
        f"{API}/password", headers=bearer(mine["access_token"]),
        json={"current_password": "not my password", "new_password": NEW_PASSWORD},
    )
    assert (wrong.status_code, wrong.json()["error"]) == (403, "wrong_password")
    weak = await client.post(
        f"{API}/password", headers=bearer(mine["access_token"]),
        json={"current_password": PASSWORD, "new_password": "password1"},
    )
    assert (weak.status_code, weak.json()["error"]) == (422, "weak_password")
    assert (await me(client, other["access_token"])).status_code == 200
    await login(client, alice)


async def test_a_user_sees_their_sessions_and_ends_one_but_not_someone_elses(app: Running) -> None:
    client = app.client
    alice, bob = await register(client), await register(client, "bob")
    mine = await login(client, alice)
    other = (await client.post(
        f"{API}/token", data={"username": "alice", "password": PASSWORD}, headers={"user-agent": "phone/1.0"}
    )).json()
    bobs = await login(client, bob)

    listed = await client.get(f"{API}/sessions", headers=bearer(mine["access_token"]))
    assert listed.status_code == 200
    sessions = listed.json()["sessions"]
    assert len(sessions) == 2
    [current] = [s for s in sessions if s["current"]]
    [phone] = [s for s in sessions if not s["current"]]
    assert phone["user_agent"] == "phone/1.0" and phone["client_ip"] == "127.0.0.1"
    assert {"id", "created_at", "last_used_at", "expires_at"} <= set(phone)

    bob_sid = (await client.get(f"{API}/sessions", headers=bearer(bobs["access_token"]))).json()["sessions"][0]["id"]
    foreign = await client.delete(f"{API}/sessions/{bob_sid}", headers=bearer(mine["access_token"]))
    assert (foreign.status_code, foreign.json()["error"]) == (404, "not_found")
    assert (await me(client, bobs["access_token"])).status_code == 200

    ended = await client.delete(f"{API}/sessions/{phone['id']}", headers=bearer(mine["access_token"]))
    assert ended.status_code == 204
    assert (await me(client, other["access_token"])).status_code == 401
    assert (await refresh(client, other)).status_code == 401
    remaining = (await client.get(f"{API}/sessions", headers=bearer(mine["access_token"]))).json()["sessions"]
    assert [s["id"] for s in remaining] == [current["id"]]


async def test_an_unverified_user_may_not_log_in_when_verification_is_required(
    running_app: Any, stack: Stack, keys_dir: Path, mailbox: Mailbox
) -> None:
    settings = mail_settings(stack, keys_dir, mailbox.url, AUTH_REQUIRE_VERIFIED_EMAIL="true")
    async with running_app(settings) as app:
        client = app.client
        alice = await register(client)
        refused = await client.post(f"{API}/token", data={"username": "alice", "password": PASSWORD})
        assert (refused.status_code, refused.json()["error"]) == (403, "email_not_verified")
        wrong = await client.post(f"{API}/token", data={"username": "alice", "password": "wrong password"})
        assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_credentials")  # nothing told
        [mail] = await mailbox.wait_for(1, alice.email)
        assert (await client.post(f"{API}/verify-email", json={"token": token_in(mail)})).status_code == 204
        await login(client, alice)


async def test_enumeration_safe_registration_answers_alike_and_mails_the_address(
    running_app: Any, stack: Stack, keys_dir: Path, mailbox: Mailbox
) -> None:
    settings = mail_settings(stack, keys_dir, mailbox.url, AUTH_REGISTRATION_ENUMERATION_SAFE="true")
    async with running_app(settings) as app:
        client: httpx.AsyncClient = app.client

        async def attempt(username: str, email: str) -> httpx.Response:
            body = {"username": username, "email": email, "password": PASSWORD}
            response: httpx.Response = await client.post(f"{API}/register", json=body)
            return response

        new = await attempt("alice", "alice@example.com")
        taken_email = await attempt("alicia", "Alice@example.com")
        taken_name = await attempt("ALICE", "other@example.com")
        assert new.status_code == taken_email.status_code == taken_name.status_code == 202
        assert new.json() == taken_email.json() == taken_name.json()

        verify, exists = await mailbox.wait_for(2, "alice@example.com")
        assert verify["Subject"] == "Confirm your email address"
        assert exists["Subject"] == "You already have an account" and "alice" in text_of(exists)
        [name] = await mailbox.wait_for(1, "other@example.com")
        assert name["Subject"] == "That username is taken"
        assert [row.username for row in await sql(stack, "SELECT username FROM users")] == ["alice"]
        await login(client, Account("alice", "alice@example.com", PASSWORD, ""))


@pytest.mark.parametrize("password", ["password123", "Dragon12", "qwertyuiop", "AliceWonder", "alice@example.com"])
async def test_common_and_contextual_passwords_are_refused_at_registration(
    client: httpx.AsyncClient, password: str
) -> None:
    response = await client.post(
        f"{API}/register", json={"username": "alicewonder", "email": "alice@example.com", "password": password}
    )
    assert (response.status_code, response.json()["error"]) == (422, "weak_password")
    login_attempt = await client.post(f"{API}/token", data={"username": "alicewonder", "password": password})
    assert login_attempt.status_code == 401  # nothing was created


async def test_the_blocklist_can_be_turned_off(
    running_app: Any, stack: Stack, keys_dir: Path, mailbox: Mailbox
) -> None:
    async with running_app(mail_settings(stack, keys_dir, mailbox.url, AUTH_PASSWORD_BLOCKLIST="false")) as app:
        response = await app.client.post(
            f"{API}/register", json={"username": "alice", "email": "a@example.com", "password": "password123"}
        )
        assert response.status_code == 201


async def test_a_password_shorter_than_the_configured_minimum_is_refused(
    running_app: Any, stack: Stack, keys_dir: Path, mailbox: Mailbox
) -> None:
    async with running_app(mail_settings(stack, keys_dir, mailbox.url, AUTH_PASSWORD_MIN_LENGTH="15")) as app:
        short = await app.client.post(
            f"{API}/register", json={"username": "alice", "email": "a@example.com", "password": "fourteen chars"}
        )
        assert (short.status_code, short.json()["error"]) == (422, "weak_password")
        assert "15" in short.json()["detail"]


async def test_a_wrong_current_password_backs_off_the_account_like_a_failed_login(
    running_app: Any, stack: Stack, keys_dir: Path, mailbox: Mailbox
) -> None:
    async with running_app(mail_settings(stack, keys_dir, mailbox.url, AUTH_RATE_LIMIT_ENABLED="true")) as app:
        client = app.client
        alice = await register(client)
        pair = await login(client, alice)
        change = {"current_password": "a guessed password", "new_password": NEW_PASSWORD}
        wrong = await client.post(f"{API}/password", headers=bearer(pair["access_token"]), json=change)
        assert wrong.status_code == 403
        # one budget and one backoff per account: the guess slows the next login too, and the next guess
        again = await client.post(f"{API}/token", data={"username": alice.username, "password": PASSWORD})
        assert (again.status_code, again.json()["error"]) == (429, "rate_limited")
        guess = await client.post(f"{API}/password", headers=bearer(pair["access_token"]), json=change)
        assert guess.status_code == 429
