"""End to end over real HTTP: `authsvc serve` on a free port, a client registered with `authsvc clients
create`, authlib fetching tokens from the discovery URL, and a resource server that knows only the issuer
verifying them with PyJWT's PyJWKClient. And the client secret is never stored or logged in clear."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import anyio
import authlib.deprecate  # noqa: F401  # first: importing it puts an "always" filter in front of ours
import httpx
import jwt
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from devtools.stack import Stack
from service.config import Settings
from tests.service.conftest import PASSWORD, environ, wipe
from tests.service.test_observability_serve import free_port, serving

with warnings.catch_warnings():  # authlib prefers the httpx2 fork; httpx is what the tests use
    warnings.filterwarnings("ignore", "The httpx module is deprecated", DeprecationWarning)
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.starlette_client import OAuth

pytestmark = pytest.mark.anyio
AUDIENCE = "https://orders.example.com"


async def authsvc(stack: Stack, settings: Settings, *args: str, **env: str) -> tuple[int, str, str]:
    """Run the CLI as an operator would, against the same database; its exit status, stdout and stderr."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROMETHEUS_", "AUTH_"))}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", *args, env={**base, **environ(stack, settings.keys_dir), **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def database_text(stack: Stack) -> str:
    """Every row of every table, as PostgreSQL prints it (bytea as hex)."""
    engine = create_async_engine(stack.admin_url)
    try:
        async with engine.connect() as connection:
            tables = (await connection.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ))).scalars().all()
            rows = [
                row for table in tables
                # names from pg_tables, not from input
                for row in (await connection.execute(text(f'SELECT t::text FROM "{table}" t'))).scalars()  # noqa: S608
            ]
    finally:
        await engine.dispose()
    return "\n".join(rows)


def resource_server_verifies(issuer: str, token: str, audience: str) -> dict[str, Any]:
    """A resource server configured with the issuer URL alone (blocking, as PyJWKClient is)."""
    metadata = httpx.get(f"{issuer}/.well-known/oauth-authorization-server").json()
    assert metadata["issuer"] == issuer
    signing_key = jwt.PyJWKClient(metadata["jwks_uri"]).get_signing_key_from_jwt(token)  # fetches over HTTP
    claims: dict[str, Any] = jwt.decode(
        token, signing_key.key, algorithms=metadata["access_token_signing_alg_values_supported"],
        audience=audience, issuer=issuer, options={"require": ["exp", "iat", "sub", "jti", "client_id"]},
    )
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
    return claims


async def test_a_resource_server_and_authlib_need_nothing_but_the_issuer_url_and_secrets_stay_hashed(
    settings: Settings, stack: Stack, tmp_path: Path
) -> None:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    try:
        status, out, cli_err = await authsvc(
            stack, settings, "clients", "create", "orders-worker", "--grant-type", "client_credentials",
            "--scope", "orders:read orders:write", "--audience", AUDIENCE,
        )
        assert status == 0, cli_err
        created = json.loads(out)
        assert set(created) == {"client_id", "client_secret"}
        client_id, secret = created["client_id"], created["client_secret"]
        status, out, _ = await authsvc(stack, settings, "clients", "create", "web", "--grant-type", "password",
                                       "--grant-type", "refresh_token", "--scope", "profile", "--public")
        web = json.loads(out)
        assert status == 0 and web["client_secret"] is None

        async with serving(settings, stack, tmp_path, port=port, AUTH_ISSUER=issuer, AUTH_LOG_LEVEL="DEBUG") as (
            url, _, server_err,
        ):
            assert url == issuer
            provider = OAuth().register("authsvc", client_id=client_id, client_secret=secret,
                                        server_metadata_url=f"{issuer}/.well-known/openid-configuration")
            token = await provider.fetch_access_token(grant_type="client_credentials", scope="orders:read")
            claims = await anyio.to_thread.run_sync(resource_server_verifies, issuer, token["access_token"], AUDIENCE)
            assert (claims["sub"], claims["client_id"], claims["scope"]) == (client_id, client_id, "orders:read")

            async with httpx.AsyncClient(base_url=issuer) as http:
                body = {"username": "carol", "email": "carol@example.com", "password": PASSWORD}
                assert (await http.post("/api/v1/auth/register", json=body)).status_code == 201
            public = OAuth().register("web", client_id=web["client_id"],
                                      server_metadata_url=f"{issuer}/.well-known/oauth-authorization-server",
                                      client_kwargs={"token_endpoint_auth_method": "none"})
            user_token = await public.fetch_access_token(grant_type="password", username="carol", password=PASSWORD)
            user = await anyio.to_thread.run_sync(
                resource_server_verifies, issuer, user_token["access_token"], "authsvc"
            )
            assert (user["client_id"], user["scope"], user["username"]) == (web["client_id"], "profile", "carol")
            assert user["sub"] != user["client_id"]  # how a resource server tells a user's token from a client's

            with pytest.raises(OAuthError):  # a failed attempt is logged too: it must not carry the secret
                await OAuth().register(
                    "wrong", client_id=client_id, client_secret=secret[:-2],
                    server_metadata_url=f"{issuer}/.well-known/openid-configuration",
                    client_kwargs={"token_endpoint_auth_method": "client_secret_post"},
                ).fetch_access_token(grant_type="client_credentials")

            status, out, rotate_err = await authsvc(stack, settings, "clients", "rotate-secret", client_id)
            assert status == 0, rotate_err
            rotated = json.loads(out)["client_secret"]
            status, out, _ = await authsvc(stack, settings, "clients", "list")
            listed = {entry["client_id"]: entry for entry in json.loads(out)}
            assert listed[client_id]["grant_types"] == ["client_credentials"]
            assert listed[client_id]["audiences"] == [AUDIENCE] and listed[web["client_id"]]["type"] == "public"
            server_log = server_err.read_text()

        stored = await database_text(stack)
        assert client_id in stored  # the scan does see the clients table
        for clear in (secret, rotated):
            assert clear not in stored and clear.encode().hex() not in stored
            for text_seen in (server_log, cli_err, rotate_err, out):
                assert clear not in text_seen
        assert "service.access" in server_log  # the server did log the requests
    finally:
        await wipe(stack)
