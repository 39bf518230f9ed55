"""Bad input gets a 4xx with {error, detail} and writes nothing: never a 500, never a half-written row."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select

from service.db.models import User
from tests.service.conftest import PASSWORD, Account, Running

pytestmark = pytest.mark.anyio

REGISTER = "/api/v1/auth/register"
GOOD = {"username": "carol", "email": "carol@example.com", "password": PASSWORD}


async def users_count(app: Running) -> int:
    async with app.resources.sessions() as db:
        return int((await db.execute(select(func.count()).select_from(User))).scalar_one())


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({**GOOD, "username": "ab"}, "$.username"),
        ({**GOOD, "username": "x" * 51}, "$.username"),
        ({**GOOD, "username": "has space"}, "$.username"),
        ({**GOOD, "username": "at@sign"}, "$.username"),
        ({**GOOD, "email": "not-an-email"}, "email"),
        ({**GOOD, "password": "short"}, "$.password"),
        ({**GOOD, "password": 12345678}, "$.password"),
        ({k: v for k, v in GOOD.items() if k != "email"}, "email"),
        ({**GOOD, "is_admin": True}, "is_admin"),
        ([GOOD], "object"),
    ],
)
async def test_invalid_registration_is_422_naming_the_field_and_creates_nothing(
    app: Running, body: object, fragment: str
) -> None:
    response = await app.client.post(REGISTER, json=body)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert fragment in response.json()["detail"]
    assert await users_count(app) == 0


async def test_a_password_over_72_utf8_bytes_is_refused_never_truncated(app: Running) -> None:
    long_password = "é" * 37  # 37 characters, 74 bytes
    response = await app.client.post(REGISTER, json={**GOOD, "password": long_password})
    assert (response.status_code, response.json()["error"]) == (422, "password_too_long")
    assert "72 bytes" in response.json()["detail"]
    assert await users_count(app) == 0
    login = await app.client.post("/api/v1/auth/token", data={"username": "carol", "password": long_password})
    assert (login.status_code, login.json()["error"]) == (422, "password_too_long")


async def test_exactly_72_bytes_is_accepted_and_the_73rd_byte_matters(app: Running) -> None:
    password = "p" * 72
    assert (await app.client.post(REGISTER, json={**GOOD, "password": password})).status_code == 201
    ok = await app.client.post("/api/v1/auth/token", data={"username": "carol", "password": password})
    assert ok.status_code == 200
    near = await app.client.post("/api/v1/auth/token", data={"username": "carol", "password": "p" * 71 + "q"})
    assert near.status_code == 401


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b"{not json", "application/json", 422),
        (b"", "application/json", 422),
        (b'{"username": "\xff\xfe"}', "application/json", 422),
        (b"null", "application/json", 422),
        (b"username=carol", "application/x-www-form-urlencoded", 415),
        (b"{}", "text/plain", 415),
    ],
)
async def test_malformed_bodies_and_wrong_content_types_are_4xx(
    app: Running, content: bytes, content_type: str, status: int
) -> None:
    response = await app.client.post(REGISTER, content=content, headers={"Content-Type": content_type})
    assert response.status_code == status
    assert set(response.json()) == {"error", "error_description", "detail"}
    assert await users_count(app) == 0


async def test_a_huge_body_is_413_whether_announced_or_streamed(app: Running) -> None:
    huge = b'{"username": "' + b"a" * 100_000 + b'"}'
    announced = await app.client.post(REGISTER, content=huge, headers={"Content-Type": "application/json"})
    assert (announced.status_code, announced.json()["error"]) == (413, "payload_too_large")

    async def chunks():  # type: ignore[no-untyped-def]
        for start in range(0, len(huge), 4096):
            yield huge[start : start + 4096]

    streamed = await app.client.post(REGISTER, content=chunks(), headers={"Content-Type": "application/json"})
    assert (streamed.status_code, streamed.json()["error"]) == (413, "payload_too_large")


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"username": "carol"},
        {"password": PASSWORD},
        {"grant_type": "client_credentials", "username": "carol", "password": PASSWORD},
        {"grant_type": "refresh_token"},
        {"username": "c" * 400, "password": PASSWORD},
    ],
)
async def test_token_form_errors_are_422(client: httpx.AsyncClient, data: dict[str, str]) -> None:
    response = await client.post("/api/v1/auth/token", data=data)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


async def test_token_endpoint_refuses_json_and_non_utf8_forms(client: httpx.AsyncClient) -> None:
    as_json = await client.post("/api/v1/auth/token", json={"username": "carol", "password": PASSWORD})
    assert as_json.status_code == 415
    garbage = await client.post(
        "/api/v1/auth/token", content=b"username=\xff\xfe&password=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert 400 <= garbage.status_code < 500
    assert set(garbage.json()) == {"error", "error_description", "detail"}


@pytest.mark.parametrize(
    "body",
    [
        {}, {"refresh_token": ""}, {"refresh_token": 5}, {"refresh_token": "x", "extra": 1},
        {"refresh_token": "x" * 3000},
    ],
)
async def test_refresh_and_revoke_validate_their_bodies(client: httpx.AsyncClient, body: object) -> None:
    for path in ("/api/v1/auth/refresh", "/api/v1/auth/revoke"):
        response = await client.post(path, json=body)
        assert (response.status_code, response.json()["error"]) == (422, "invalid_request"), path


async def test_a_failed_rotation_leaves_the_old_token_valid(client: httpx.AsyncClient, alice: Account) -> None:
    from tests.service.conftest import login

    pair = await login(client, alice)
    bad = await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"], "x": 1})
    assert bad.status_code == 422
    good = await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert good.status_code == 200


async def test_concurrent_registrations_of_one_name_give_one_201_and_409s_never_500(app: Running) -> None:
    import asyncio

    responses = await asyncio.gather(
        *(
            app.client.post(REGISTER, json={"username": "Dave", "email": f"dave{i}@example.com", "password": PASSWORD})
            for i in range(8)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 7
    assert await users_count(app) == 1


INTROSPECTION = httpx.BasicAuth("introspect", "introspection-secret")
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.mark.parametrize(
    ("path", "kind", "body"),
    [
        (REGISTER, "json", {**GOOD, "username": "car\x00ol"}),
        (REGISTER, "json", {**GOOD, "email": "car\x00ol@example.com"}),
        (REGISTER, "json", {**GOOD, "password": PASSWORD + "\x00"}),
        ("/api/v1/auth/token", "form", {"username": "a\x00b", "password": PASSWORD}),  # the 500 of the audit
        ("/api/v1/auth/token", "form", {"username": "a\x00b@example.com", "password": PASSWORD}),
        ("/api/v1/auth/token", "form", {"username": "carol", "password": PASSWORD + "\x00"}),
        ("/api/v1/auth/token", "form", {"grant_type": "password\x00", "username": "carol", "password": PASSWORD}),
        ("/api/v1/auth/token", "form", {"grant_type": "refresh_token", "refresh_token": "x\x00y"}),
        ("/api/v1/auth/token", "multipart", {"username": "a\x00b", "password": PASSWORD}),
        ("/api/v1/auth/refresh", "json", {"refresh_token": "x\x00y"}),
        ("/api/v1/auth/revoke", "json", {"refresh_token": "x\x00y"}),
        ("/api/v1/auth/revoke", "form", {"token": "x\x00y"}),
        ("/api/v1/auth/revoke", "form", {"token": "a.b\x00.c"}),
        ("/api/v1/auth/introspect", "form", {"token": "x\x00y"}),
        ("/api/v1/auth/introspect", "form", {"token": "a.b\x00.c"}),
    ],
)
async def test_a_nul_character_in_any_field_is_422_not_a_database_error(
    app: Running, path: str, kind: str, body: dict[str, str]
) -> None:
    auth = INTROSPECTION if path.endswith("introspect") else None
    if kind == "json":
        response = await app.client.post(path, json=body, auth=auth)
    elif kind == "form":
        response = await app.client.post(path, data=body, auth=auth)
    else:
        response = await app.client.post(path, files={name: (None, value) for name, value in body.items()})
    assert (response.status_code, response.json()["error"]) == (422, "invalid_request"), response.text
    assert await users_count(app) == 0


@pytest.mark.parametrize(
    ("path", "content", "headers", "status"),
    [
        ("/api/v1/auth/refresh", b'{"refresh_token": "x\\ud800y"}', JSON, 422),  # a lone surrogate, escaped
        ("/api/v1/auth/revoke", b'{"refresh_token": "x\\udc00"}', JSON, 422),
        (REGISTER, b'{"username": "carol", "email": "c@example.com", "password": "\\ud800 long enough"}', JSON, 422),
        # raw surrogate bytes are not UTF-8: a form value gets U+FFFD instead, which text can hold
        ("/api/v1/auth/token", b"username=carol&password=\xed\xa0\x80xxxxxxxx", FORM, 401),
        ("/api/v1/auth/revoke", b"token=\xed\xa0\x80", FORM, 204),  # an unknown token: nothing to revoke
    ],
)
async def test_text_postgresql_cannot_hold_never_reaches_it(
    app: Running, path: str, content: bytes, headers: dict[str, str], status: int
) -> None:
    response = await app.client.post(path, content=content, headers=headers)
    assert response.status_code == status, response.text
    assert await users_count(app) == 0
