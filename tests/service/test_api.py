"""The HTTP contract of DESIGN §2: paths, status codes, bodies and headers the old clients rely on."""

from __future__ import annotations

import base64
import uuid

import httpx
import pytest

from tests.service.conftest import BASE, PASSWORD, Account, bearer, login, register

pytestmark = pytest.mark.anyio


async def test_register_returns_the_new_user_without_secrets(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/auth/register", json={"username": "Alice", "email": "Alice@Example.com", "password": PASSWORD}
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "username", "email", "is_active", "email_verified", "created_at"}
    assert uuid.UUID(body["id"])
    assert (body["username"], body["is_active"], body["email_verified"]) == ("Alice", True, False)
    assert body["email"] == "Alice@example.com"  # the domain is normalised, the local part kept
    assert body["created_at"].endswith("Z")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


async def test_username_taken_case_insensitively_is_409_with_the_old_message(
    client: httpx.AsyncClient, alice: Account
) -> None:
    response = await client.post(
        "/api/v1/auth/register", json={"username": "ALICE", "email": "other@example.com", "password": PASSWORD}
    )
    assert response.status_code == 409
    assert response.json() == {
        "error": "username_taken",
        "error_description": "Username ALICE already exists",  # what OAuth libraries show
        "detail": "Username ALICE already exists",  # what the old app's clients read
    }


async def test_email_taken_is_409_with_the_old_message(client: httpx.AsyncClient, alice: Account) -> None:
    response = await client.post(
        "/api/v1/auth/register", json={"username": "bob", "email": "ALICE@example.com", "password": PASSWORD}
    )
    assert response.status_code == 409
    assert response.json()["error"] == "email_taken"
    assert response.json()["detail"] == "Email ALICE@example.com already registered"


async def test_login_returns_a_token_pair_and_no_store_headers(client: httpx.AsyncClient, alice: Account) -> None:
    response = await client.post("/api/v1/auth/token", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "refresh_expires_in"}
    assert (body["token_type"], body["expires_in"], body["refresh_expires_in"]) == ("bearer", 900, 604800)
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


async def test_login_accepts_the_email_and_any_case(client: httpx.AsyncClient, alice: Account) -> None:
    for name in ("alice@example.com", "ALICE", "Alice@EXAMPLE.com"):
        response = await client.post("/api/v1/auth/token", data={"username": name, "password": PASSWORD})
        assert response.status_code == 200, name


async def test_login_accepts_the_explicit_password_grant_and_ignores_unknown_oauth2_fields(
    client: httpx.AsyncClient, alice: Account
) -> None:
    response = await client.post(
        "/api/v1/auth/token",
        data={"grant_type": "password", "username": "alice", "password": PASSWORD, "scope": "", "client_id": "x"},
    )
    assert response.status_code == 200


async def test_wrong_password_unknown_user_and_inactive_user_get_one_identical_answer(
    app, alice: Account  # type: ignore[no-untyped-def]
) -> None:
    client = app.client
    bob = await register(client, "bob")
    async with app.resources.sessions.begin() as db:
        from sqlalchemy import update

        from service.db.models import User

        await db.execute(update(User).where(User.username == "bob").values(is_active=False))
    answers = []
    for username, password in (("alice", "wrong password"), ("nobody", PASSWORD), (bob.username, bob.password)):
        response = await client.post("/api/v1/auth/token", data={"username": username, "password": password})
        answers.append((response.status_code, response.json(), response.headers["www-authenticate"]))
    assert answers[0] == answers[1] == answers[2]
    assert answers[0] == (
        401,
        {
            "error": "invalid_credentials",
            "error_description": "Incorrect username or password",
            "detail": "Incorrect username or password",
        },
        "Bearer",
    )


async def test_me_returns_the_user_of_the_access_token(client: httpx.AsyncClient, alice: Account) -> None:
    pair = await login(client, alice)
    response = await client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))
    assert response.status_code == 200
    assert response.json()["id"] == alice.id
    assert response.json()["username"] == "alice"
    assert "password_hash" not in response.text


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer garbage", "Basic YWxpY2U6cHc=", "Bearer a.b.c", "Bearer " + "x" * 5000],
)
async def test_me_without_a_valid_bearer_token_is_401_with_a_challenge(
    client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = await client.get("/api/v1/auth/me", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"] in {"unauthorized", "invalid_token"}


async def test_refresh_rotates_and_the_new_pair_works(client: httpx.AsyncClient, alice: Account) -> None:
    first = await login(client, alice)
    response = await client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert response.status_code == 200
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await client.get("/api/v1/auth/me", headers=bearer(second["access_token"]))).status_code == 200
    again = await client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert again.status_code == 200


async def test_refresh_grant_on_the_token_endpoint_rotates_too(client: httpx.AsyncClient, alice: Account) -> None:
    first = await login(client, alice)
    response = await client.post(
        "/api/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )
    assert response.status_code == 200
    assert response.json()["refresh_token"] != first["refresh_token"]


async def test_unknown_refresh_token_is_401(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/auth/refresh", json={"refresh_token": "not-a-token"})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_grant"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_reusing_a_rotated_token_revokes_the_whole_family(client: httpx.AsyncClient, alice: Account) -> None:
    first = await login(client, alice)
    other_session = await login(client, alice)
    second = (await client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})).json()

    reuse = await client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401
    assert "reuse" in reuse.json()["detail"]
    # the thief's and the owner's tokens of that family are both dead now
    refreshed = await client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert refreshed.status_code == 401
    assert (await client.get("/api/v1/auth/me", headers=bearer(second["access_token"]))).status_code == 401
    # another login (another family) is untouched
    assert (await client.get("/api/v1/auth/me", headers=bearer(other_session["access_token"]))).status_code == 200
    renewed = await client.post("/api/v1/auth/refresh", json={"refresh_token": other_session["refresh_token"]})
    assert renewed.status_code == 200


async def test_revoke_ends_the_session_and_is_idempotent(client: httpx.AsyncClient, alice: Account) -> None:
    pair = await login(client, alice)
    for _ in range(2):
        response = await client.post("/api/v1/auth/revoke", json={"refresh_token": pair["refresh_token"]})
        assert response.status_code == 204
        assert response.content == b""
    assert (await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})).status_code == 401
    assert (await client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))).status_code == 401


async def test_revoke_accepts_rfc7009_form_with_either_token_and_unknown_tokens(
    client: httpx.AsyncClient, alice: Account
) -> None:
    by_refresh, by_access = await login(client, alice), await login(client, alice)
    assert (await client.post("/api/v1/auth/revoke", data={"token": by_refresh["refresh_token"]})).status_code == 204
    assert (await client.post("/api/v1/auth/revoke", data={"token": by_access["access_token"]})).status_code == 204
    assert (await client.post("/api/v1/auth/revoke", data={"token": "unknown"})).status_code == 204
    for pair in (by_refresh, by_access):
        assert (await client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))).status_code == 401


async def test_logout_all_ends_every_session_of_the_user_only(client: httpx.AsyncClient, alice: Account) -> None:
    bob = await register(client, "bob")
    sessions = [await login(client, alice) for _ in range(3)]
    bobs = await login(client, bob)
    response = await client.post("/api/v1/auth/logout-all", headers=bearer(sessions[0]["access_token"]))
    assert response.status_code == 204
    for pair in sessions:
        assert (await client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))).status_code == 401
        refreshed = await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert refreshed.status_code == 401
    assert (await client.get("/api/v1/auth/me", headers=bearer(bobs["access_token"]))).status_code == 200
    again = await client.post("/api/v1/auth/logout-all", headers=bearer(sessions[0]["access_token"]))
    assert again.status_code == 401


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize(
    "headers",
    [{}, basic("introspect", "wrong"), basic("someone", "introspection-secret"), {"Authorization": "Bearer nope"}],
)
async def test_introspect_refuses_callers_without_the_secret(
    client: httpx.AsyncClient, alice: Account, headers: dict[str, str]
) -> None:
    pair = await login(client, alice)
    response = await client.post("/api/v1/auth/introspect", data={"token": pair["access_token"]}, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert "access_token" not in response.text


async def test_introspect_reports_live_tokens_and_then_their_revocation(
    client: httpx.AsyncClient, alice: Account
) -> None:
    pair = await login(client, alice)
    auth = basic("introspect", "introspection-secret")
    access = (await client.post("/api/v1/auth/introspect", data={"token": pair["access_token"]}, headers=auth)).json()
    assert access["active"] is True
    assert (access["sub"], access["username"], access["token_type"]) == (alice.id, "alice", "access_token")
    assert {"exp", "iat", "sid", "jti"} <= set(access)
    refresh = (
        await client.post(
            "/api/v1/auth/introspect", data={"token": pair["refresh_token"]},
            headers={"Authorization": "Bearer introspection-secret"},
        )
    ).json()
    assert (refresh["active"], refresh["sid"], refresh["token_type"]) == (True, access["sid"], "refresh_token")

    await client.post("/api/v1/auth/revoke", json={"refresh_token": pair["refresh_token"]})
    for token in (pair["access_token"], pair["refresh_token"], "garbage", "a.b.c"):
        response = await client.post("/api/v1/auth/introspect", data={"token": token}, headers=auth)
        assert response.json() == {"active": False}


async def test_jwks_publishes_the_signing_key_that_verifies_tokens(client: httpx.AsyncClient, alice: Account) -> None:
    import jwt

    jwks = (await client.get("/.well-known/jwks.json")).json()
    pair = await login(client, alice)
    header = jwt.get_unverified_header(pair["access_token"])
    (key,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    assert (key["kty"], key["crv"], key["alg"], header["alg"]) == ("OKP", "Ed25519", "EdDSA", "EdDSA")
    assert "d" not in key  # never the private part
    claims = jwt.decode(
        pair["access_token"], jwt.PyJWK(key).key, algorithms=["EdDSA"], audience="authsvc", issuer=BASE
    )
    assert (claims["sub"], claims["username"]) == (alice.id, "alice")
    assert {"iat", "exp", "jti", "sid"} <= set(claims)


async def test_health_routes_answer_as_kubernetes_expects(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/liveness")).json() == {"status": "alive"}
    assert (await client.get("/health/startup")).json() == {"status": "started"}
    ready = await client.get("/health/readiness")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok", "keys": "ok"}}


async def test_index_links_the_routes(client: httpx.AsyncClient) -> None:
    body = (await client.get("/")).json()
    assert body["name"] == "authsvc"
    assert {"href": "/api/v1/auth/token", "rel": "token", "method": "POST"} in body["links"]


async def test_unknown_route_and_wrong_method_get_json_errors(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/v1/auth/nothing")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    wrong = await client.get("/api/v1/auth/token")
    assert (wrong.status_code, wrong.json()["error"]) == (405, "method_not_allowed")
