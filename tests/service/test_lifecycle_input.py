"""Bad input on every lifecycle route: a 4xx JSON {error, detail}, never a 500, and nothing written."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from service.db.models import AccountToken, Mail, Session, User
from tests.service.conftest import PASSWORD, Running, bearer, login, register

pytestmark = pytest.mark.anyio
API = "/api/v1/auth"
NUL = "a\u0000b-long-enough"


async def snapshot(app: Running) -> tuple[Any, ...]:
    """Everything a lifecycle route could write (mail statuses change in the background: counted as rows)."""
    async with app.resources.sessions() as db:
        people = sorted((await db.execute(select(User.username, User.password_hash, User.email_verified_at))).all())
        tokens = sorted((await db.execute(select(AccountToken.id, AccountToken.used_at))).all())
        mail_rows = (await db.execute(select(func.count()).select_from(Mail))).scalar_one()
        live_sessions = select(func.count()).select_from(Session).where(Session.revoked_at.is_(None))
        live = (await db.execute(live_sessions)).scalar()
    return people, tokens, mail_rows, live


def body(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


BAD_JSON: list[tuple[Any, str]] = [
    (b"", "application/json"),
    (b"{", "application/json"),
    (b"\xff\xfe", "application/json"),
    ([], "application/json"),
    ("a string", "application/json"),
    ({"unexpected": 1}, "application/json"),
    ({"email": "x@example.com"}, "text/plain"),
]


async def expect_refused(
    app: Running, method: str, path: str, content: bytes, media: str, headers: dict[str, str]
) -> None:
    before = await snapshot(app)
    response = await app.client.request(method, path, content=content, headers={"content-type": media, **headers})
    assert 400 <= response.status_code < 500, (path, content, response.status_code, response.text)
    answer = response.json()
    assert set(answer) >= {"error", "detail"} and answer["error"] and answer["detail"], (path, content)
    assert await snapshot(app) == before, (path, content)


async def test_bad_bodies_on_every_lifecycle_route_are_4xx_and_write_nothing(app: Running) -> None:
    alice = await register(app.client)
    pair = await login(app.client, alice)
    auth = bearer(pair["access_token"])
    cases: dict[str, list[Any]] = {
        f"{API}/password": [
            *BAD_JSON,
            ({"current_password": PASSWORD}, "application/json"),
            ({"current_password": PASSWORD, "new_password": "short"}, "application/json"),
            ({"current_password": PASSWORD, "new_password": "é" * 37}, "application/json"),
            ({"current_password": PASSWORD, "new_password": NUL}, "application/json"),
            ({"current_password": NUL, "new_password": "a new passphrase"}, "application/json"),
            ({"current_password": "", "new_password": "a new passphrase"}, "application/json"),
            ({"current_password": PASSWORD, "new_password": 12345678}, "application/json"),
            ({"current_password": PASSWORD, "new_password": "a new passphrase", "x": 1}, "application/json"),
            ({"current_password": "wrong password", "new_password": "a new passphrase"}, "application/json"),
            ({"current_password": PASSWORD, "new_password": "password123"}, "application/json"),
        ],
        f"{API}/password-reset": [
            *BAD_JSON,
            ({"email": "not-an-email"}, "application/json"),
            ({"email": "a\u0000b@example.com"}, "application/json"),
            ({"email": 5}, "application/json"),
            ({"email": "a" * 400 + "@example.com"}, "application/json"),
            ({"email": "a@example.com", "more": True}, "application/json"),
        ],
        f"{API}/password-reset/confirm": [
            *BAD_JSON,
            ({"token": "short", "new_password": "a new passphrase"}, "application/json"),
            ({"token": "../../etc/passwd/../../..", "new_password": "a new passphrase"}, "application/json"),
            ({"token": NUL, "new_password": "a new passphrase"}, "application/json"),
            ({"token": "A" * 43, "new_password": "a new passphrase"}, "application/json"),  # unknown
            ({"token": "A" * 43, "new_password": "short"}, "application/json"),
            ({"token": "A" * 43}, "application/json"),
            ({"token": "A" * 300, "new_password": "a new passphrase"}, "application/json"),
        ],
        f"{API}/verify-email": [
            *BAD_JSON,
            ({"token": "short"}, "application/json"),
            ({"token": NUL}, "application/json"),
            ({"token": "A" * 43}, "application/json"),
            ({"token": None}, "application/json"),
        ],
    }
    for path, bodies in cases.items():
        for content, media in bodies:
            await expect_refused(app, "POST", path, body(content), media, auth)


async def test_bad_credentials_and_ids_on_the_bearer_routes_are_4xx_and_write_nothing(app: Running) -> None:
    alice = await register(app.client)
    pair = await login(app.client, alice)
    good = {"current_password": PASSWORD, "new_password": "a new passphrase"}
    for headers in ({}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Basic eDp5"}, bearer("a.b.c")):
        await expect_refused(app, "POST", f"{API}/password", body(good), "application/json", headers)
        await expect_refused(app, "POST", f"{API}/verify-email/resend", b"", "application/json", headers)
        await expect_refused(app, "GET", f"{API}/sessions", b"", "application/json", headers)
        await expect_refused(app, "DELETE", f"{API}/sessions/{uuid.uuid4()}", b"", "application/json", headers)
    auth = bearer(pair["access_token"])
    for session_id in ("not-a-uuid", str(uuid.uuid4()), "%00", "1" * 300):
        await expect_refused(app, "DELETE", f"{API}/sessions/{session_id}", b"", "application/json", auth)
    await app.client.post(f"{API}/logout-all", headers=auth)  # an ended session's token is refused too
    await expect_refused(app, "POST", f"{API}/password", body(good), "application/json", auth)
    await expect_refused(app, "GET", f"{API}/sessions", b"", "application/json", auth)
