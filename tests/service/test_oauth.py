"""The /oauth2/* endpoints against PostgreSQL: RFC 6749 §5.2 errors, clients, client credentials, scopes,
RFC 7009 revocation and RFC 7662 introspection."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import httpx
import jwt
import pytest

from devtools.stack import Stack
from service import audit, clients
from service.config import Settings
from tests.service.conftest import BASE, PASSWORD, Account, Running, bearer, login, make_settings, register

pytestmark = pytest.mark.anyio

TOKEN, REVOKE, INTROSPECT = "/oauth2/token", "/oauth2/revoke", "/oauth2/introspect"
NOW = dt.datetime.now(dt.UTC)


async def new_client(
    app: Running, *, grant_types: tuple[str, ...] = ("client_credentials",), scopes: str = "orders:read orders:write",
    audiences: tuple[str, ...] = (), confidential: bool = True, ttl: int | None = None,
) -> tuple[str, str]:
    client, secret = await clients.register(
        app.resources.sessions, name="test", grant_types=list(grant_types), scopes=frozenset(scopes.split()),
        audiences=list(audiences), confidential=confidential, access_token_ttl=ttl, now=dt.datetime.now(dt.UTC),
        actor=audit.CLI,
    )
    return client.id, secret or ""


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def claims(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


def oauth_error(response: httpx.Response, status: int, code: str) -> str:
    """Check an RFC 6749 §5.2 error answer and return its description."""
    assert (response.status_code, response.json()["error"]) == (status, code), response.text
    body = response.json()
    assert body["error_description"] and body["error_description"] == body["detail"]
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Basic")
    else:
        assert "www-authenticate" not in response.headers
    assert response.headers["cache-control"] == "no-store"
    description: str = body["error_description"]
    return description


# -- RFC 6749 §5.2, case by case -----------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {},  # grant_type is required here
        {"grant_type": "password", "username": "alice"},
        {"grant_type": "password", "password": PASSWORD},
        {"grant_type": "refresh_token"},
        {"grant_type": "password", "username": "x" * 400, "password": PASSWORD},
    ],
)
async def test_a_missing_or_malformed_parameter_is_400_invalid_request(
    client: httpx.AsyncClient, data: dict[str, str]
) -> None:
    oauth_error(await client.post(TOKEN, data=data), 400, "invalid_request")


async def test_a_repeated_parameter_and_a_json_body_are_400_invalid_request(client: httpx.AsyncClient) -> None:
    repeated = await client.post(
        TOKEN, content=b"grant_type=password&username=a&username=b&password=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert "more than once" in oauth_error(repeated, 400, "invalid_request")
    as_json = await client.post(TOKEN, json={"grant_type": "password", "username": "a", "password": PASSWORD})
    oauth_error(as_json, 400, "invalid_request")


async def test_two_client_authentication_methods_at_once_are_400_invalid_request(app: Running) -> None:
    client_id, secret = await new_client(app)
    response = await app.client.post(
        TOKEN, data={"grant_type": "client_credentials", "client_secret": secret}, headers=basic(client_id, secret)
    )
    oauth_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    "grant_type", ["authorization_code", "implicit", "urn:ietf:params:oauth:grant-type:jwt-bearer"]
)
async def test_an_unknown_grant_type_is_400_unsupported_grant_type(client: httpx.AsyncClient, grant_type: str) -> None:
    oauth_error(await client.post(TOKEN, data={"grant_type": grant_type}), 400, "unsupported_grant_type")


async def test_a_wrong_password_is_400_invalid_grant_with_one_answer_for_every_cause(
    client: httpx.AsyncClient, alice: Account
) -> None:
    wrong = await client.post(TOKEN, data={"grant_type": "password", "username": "alice", "password": "nope nope"})
    unknown = await client.post(TOKEN, data={"grant_type": "password", "username": "zed", "password": PASSWORD})
    assert oauth_error(wrong, 400, "invalid_grant") == oauth_error(unknown, 400, "invalid_grant")
    assert wrong.json() == unknown.json()


async def test_an_unknown_refresh_token_is_400_invalid_grant(client: httpx.AsyncClient) -> None:
    oauth_error(await client.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": "nope"}),
                400, "invalid_grant")


async def test_a_reused_refresh_token_is_400_invalid_grant_saying_so_and_ends_the_session(
    client: httpx.AsyncClient, alice: Account
) -> None:
    login_form = {"grant_type": "password", "username": "alice", "password": PASSWORD}
    first = (await client.post(TOKEN, data=login_form)).json()
    refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    second = await client.post(TOKEN, data=refresh)
    assert second.status_code == 200
    reused = await client.post(TOKEN, data=refresh)
    assert "reuse" in oauth_error(reused, 400, "invalid_grant")
    after = await client.post(TOKEN, data={**refresh, "refresh_token": second.json()["refresh_token"]})
    oauth_error(after, 400, "invalid_grant")  # the whole family is revoked


async def test_a_wrong_secret_an_unknown_client_and_a_disabled_client_are_401_invalid_client_alike(
    app: Running,
) -> None:
    client_id, secret = await new_client(app)
    disabled_id, disabled_secret = await new_client(app)
    assert await clients.disable(app.resources.sessions, disabled_id, dt.datetime.now(dt.UTC), audit.CLI)
    form = {"grant_type": "client_credentials"}
    answers = [
        await app.client.post(TOKEN, data=form, headers=basic(client_id, secret + "x")),
        await app.client.post(TOKEN, data=form, headers=basic("no-such-client", secret)),
        await app.client.post(TOKEN, data=form, headers=basic(disabled_id, disabled_secret)),
        await app.client.post(TOKEN, data={**form, "client_id": client_id, "client_secret": "wrong"}),
        await app.client.post(TOKEN, data={**form, "client_id": client_id}),  # a confidential client without secret
        await app.client.post(TOKEN, data=form, headers={"Authorization": "Basic !!not-base64!!"}),
    ]
    for answer in answers:
        oauth_error(answer, 401, "invalid_client")
    assert len({answer.text for answer in answers[:5]}) == 1  # nothing tells which case it was
    assert (await app.client.post(TOKEN, data=form, headers=basic(client_id, secret))).status_code == 200


async def test_client_credentials_without_any_client_is_401_invalid_client(client: httpx.AsyncClient) -> None:
    oauth_error(await client.post(TOKEN, data={"grant_type": "client_credentials"}), 401, "invalid_client")


async def test_a_scope_the_client_may_not_have_is_400_invalid_scope(app: Running, alice: Account) -> None:
    client_id, secret = await new_client(app)
    asked = await app.client.post(
        TOKEN, data={"grant_type": "client_credentials", "scope": "orders:read admin"}, headers=basic(client_id, secret)
    )
    assert "admin" in oauth_error(asked, 400, "invalid_scope")
    password = await app.client.post(
        TOKEN, data={"grant_type": "password", "username": "alice", "password": PASSWORD, "scope": "profile admin"}
    )
    oauth_error(password, 400, "invalid_scope")
    malformed = await app.client.post(
        TOKEN, data={"grant_type": "client_credentials", "scope": 'orders:read "x"'}, headers=basic(client_id, secret)
    )
    oauth_error(malformed, 400, "invalid_scope")


async def test_a_grant_the_client_is_not_registered_for_is_400_unauthorized_client(
    app: Running, alice: Account
) -> None:
    service_id, service_secret = await new_client(app, grant_types=("client_credentials",))
    web_id, web_secret = await new_client(app, grant_types=("password", "refresh_token"))
    public_id, _ = await new_client(app, grant_types=("password",), confidential=False)
    login_form = {"grant_type": "password", "username": "alice", "password": PASSWORD}
    oauth_error(await app.client.post(TOKEN, data=login_form, headers=basic(service_id, service_secret)),
                400, "unauthorized_client")
    oauth_error(await app.client.post(TOKEN, data={"grant_type": "client_credentials"},
                                      headers=basic(web_id, web_secret)), 400, "unauthorized_client")
    oauth_error(await app.client.post(TOKEN, data={"grant_type": "client_credentials", "client_id": public_id}),
                400, "unauthorized_client")


async def test_a_resource_outside_the_clients_audiences_is_400_invalid_target(app: Running) -> None:
    client_id, secret = await new_client(app, audiences=("https://orders.example.com",))
    response = await app.client.post(
        TOKEN, data={"grant_type": "client_credentials", "resource": "https://billing.example.com"},
        headers=basic(client_id, secret),
    )
    oauth_error(response, 400, "invalid_target")


# -- client credentials --------------------------------------------------------------------------


async def test_client_credentials_give_an_rfc9068_token_for_the_client_itself_and_no_refresh_token(
    app: Running,
) -> None:
    audiences = ("https://orders.example.com", "https://stock.example.com")
    client_id, secret = await new_client(app, audiences=audiences, ttl=120)
    response = await app.client.post(
        TOKEN, data={"grant_type": "client_credentials", "scope": "orders:read"}, headers=basic(client_id, secret)
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}  # RFC 6749 §4.4.3: no refresh token
    assert (body["token_type"].lower(), body["expires_in"], body["scope"]) == ("bearer", 120, "orders:read")
    assert jwt.get_unverified_header(body["access_token"])["typ"] == "at+jwt"
    token = claims(body["access_token"])
    assert (token["sub"], token["client_id"], token["scope"]) == (client_id, client_id, "orders:read")
    assert token["iss"] == BASE
    assert token["aud"] == list(audiences)
    assert token["exp"] - token["iat"] == 120
    assert "sid" not in token and "username" not in token


async def test_client_credentials_by_post_with_resource_narrow_the_audience_and_default_to_every_scope(
    app: Running,
) -> None:
    client_id, secret = await new_client(app, audiences=("https://orders.example.com", "https://stock.example.com"))
    response = await app.client.post(
        TOKEN, data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret,
                     "resource": "https://stock.example.com"},
    )
    assert response.status_code == 200, response.text
    token = claims(response.json()["access_token"])
    assert token["aud"] == "https://stock.example.com"
    assert token["scope"] == "orders:read orders:write"  # none asked: all it may have
    assert token["exp"] - token["iat"] == app.resources.settings.client_token_ttl


async def test_a_client_without_audiences_gets_the_default_one_and_cannot_use_me(app: Running) -> None:
    client_id, secret = await new_client(app)
    access = (await app.client.post(TOKEN, data={"grant_type": "client_credentials"},
                                    headers=basic(client_id, secret))).json()["access_token"]
    assert claims(access)["aud"] == "authsvc"
    me = await app.client.get("/api/v1/auth/me", headers=bearer(access))
    assert me.status_code == 401  # a client is not a user


# -- the password grant with scopes and clients -----------------------------------------------------


async def test_the_password_grant_without_a_client_gets_the_default_scopes_or_what_it_asks(
    client: httpx.AsyncClient, alice: Account
) -> None:
    form = {"grant_type": "password", "username": "alice", "password": PASSWORD}
    default = (await client.post(TOKEN, data=form)).json()
    assert default["scope"] == "profile"
    token = claims(default["access_token"])
    assert (token["scope"], token["client_id"]) == ("profile", "direct")
    asked = (await client.post(TOKEN, data={**form, "scope": "email profile"})).json()
    assert asked["scope"] == claims(asked["access_token"])["scope"] == "email profile"
    assert (await client.get("/api/v1/auth/me", headers=bearer(asked["access_token"]))).status_code == 200


async def test_a_clients_password_grant_binds_the_session_to_the_client(app: Running, alice: Account) -> None:
    web_id, web_secret = await new_client(app, grant_types=("password", "refresh_token"), scopes="profile orders:read")
    other_id, other_secret = await new_client(app, grant_types=("password", "refresh_token"), scopes="profile")
    form = {"grant_type": "password", "username": "alice", "password": PASSWORD, "scope": "orders:read"}
    pair = (await app.client.post(TOKEN, data=form, headers=basic(web_id, web_secret))).json()
    token = claims(pair["access_token"])
    assert (token["client_id"], token["scope"], token["sub"]) == (web_id, "orders:read", alice.id)

    refresh = {"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]}
    for attempt in (
        app.client.post(TOKEN, data=refresh),  # no client
        app.client.post(TOKEN, data=refresh, headers=basic(other_id, other_secret)),  # another client
        app.client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}),  # the old route
    ):
        assert (await attempt).json()["error"] == "invalid_grant"
    wider = await app.client.post(TOKEN, data={**refresh, "scope": "orders:read profile"},
                                  headers=basic(web_id, web_secret))
    oauth_error(wider, 400, "invalid_scope")
    # none of the refusals used the token up
    renewed = await app.client.post(TOKEN, data=refresh, headers=basic(web_id, web_secret))
    assert renewed.status_code == 200, renewed.text
    assert claims(renewed.json()["access_token"])["scope"] == "orders:read"


async def test_a_public_client_names_itself_with_client_id_and_may_not_present_a_secret(
    app: Running, alice: Account
) -> None:
    public_id, _ = await new_client(app, grant_types=("password", "refresh_token"), scopes="profile",
                                    confidential=False)
    form = {"grant_type": "password", "username": "alice", "password": PASSWORD, "client_id": public_id}
    pair = await app.client.post(TOKEN, data=form)
    assert pair.status_code == 200, pair.text
    assert claims(pair.json()["access_token"])["client_id"] == public_id
    oauth_error(await app.client.post(TOKEN, data=form, headers=basic(public_id, "made-up")), 401, "invalid_client")
    refreshed = await app.client.post(
        TOKEN,
        data={"grant_type": "refresh_token", "refresh_token": pair.json()["refresh_token"], "client_id": public_id},
    )
    assert refreshed.status_code == 200, refreshed.text


async def test_a_server_that_requires_clients_refuses_the_password_grant_without_one_on_both_routes(
    running_app: Any, stack: Stack, settings: Settings
) -> None:
    strict = make_settings(stack, settings.keys_dir, AUTH_PASSWORD_GRANT_REQUIRES_CLIENT="true")
    async with running_app(strict) as app:
        await register(app.client, "alice")
        form = {"grant_type": "password", "username": "alice", "password": PASSWORD}
        oauth_error(await app.client.post(TOKEN, data=form), 401, "invalid_client")
        old = await app.client.post("/api/v1/auth/token", data={"username": "alice", "password": PASSWORD})
        assert (old.status_code, old.json()["error"]) == (401, "invalid_client")
        web_id, web_secret = await new_client(app, grant_types=("password",), scopes="profile")
        assert (await app.client.post(TOKEN, data=form, headers=basic(web_id, web_secret))).status_code == 200


# -- secrets: rotation, rate limit -----------------------------------------------------------------


async def test_during_a_rotation_both_secrets_work_and_after_it_only_the_new_one(app: Running) -> None:
    client_id, first = await new_client(app)
    form = {"grant_type": "client_credentials"}
    second = await clients.rotate_secret(app.resources.sessions, client_id, 3600, dt.datetime.now(dt.UTC), audit.CLI)
    assert second is not None and second != first
    for secret in (first, second):
        assert (await app.client.post(TOKEN, data=form, headers=basic(client_id, secret))).status_code == 200
    third = await clients.rotate_secret(app.resources.sessions, client_id, 0, dt.datetime.now(dt.UTC), audit.CLI)
    assert third is not None
    assert (await app.client.post(TOKEN, data=form, headers=basic(client_id, third))).status_code == 200
    for old in (first, second):  # the first is two rotations old; the second's grace was 0 s
        oauth_error(await app.client.post(TOKEN, data=form, headers=basic(client_id, old)), 401, "invalid_client")


async def test_client_authentication_is_rate_limited_per_client(
    running_app: Any, stack: Stack, settings: Settings
) -> None:
    limited = make_settings(stack, settings.keys_dir, AUTH_RATE_LIMIT_ENABLED="true", AUTH_RATE_LIMIT_CLIENT="3/minute")
    async with running_app(limited) as app:
        client_id, secret = await new_client(app)
        other_id, other_secret = await new_client(app)
        form = {"grant_type": "client_credentials"}
        statuses = [
            (await app.client.post(TOKEN, data=form, headers=basic(client_id, "wrong"))).status_code for _ in range(3)
        ]
        assert statuses == [401, 401, 401]
        blocked = await app.client.post(TOKEN, data=form, headers=basic(client_id, secret))  # even the right secret
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
        assert blocked.json()["error_description"]
        assert (await app.client.post(TOKEN, data=form, headers=basic(other_id, other_secret))).status_code == 200


# -- RFC 7009 revocation -----------------------------------------------------------------------------


async def test_revocation_answers_200_for_known_and_unknown_tokens_and_ends_the_session(
    client: httpx.AsyncClient, alice: Account
) -> None:
    by_refresh, by_access = await login(client, alice), await login(client, alice)
    for token in (by_refresh["refresh_token"], by_access["access_token"], "unknown", "a.b.c"):
        response = await client.post(REVOKE, data={"token": token, "token_type_hint": "refresh_token"})
        assert (response.status_code, response.content) == (200, b"")
    for pair in (by_refresh, by_access):
        assert (await client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))).status_code == 401
    oauth_error(await client.post(REVOKE, data={}), 400, "invalid_request")


async def test_only_the_client_a_token_was_granted_to_may_revoke_it(app: Running, alice: Account) -> None:
    web_id, web_secret = await new_client(app, grant_types=("password", "refresh_token"), scopes="profile")
    other_id, other_secret = await new_client(app)
    form = {"grant_type": "password", "username": "alice", "password": PASSWORD}
    pair = (await app.client.post(TOKEN, data=form, headers=basic(web_id, web_secret))).json()
    oauth_error(await app.client.post(REVOKE, data={"token": pair["refresh_token"]},
                                      headers=basic(other_id, other_secret)), 400, "unauthorized_client")
    oauth_error(await app.client.post(REVOKE, data={"token": pair["refresh_token"]}), 401, "invalid_client")
    assert (await app.client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))).status_code == 200
    ok = await app.client.post(REVOKE, data={"token": pair["refresh_token"]}, headers=basic(web_id, web_secret))
    assert ok.status_code == 200
    assert (await app.client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))).status_code == 401


# -- RFC 7662 introspection --------------------------------------------------------------------------


async def test_introspection_needs_a_confidential_clients_credentials(app: Running, alice: Account) -> None:
    pair = await login(app.client, alice)
    public_id, _ = await new_client(app, grant_types=("password",), scopes="profile", confidential=False)
    service_id, service_secret = await new_client(app)
    for headers, data in (
        ({}, {}),
        ({}, {"client_id": public_id}),
        (basic(service_id, "wrong"), {}),
        ({"Authorization": "Bearer introspection-secret"}, {}),  # the old route's shortcut only
    ):
        response = await app.client.post(INTROSPECT, data={"token": pair["access_token"], **data}, headers=headers)
        oauth_error(response, 401, "invalid_client")
    ok = await app.client.post(
        INTROSPECT, data={"token": pair["access_token"]}, headers=basic(service_id, service_secret)
    )
    assert ok.json()["active"] is True


async def test_introspection_describes_user_refresh_and_client_tokens_per_rfc7662(
    app: Running, alice: Account
) -> None:
    rs_id, rs_secret = await new_client(app)  # the resource server asking
    service_id, service_secret = await new_client(app, audiences=("https://orders.example.com",))
    auth = basic(rs_id, rs_secret)
    pair = await login(app.client, alice)
    user = (await app.client.post(INTROSPECT, data={"token": pair["access_token"]}, headers=auth)).json()
    assert {k: user[k] for k in ("active", "token_type", "sub", "username", "client_id", "scope", "iss", "aud")} == {
        "active": True, "token_type": "Bearer", "sub": alice.id, "username": "alice", "client_id": "direct",
        "scope": "profile", "iss": BASE, "aud": "authsvc",
    }
    assert {"exp", "iat", "jti", "sid"} <= set(user)
    refresh = (await app.client.post(INTROSPECT, data={"token": pair["refresh_token"]}, headers=auth)).json()
    assert (refresh["active"], refresh["token_type"], refresh["sid"], refresh["scope"]) == (
        True, "refresh_token", user["sid"], "profile"
    )

    access = (await app.client.post(TOKEN, data={"grant_type": "client_credentials"},
                                    headers=basic(service_id, service_secret))).json()["access_token"]
    service = (await app.client.post(INTROSPECT, data={"token": access}, headers=auth)).json()
    assert {k: service[k] for k in ("active", "sub", "client_id", "scope", "aud")} == {
        "active": True, "sub": service_id, "client_id": service_id, "scope": "orders:read orders:write",
        "aud": "https://orders.example.com",
    }
    assert await clients.disable(app.resources.sessions, service_id, dt.datetime.now(dt.UTC), audit.CLI)
    assert (await app.client.post(INTROSPECT, data={"token": access}, headers=auth)).json() == {"active": False}
    for token in ("garbage", "a.b.c", pair["access_token"][:-4] + "AAAA"):
        assert (await app.client.post(INTROSPECT, data={"token": token}, headers=auth)).json() == {"active": False}


async def test_the_deprecated_introspection_secret_is_a_built_in_client_on_both_routes(
    client: httpx.AsyncClient, alice: Account
) -> None:
    pair = await login(client, alice)
    auth = basic("introspect", "introspection-secret")
    for path in (INTROSPECT, "/api/v1/auth/introspect"):
        assert (await client.post(path, data={"token": pair["access_token"]}, headers=auth)).json()["active"] is True
    # it may only introspect: no tokens for it
    oauth_error(await client.post(TOKEN, data={"grant_type": "client_credentials"}, headers=auth),
                400, "unauthorized_client")


async def test_the_bootstrap_client_gets_admin_tokens_when_its_secret_is_set(
    running_app: Any, stack: Stack, settings: Settings
) -> None:
    configured = make_settings(stack, settings.keys_dir, AUTH_BOOTSTRAP_CLIENT_SECRET="bootstrap-secret")
    async with running_app(configured) as app:
        response = await app.client.post(TOKEN, data={"grant_type": "client_credentials"},
                                         headers=basic("bootstrap", "bootstrap-secret"))
        assert response.status_code == 200, response.text
        token = claims(response.json()["access_token"])
        assert (token["sub"], token["scope"]) == ("bootstrap", "admin")
        described = await app.client.post(INTROSPECT, data={"token": response.json()["access_token"]},
                                          headers=basic("bootstrap", "bootstrap-secret"))
        assert described.json()["active"] is True
    async with running_app() as app:  # without the setting there is no such client
        oauth_error(await app.client.post(TOKEN, data={"grant_type": "client_credentials"},
                                          headers=basic("bootstrap", "bootstrap-secret")), 401, "invalid_client")
