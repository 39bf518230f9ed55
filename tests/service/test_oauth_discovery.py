"""Discovery (RFC 8414, OpenID Connect Discovery) and the issuer: everything reachable from one URL."""

from __future__ import annotations

from typing import Any

import httpx
import jwt
import pytest

from devtools.stack import Stack
from service.config import ConfigError, Settings
from tests.service.conftest import BASE, Account, login, make_settings

pytestmark = pytest.mark.anyio

DOCUMENTS = ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]


@pytest.mark.parametrize("path", DOCUMENTS)
async def test_discovery_publishes_absolute_endpoints_under_the_issuer_and_may_be_cached(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=3600"
    document = response.json()
    assert document["issuer"] == BASE
    assert {
        name: document[name]
        for name in ("token_endpoint", "jwks_uri", "revocation_endpoint", "introspection_endpoint")
    } == {
        "token_endpoint": f"{BASE}/oauth2/token",
        "jwks_uri": f"{BASE}/.well-known/jwks.json",
        "revocation_endpoint": f"{BASE}/oauth2/revoke",
        "introspection_endpoint": f"{BASE}/oauth2/introspect",
    }
    assert document["grant_types_supported"] == ["password", "refresh_token", "client_credentials"]
    assert document["token_endpoint_auth_methods_supported"] == ["client_secret_basic", "client_secret_post", "none"]
    assert document["response_types_supported"] == []  # no authorization endpoint yet
    assert document["scopes_supported"] == ["email", "profile"]
    assert document["access_token_signing_alg_values_supported"] == ["EdDSA"]


async def test_the_openid_document_adds_the_oidc_fields_that_apply(client: httpx.AsyncClient) -> None:
    oauth = (await client.get(DOCUMENTS[0])).json()
    oidc = (await client.get(DOCUMENTS[1])).json()
    assert oidc.items() >= oauth.items()
    assert oidc["subject_types_supported"] == ["public"]
    assert oidc["id_token_signing_alg_values_supported"] == ["EdDSA"]


async def test_every_published_endpoint_is_served(client: httpx.AsyncClient) -> None:
    document = (await client.get(DOCUMENTS[0])).json()
    jwks = await client.get(document["jwks_uri"].removeprefix(BASE))
    assert jwks.status_code == 200 and jwks.json()["keys"]
    for name in ("token_endpoint", "revocation_endpoint", "introspection_endpoint"):
        answer = await client.post(document[name].removeprefix(BASE), data={})
        assert answer.status_code in (400, 401), (name, answer.status_code)  # served: a 404 would be a lie


async def test_tokens_carry_the_issuer_url_and_rfc9068_claims(client: httpx.AsyncClient, alice: Account) -> None:
    pair = await login(client, alice)
    assert jwt.get_unverified_header(pair["access_token"])["typ"] == "at+jwt"
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    assert claims["iss"] == BASE
    assert (claims["sub"], claims["client_id"], claims["scope"]) == (alice.id, "direct", "profile")
    assert {"jti", "iat", "exp", "aud"} <= set(claims)


def test_the_issuer_defaults_to_the_embedded_servers_url() -> None:
    assert Settings.from_environ({}).issuer == "http://127.0.0.1:8000"


@pytest.mark.parametrize(
    ("environ", "issuer"),
    [
        ({"AUTH_ISSUER": "https://auth.example.com/"}, "https://auth.example.com"),
        ({"AUTH_ISSUER": "https://example.com/auth"}, "https://example.com/auth"),
        ({"AUTH_JWT_ISSUER": "https://old.example.com"}, "https://old.example.com"),  # the deprecated name
        ({"AUTH_JWT_ISSUER": "https://old.example.com", "AUTH_ISSUER": "https://new.example.com"},
         "https://new.example.com"),
    ],
)
def test_the_issuer_is_read_from_auth_issuer_or_its_deprecated_alias(environ: dict[str, str], issuer: str) -> None:
    assert Settings.from_environ(environ).issuer == issuer


@pytest.mark.parametrize("value", ["authsvc", "ftp://auth.example.com", "https://x.example.com/?a=b", "https://x#f"])
@pytest.mark.parametrize("name", ["AUTH_ISSUER", "AUTH_JWT_ISSUER"])
def test_an_issuer_that_is_not_an_http_url_is_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_environ({name: value})


async def test_cors_is_off_unless_origins_are_configured(client: httpx.AsyncClient) -> None:
    preflight = await client.options(
        "/oauth2/token", headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 405 and "access-control-allow-origin" not in preflight.headers
    plain = await client.get("/.well-known/openid-configuration", headers={"Origin": "https://app.example.com"})
    assert "access-control-allow-origin" not in plain.headers


async def test_configured_origins_get_their_preflight_answered_and_others_do_not(
    running_app: Any, stack: Stack, settings: Settings
) -> None:
    with_cors = make_settings(stack, settings.keys_dir, AUTH_CORS_ORIGINS="https://app.example.com, https://b.example")
    async with running_app(with_cors) as app:
        ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
        allowed = await app.client.options("/oauth2/token", headers={"Origin": "https://app.example.com", **ask})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "POST" in allowed.headers["access-control-allow-methods"]
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in allowed.headers  # tokens, not cookies
        stranger = await app.client.options("/oauth2/token", headers={"Origin": "https://evil.example", **ask})
        assert stranger.status_code == 400 and "access-control-allow-origin" not in stranger.headers
        # an actual request carries the header too, errors included, so the page can read the error
        error = await app.client.post("/oauth2/token", data={}, headers={"Origin": "https://b.example"})
        assert (error.status_code, error.headers["access-control-allow-origin"]) == (400, "https://b.example")
        assert "www-authenticate" in error.headers["access-control-expose-headers"].lower()


def test_cors_origins_must_be_origins() -> None:
    with pytest.raises(ConfigError, match="AUTH_CORS_ORIGINS"):
        Settings.from_environ({"AUTH_CORS_ORIGINS": "https://app.example.com/path"})
    assert Settings.from_environ({"AUTH_CORS_ORIGINS": "*"}).cors_origins == ("*",)
