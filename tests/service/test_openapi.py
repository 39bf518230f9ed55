"""The OpenAPI document is valid 3.1 and matches what the routes really answer."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import jsonschema
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


def refs(value: Any) -> set[str]:
    if isinstance(value, dict):
        return {value["$ref"]} if isinstance(value.get("$ref"), str) else set().union(*map(refs, value.values()))
    if isinstance(value, list):
        return set().union(*map(refs, value))
    return set()


async def test_every_reference_names_a_component(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    named = {f"#/components/schemas/{name}" for name in document["components"]["schemas"]}
    assert refs(document) <= named, refs(document) - named


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


FORM = "application/x-www-form-urlencoded"
INTROSPECTOR = ("introspect", "introspection-secret")  # the built-in client of the test settings


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def form_schema_accepts(document: dict[str, Any], path: str, form: dict[str, Any]) -> bool:
    """Does the documented form schema of ``path`` accept ``form`` (a repeated field as a list)?"""
    schema = document["paths"][path]["post"]["requestBody"]["content"][FORM]["schema"]
    validator = jsonschema.Draft202012Validator({**schema, "components": document["components"]})
    return validator.is_valid(form)


OAUTH_FORMS: list[tuple[str, dict[str, Any], tuple[str, str] | None, bool, int, str | None]] = [
    # path, form, Basic credentials, does the schema accept it, the answer's status and error
    # the four cases schemathesis found: an unknown hint is ignored (RFC 7009 §2.1), so the schema allows it...
    ("/oauth2/revoke", {"token": "0", "token_type_hint": "AAA", "client_id": "", "client_secret": ""},
     None, True, 200, None),
    # ...a posted secret needs its client_id, an empty refresh_token is a missing one (RFC 6749 §3.2)
    ("/oauth2/revoke", {"token": "ì3kz", "client_secret": ";s\x9d\x0e"}, None, False, 400, "invalid_request"),
    ("/oauth2/token", {"grant_type": "refresh_token", "username": "", "password": "", "refresh_token": "",
                       "scope": "", "resource": "", "client_id": "", "client_secret": ""},
     None, False, 400, "invalid_request"),
    # the gap tests/service/fuzz_hooks.py names: Basic and client_secret both, which a body's schema cannot see
    ("/oauth2/introspect", {"client_secret": "8", "token": "G\x01x", "client_id": "X·FW"},
     INTROSPECTOR, True, 400, "invalid_request"),
    ("/oauth2/introspect", {"client_secret": "8", "token": "G\x01x", "client_id": "X·FW"},
     None, True, 401, "invalid_client"),
    # NUL in a client id was a 500 (PostgreSQL text cannot hold it), by form or by Basic
    ("/oauth2/token", {"grant_type": "client_credentials", "client_id": "a\x00b", "client_secret": "x"},
     None, False, 400, "invalid_request"),
    ("/oauth2/revoke", {"token": "x", "client_id": "a\x00b"}, None, False, 400, "invalid_request"),
    ("/oauth2/introspect", {"token": "x"}, ("a\x00b", "x"), True, 401, "invalid_client"),
    # the rest of what the forms say
    ("/oauth2/revoke", {"token": "x", "token_type_hint": ""}, None, True, 200, None),
    ("/oauth2/revoke", {"token": ["x", "y"]}, None, False, 400, "invalid_request"),
    ("/oauth2/revoke", {"token": "x", "client_id": "x" * 513}, None, False, 401, "invalid_client"),
    ("/oauth2/introspect", {"token": "x", "token_type_hint": "AAA"}, INTROSPECTOR, True, 200, None),
    ("/oauth2/token", {"grant_type": "password", "username": "nobody", "password": "whatever"},
     None, True, 400, "invalid_grant"),
    ("/oauth2/token", {"grant_type": "password", "username": "nobody", "password": "whatever", "scope": 'a"b'},
     None, False, 400, "invalid_scope"),
    ("/oauth2/token", {"grant_type": "password", "username": "nobody", "password": "whatever",
                       "client_secret": "s"}, None, False, 400, "invalid_request"),
    ("/oauth2/token", {"grant_type": "password", "username": "nobody", "password": "x" * 73},
     None, False, 400, "invalid_request"),
    ("/oauth2/token", {"grant_type": "refresh_token", "refresh_token": "x", "username": ["a", "b"]},
     None, False, 400, "invalid_request"),
    ("/oauth2/token", {"grant_type": "refresh_token", "refresh_token": "x", "resource": "#"},
     None, True, 400, "invalid_grant"),  # resource is read by client_credentials only
    ("/oauth2/token", {"grant_type": "client_credentials", "resource": ["https://a.example", "https://b#c"]},
     None, False, 400, "invalid_target"),
    ("/oauth2/token", {"grant_type": "client_credentials", "resource": "https://a.example"},
     None, True, 401, "invalid_client"),  # no client
    ("/oauth2/token", {"grant_type": "implicit"}, None, False, 400, "unsupported_grant_type"),
]


@pytest.mark.parametrize(("path", "form", "credentials", "valid", "status", "error"), OAUTH_FORMS)
async def test_the_oauth_forms_schemas_accept_what_the_endpoints_accept(
    client: httpx.AsyncClient, path: str, form: dict[str, Any], credentials: tuple[str, str] | None,
    valid: bool, status: int, error: str | None,
) -> None:
    document = (await client.get("/openapi.json")).json()
    assert form_schema_accepts(document, path, form) is valid
    response = await client.post(path, data=form, headers=basic(*credentials) if credentials else {})
    assert response.status_code == status, response.text
    assert (response.json()["error"] if error else None) == error, response.text


BODY_ROUTES = {  # path: a well-formed body of the route's own type
    "/api/v1/auth/register": {"json": {"username": "erin", "email": "erin@example.com", "password": PASSWORD}},
    "/api/v1/auth/token": {"data": {"username": "erin", "password": PASSWORD}},
    "/api/v1/auth/refresh": {"json": {"refresh_token": "x" * 43}},
    "/api/v1/auth/revoke": {"data": {"token": "x" * 43}},
    "/api/v1/auth/introspect": {"data": {"token": "x" * 43}},
}
OAUTH_ROUTES = {
    "/oauth2/token": {"data": {"grant_type": "password", "username": "erin", "password": PASSWORD}},
    "/oauth2/revoke": {"data": {"token": "x" * 43}},
    "/oauth2/introspect": {"data": {"token": "x" * 43}},
}
ME, LOGOUT_ALL = "/api/v1/auth/me", "/api/v1/auth/logout-all"


async def test_the_errors_every_route_can_answer_are_documented(
    running_app: Any, stack: Stack, keys_dir: Path
) -> None:
    """413, 415 (400 on /oauth2/*), 429 and 503 really answered by each route, each one among its documented
    responses; and 401 with the Basic challenge from the OAuth endpoints."""
    seen: dict[tuple[str, str], set[int]] = {}

    async def call(app: Running, method: str, path: str, **kwargs: Any) -> None:
        if path.endswith("introspect"):
            kwargs.setdefault("auth", httpx.BasicAuth(*INTROSPECTOR))
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
        for path in [*BODY_ROUTES, *OAUTH_ROUTES]:
            await call(app, "post", path, content=b"x" * 20_000, headers={"Content-Type": "application/json"})
            await call(app, "post", path, content=b"x", headers={"Content-Type": "text/plain"})
        for path, body in OAUTH_ROUTES.items():
            response = await app.client.post(path, **body, auth=httpx.BasicAuth("nobody", "wrong"))
            assert response.headers["www-authenticate"].startswith("Basic "), response.text
            seen.setdefault((path, "post"), set()).add(response.status_code)
        async with app.resources.engine.connect():  # the only connection, held: no query can run
            for path, body in {**BODY_ROUTES, **OAUTH_ROUTES}.items():
                await call(app, "post", path, **body)
            await call(app, "post", LOGOUT_ALL)
    one_a_minute = make_settings(
        stack, keys_dir, AUTH_RATE_LIMIT_ENABLED="true", AUTH_RATE_LIMIT_IP="1/minute",
        AUTH_RATE_LIMIT_INTROSPECT="1/minute",
    )
    async with running_app(one_a_minute) as app:
        for _ in range(2):  # the first call spends the budget
            for path, body in {**BODY_ROUTES, **OAUTH_ROUTES}.items():
                await call(app, "post", path, **body)
            await call(app, "get", ME)
    for (path, method), statuses in seen.items():
        assert statuses <= documented(document, path, method), (path, statuses - documented(document, path, method))
    assert all({413, 415, 429, 503} <= seen[path, "post"] for path in BODY_ROUTES), seen
    assert all({400, 401, 413, 429, 503} <= seen[path, "post"] for path in OAUTH_ROUTES), seen
    assert (seen[LOGOUT_ALL, "post"], 429 in seen[ME, "get"]) == ({503}, True), seen
