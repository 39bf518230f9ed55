"""Per-account login limits against real Redis: one budget and one backoff per account, whichever
of its names is typed, in whatever case or Unicode form, from whichever IP; unknown names alike."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.stack import Stack
from service.db import users
from tests.service.conftest import PASSWORD, Running, counting_queries, make_settings, register
from tests.service.test_redis import counting_hashes

pytestmark = pytest.mark.anyio
TOKEN = "/api/v1/auth/token"
# distinct strings, one account: name, email, full-width upper case, full-width email with a full-width "@"
ALICE = ["alice", "alice@example.com", "\uff21\uff2c\uff29\uff23\uff25", "\uff41lice\uff20example.com"]
NOBODY = ["nobody", "NOBODY", "\uff4eobody", "\uff2eOBODY"]  # an unknown name, the same way


def limited(stack: Stack, keys_dir: Path, **overrides: str) -> Any:
    return make_settings(
        stack, keys_dir, AUTH_RATE_LIMIT_ENABLED="true", AUTH_TRUSTED_PROXIES="127.0.0.0/8", **overrides
    )


async def attempt(app: Running, username: str, password: str, ip: str) -> tuple[int, str]:
    response = await app.client.post(
        TOKEN, data={"username": username, "password": password}, headers={"X-Forwarded-For": ip}
    )
    return response.status_code, response.headers.get("retry-after", "")


@pytest.fixture
def no_hashes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    with counting_hashes(monkeypatch) as calls:
        yield calls


def test_a_name_folds_case_width_and_compatibility_forms() -> None:
    assert {users.fold(name) for name in ALICE[::2]} == {"alice"}
    assert users.fold("Stra\u00dfe") == "strasse"  # case folding, not lower(): ß is ss
    assert {users.fold(name) for name in NOBODY} == {"nobody"}


async def test_every_form_of_a_name_or_email_logs_in_to_its_account(app: Running) -> None:
    await register(app.client)
    for name in [*ALICE, "ALICE@Example.COM"]:
        response = await app.client.post(TOKEN, data={"username": name, "password": PASSWORD})
        assert response.status_code == 200, name


async def test_an_email_matching_exactly_wins_over_one_matching_only_once_folded(app: Running) -> None:
    await register(app.client, "strasse")  # strasse@example.com
    body = {"username": "strasze", "email": "stra\u00dfe@example.com", "password": PASSWORD}
    assert (await app.client.post("/api/v1/auth/register", json=body)).status_code == 201
    for typed, expected in [("stra\u00dfe@example.com", "strasze"), ("STRASSE@example.com", "strasse")]:
        pair = (await app.client.post(TOKEN, data={"username": typed, "password": PASSWORD})).json()
        me = await app.client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
        assert me.json()["username"] == expected, typed


async def test_one_budget_per_account_whichever_form_is_typed_from_whichever_ip(
    running_app: Any, stack: Stack, keys_dir: Path
) -> None:
    """The audit's case: from 200 IPs, `victim` and `victim@example.com` each got the budget of 3."""
    settings = limited(stack, keys_dir, AUTH_RATE_LIMIT_TOKEN_PER_USER="3/minute", AUTH_LOGIN_BACKOFF_BASE="0")
    async with running_app(settings) as app:
        await register(app.client)
        answers = {}
        for who, names in (("known", ALICE), ("unknown", NOBODY)):
            guesses = [await attempt(app, name, "wrong password", f"203.0.113.{i}") for i, name in enumerate(names[:3])]
            last = await attempt(app, names[3], PASSWORD, "198.51.100.9")  # even the right password waits
            answers[who] = [status for status, _ in [*guesses, last]]
        assert answers["known"] == answers["unknown"] == [401, 401, 401, 429]


async def test_one_backoff_per_account_whichever_form_is_typed_and_unknown_names_back_off_alike(
    running_app: Any, stack: Stack, keys_dir: Path, no_hashes: list[str]
) -> None:
    async with running_app(limited(stack, keys_dir, AUTH_LOGIN_BACKOFF_BASE="30")) as app:
        await register(app.client)
        answers, lookups = {}, {}
        for who, names in (("known", ALICE), ("unknown", NOBODY)):
            assert (await attempt(app, names[0], "wrong password", "203.0.113.1"))[0] == 401
            no_hashes.clear()
            with counting_queries(app) as queries:
                # the right password, typed another way, from other IPs: the account is waiting
                answers[who] = [await attempt(app, n, PASSWORD, f"198.51.100.{i}") for i, n in enumerate(names[1:])]
            assert no_hashes == []  # refused before any bcrypt
            lookups[who] = len(queries)  # the one lookup each, known or not
        for who in ("known", "unknown"):  # the wait counts down from 30 s while the test runs
            assert [(status, 20 < int(wait) <= 30) for status, wait in answers[who]] == [(429, True)] * 3, answers
        assert lookups["known"] == lookups["unknown"] == 3


async def test_a_name_hammered_as_typed_is_refused_before_its_query_known_or_not(
    running_app: Any, stack: Stack, keys_dir: Path, no_hashes: list[str]
) -> None:
    settings = limited(stack, keys_dir, AUTH_RATE_LIMIT_TOKEN_PER_USER="2/minute", AUTH_LOGIN_BACKOFF_BASE="0")
    async with running_app(settings) as app:
        await register(app.client)
        for name in ("alice", "nobody"):
            for i in range(2):
                await attempt(app, name, "wrong password", f"203.0.113.{i}")
            no_hashes.clear()
            with counting_queries(app) as queries:
                status, _ = await attempt(app, name.upper(), PASSWORD, "198.51.100.1")
            assert (status, queries, no_hashes) == (429, [], []), name
