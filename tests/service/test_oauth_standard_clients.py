"""A standard OAuth client, unmodified, configured with nothing but the discovery URL: authlib.

authlib's Starlette registry reads ``server_metadata_url`` and takes every endpoint from it; its httpx
client then does the refresh, revocation and introspection calls. The requests go to the real app (its
lifespan, PostgreSQL behind PgBouncer, Redis) through httpx's ASGI transport.
"""

from __future__ import annotations

import datetime as dt
import warnings
from typing import Any

import authlib.deprecate  # noqa: F401  # first: importing it puts an "always" filter in front of ours
import pytest

with warnings.catch_warnings():  # authlib prefers the httpx2 fork; httpx is what our ASGI transport is for
    warnings.filterwarnings("ignore", "The httpx module is deprecated", DeprecationWarning)
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.httpx_client import AsyncOAuth2Client
    from authlib.integrations.starlette_client import OAuth
    from authlib.integrations.starlette_client.apps import StarletteOAuth2App

from service import audit, clients
from tests.service.conftest import BASE, PASSWORD, Account, Running

pytestmark = pytest.mark.anyio
DISCOVERY = f"{BASE}/.well-known/openid-configuration"


async def registered(app: Running, *grant_types: str, scope: str) -> tuple[str, str]:
    client, secret = await clients.register(
        app.resources.sessions, name="authlib", grant_types=list(grant_types), scopes=frozenset(scope.split()),
        audiences=[], confidential=True, access_token_ttl=None, now=dt.datetime.now(dt.UTC), actor=audit.CLI,
    )
    assert secret is not None
    return client.id, secret


def from_discovery(app: Running, client_id: str, client_secret: str) -> StarletteOAuth2App:
    """What an app does: register the provider by its metadata URL and nothing else."""
    oauth = OAuth()
    provider: StarletteOAuth2App = oauth.register(
        "authsvc", client_id=client_id, client_secret=client_secret, server_metadata_url=DISCOVERY,
        client_kwargs={"transport": app.transport},
    )
    return provider


def session(app: Running, client_id: str, client_secret: str, metadata: dict[str, Any]) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        client_id, client_secret, transport=app.transport, token_endpoint=metadata["token_endpoint"]
    )


async def test_authlib_logs_in_refreshes_introspects_and_revokes_from_the_discovery_url_alone(
    app: Running, alice: Account
) -> None:
    client_id, secret = await registered(app, "password", "refresh_token", scope="profile email")
    provider = from_discovery(app, client_id, secret)
    token = await provider.fetch_access_token(grant_type="password", username="alice", password=PASSWORD,
                                              scope="profile")
    metadata = provider.server_metadata
    assert "_loaded_at" in metadata  # authlib fetched the document...
    assert metadata["token_endpoint"] == f"{BASE}/oauth2/token"  # ...and took the endpoint from it
    assert (token["token_type"].lower(), token["scope"]) == ("bearer", "profile")
    assert token["refresh_token"] and token["expires_at"] > dt.datetime.now(dt.UTC).timestamp()

    async with session(app, client_id, secret, metadata) as oauth:
        oauth.token = token
        refreshed = await oauth.refresh_token(metadata["token_endpoint"], refresh_token=token["refresh_token"])
        assert refreshed["refresh_token"] != token["refresh_token"]

        described = (await oauth.introspect_token(metadata["introspection_endpoint"],
                                                  token=refreshed["access_token"])).json()
        assert (described["active"], described["client_id"], described["username"]) == (True, client_id, "alice")

        revoked = await oauth.revoke_token(metadata["revocation_endpoint"], token=refreshed["refresh_token"],
                                           token_type_hint="refresh_token")
        assert revoked.status_code == 200
        after = (await oauth.introspect_token(metadata["introspection_endpoint"],
                                              token=refreshed["access_token"])).json()
        assert after == {"active": False}


async def test_authlib_raises_invalid_grant_with_a_description_for_a_reused_refresh_token(
    app: Running, alice: Account
) -> None:
    client_id, secret = await registered(app, "password", "refresh_token", scope="profile")
    provider = from_discovery(app, client_id, secret)
    token = await provider.fetch_access_token(grant_type="password", username="alice", password=PASSWORD)
    metadata = provider.server_metadata
    async with session(app, client_id, secret, metadata) as oauth:
        await oauth.refresh_token(metadata["token_endpoint"], refresh_token=token["refresh_token"])
        with pytest.raises(OAuthError) as caught:
            await oauth.refresh_token(metadata["token_endpoint"], refresh_token=token["refresh_token"])
    assert caught.value.error == "invalid_grant"
    assert "reuse" in caught.value.description


async def test_authlib_gets_a_client_credentials_token_and_a_wrong_secret_raises_invalid_client(
    app: Running,
) -> None:
    client_id, secret = await registered(app, "client_credentials", scope="orders:read orders:write")
    token = await from_discovery(app, client_id, secret).fetch_access_token(
        grant_type="client_credentials", scope="orders:read"
    )
    assert (token["scope"], "refresh_token" in token) == ("orders:read", False)

    with pytest.raises(OAuthError) as caught:
        await from_discovery(app, client_id, "not-the-secret").fetch_access_token(grant_type="client_credentials")
    assert caught.value.error == "invalid_client" and caught.value.description

    with pytest.raises(OAuthError) as caught:
        await from_discovery(app, client_id, secret).fetch_access_token(grant_type="client_credentials",
                                                                        scope="admin")
    assert caught.value.error == "invalid_scope" and "admin" in caught.value.description
