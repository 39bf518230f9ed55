"""The OpenAPI document is valid 3.1 and matches what the routes really answer."""

from __future__ import annotations

import httpx
import pytest
from starlette.routing import Route

from service.app import create_app
from tests.service.conftest import PASSWORD, Account, Running, bearer, login

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
