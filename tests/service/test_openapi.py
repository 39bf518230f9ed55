"""The OpenAPI document is valid 3.1 and matches what the routes really answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from devtools.stack import Stack
from service.app import create_app
from tests.service.conftest import PASSWORD, Account, Running, bearer, login, make_settings, register

pytestmark = pytest.mark.anyio


async def test_every_route_is_documented_and_every_documented_route_exists(app: Running) -> None:
    document = (await app.client.get("/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    routes = create_app(app.resources.settings).routes
    served = {
        (route.path, method.lower())
        for route in routes if isinstance(route, Route) for method in (route.methods or ()) if method != "HEAD"
    }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert served == documented


def documented(document: dict, path: str, method: str) -> set[int]:  # type: ignore[type-arg]
    return {int(code) for code in document["paths"][path][method]["responses"]}


async def test_documented_status_codes_are_the_ones_the_routes_answer(
    client: httpx.AsyncClient, alice: Account
) -> None:
    document = (await client.get("/openapi.json")).json()
    token = "/api/v1/auth/token"
    seen = {
        (await client.post(token, data={"username": "alice", "password": PASSWORD})).status_code,
        (await client.post(token, data={"username": "alice", "password": "wrong password"})).status_code,
        (await client.post(token, data={"username": "alice"})).status_code,
        (await client.post(token, json={})).status_code,
    }
    assert seen == {200, 401, 422, 415} and seen <= documented(document, token, "post")

    register = "/api/v1/auth/register"
    bodies = [
        {"username": "bob", "email": "b@example.com", "password": PASSWORD},
        {"username": "bob", "email": "c@example.com", "password": PASSWORD},
        {"username": "b"},
    ]
    seen = {(await client.post(register, json=body)).status_code for body in bodies}
    assert seen == {201, 409, 422} and seen <= documented(document, register, "post")

    pair = await login(client, alice)
    me = "/api/v1/auth/me"
    seen = {
        (await client.get(me, headers=bearer(pair["access_token"]))).status_code,
        (await client.get(me)).status_code,
    }
    assert seen == {200, 401} and seen <= documented(document, me, "get")


async def test_documented_status_codes_of_the_oauth_token_endpoint_are_the_ones_it_answers(
    client: httpx.AsyncClient, alice: Account
) -> None:
    document = (await client.get("/openapi.json")).json()
    token = "/oauth2/token"
    login = {"grant_type": "password", "username": "alice"}
    seen = {
        (await client.post(token, data={**login, "password": PASSWORD})).status_code,
        (await client.post(token, data={**login, "password": "wrong password"})).status_code,
        (await client.post(token, data={"grant_type": "client_credentials"})).status_code,
    }
    assert seen == {200, 400, 401} and seen <= documented(document, token, "post")


async def test_request_schemas_carry_the_enforced_limits(client: httpx.AsyncClient) -> None:
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    username = schemas["Register"]["properties"]["username"]
    assert (username["minLength"], username["maxLength"]) == (3, 50)
    assert schemas["Register"]["additionalProperties"] is False


BODY_ROUTES = {  # path: a well-formed body of the route's own type
    "/api/v1/auth/register": {"json": {"username": "erin", "email": "erin@example.com", "password": PASSWORD}},
    "/api/v1/auth/token": {"data": {"username": "erin", "password": PASSWORD}},
    "/api/v1/auth/refresh": {"json": {"refresh_token": "x" * 43}},
    "/api/v1/auth/revoke": {"data": {"token": "x" * 43}},
    "/api/v1/auth/introspect": {"data": {"token": "x" * 43}},
}
ME, LOGOUT_ALL = "/api/v1/auth/me", "/api/v1/auth/logout-all"


async def test_the_errors_every_route_can_answer_are_documented(
    running_app: Any, stack: Stack, keys_dir: Path
) -> None:
    """413, 415, 429 and 503 really answered by each route, each one among its documented responses."""
    seen: dict[tuple[str, str], set[int]] = {}

    async def call(app: Running, method: str, path: str, **kwargs: Any) -> None:
        if path.endswith("introspect"):
            kwargs["auth"] = httpx.BasicAuth("introspect", "introspection-secret")
        if path in (ME, LOGOUT_ALL):
            kwargs["headers"] = bearer(pair["access_token"])
        response = await app.client.request(method.upper(), path, **kwargs)
        seen.setdefault((path, method), set()).add(response.status_code)

    tight_pool = make_settings(
        stack, keys_dir, AUTH_DB_POOL_SIZE="1", AUTH_DB_MAX_OVERFLOW="0", AUTH_DB_POOL_TIMEOUT="0.2"
    )
    async with running_app(tight_pool) as app:
        document = (await app.client.get("/openapi.json")).json()
        pair = await login(app.client, await register(app.client, "frank"))
        for path in BODY_ROUTES:
            await call(app, "post", path, content=b"x" * 20_000, headers={"Content-Type": "application/json"})
            await call(app, "post", path, content=b"x", headers={"Content-Type": "text/plain"})
        async with app.resources.engine.connect():  # the only connection, held: no query can run
            for path, body in BODY_ROUTES.items():
                await call(app, "post", path, **body)
            await call(app, "post", LOGOUT_ALL)
    one_a_minute = make_settings(
        stack, keys_dir, AUTH_RATE_LIMIT_ENABLED="true", AUTH_RATE_LIMIT_IP="1/minute",
        AUTH_RATE_LIMIT_INTROSPECT="1/minute",
    )
    async with running_app(one_a_minute) as app:
        for _ in range(2):  # the first call spends the budget
            for path, body in BODY_ROUTES.items():
                await call(app, "post", path, **body)
            await call(app, "get", ME)
    for (path, method), statuses in seen.items():
        assert statuses <= documented(document, path, method), (path, statuses - documented(document, path, method))
    assert all({413, 415, 429, 503} <= seen[path, "post"] for path in BODY_ROUTES), seen
    assert (seen[LOGOUT_ALL, "post"], 429 in seen[ME, "get"]) == ({503}, True), seen
