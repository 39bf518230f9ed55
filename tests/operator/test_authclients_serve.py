"""End to end: AuthClients, the operator on the emulated API server, the admin API of a real ``authsvc serve``.

The service runs as a child process on the test PostgreSQL (through PgBouncer) and Redis, with the chart's
bootstrap client; the operator (in this process, ``KopfRunner``) logs in as that client, as it does in a
cluster. What an app does with the Secret is done here too: a client-credentials token from the
``token_endpoint`` it names, with the credentials it holds, verified with the service's JWKS.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import jwt
import pytest
from kopf.testing import KopfRunner

from authsvc_operator import authclient
from devtools import stack as stack_module
from devtools.stack import Stack
from service import keys, migrations
from service.config import Settings
from tests.operator import conftest, test_operator
from tests.operator.conftest import Cluster
from tests.service.conftest import environ, wipe
from tests.service.test_observability_serve import serving

pytestmark = pytest.mark.anyio

API = "/apis/auth.platform.dev/v1alpha1"
AUTHCLIENTS = "auth.platform.dev/v1alpha1/authclients"
SECRET = "orders-worker-oauth"
AUDIENCE = "https://orders.example.com"
ADMIN_SECRET = secrets.token_urlsafe(32)
SPEC: dict[str, Any] = {
    "grantTypes": ["client_credentials"],
    "scopes": ["orders:read", "orders:write"],
    "audiences": [AUDIENCE],
    "secretName": SECRET,
    "tokenLifetime": "10m",
    "rotationOverlap": "1h",
}


@pytest.fixture(scope="module")
def settings(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    keys_dir = tmp_path_factory.mktemp("keys")
    keys.generate(keys_dir, kid="test-key")
    migrated = Settings.from_environ(environ(stack, keys_dir))
    migrations.upgrade(migrated)  # sync on purpose: Alembic's async env.py runs its own loop
    return migrated


@pytest.fixture
async def service(settings: Settings, stack: Stack, tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """``authsvc serve`` with the bootstrap client the chart configures; its URL and its stderr."""
    port = stack_module.free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        async with serving(
            settings, stack, tmp_path, port=port, AUTH_ISSUER=url, AUTH_BOOTSTRAP_CLIENT_ID="bootstrap",
            AUTH_BOOTSTRAP_CLIENT_SECRET=ADMIN_SECRET, AUTH_BOOTSTRAP_CLIENT_SCOPES="admin",
        ) as (served, _, err):
            yield served, err
    finally:
        await wipe(stack)


@pytest.fixture
def admin_env(service: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """What the chart gives the operator: the Service's URL and the bootstrap client's credentials."""
    monkeypatch.setenv("AUTHCLIENT_SERVICE_URL", service[0])
    monkeypatch.setenv("AUTHCLIENT_ADMIN_CLIENT_ID", "bootstrap")
    monkeypatch.setenv("AUTHCLIENT_ADMIN_CLIENT_SECRET", ADMIN_SECRET)


@pytest.fixture
async def operator(
    cluster: Cluster, operator_env: None, admin_env: None, free_port: int
) -> AsyncIterator[KopfRunner]:
    async with conftest.running_operator(cluster, free_port) as runner:
        yield runner


def authclient_object(spec: dict[str, Any], name: str = "orders-worker") -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "auth.platform.dev/v1alpha1", "kind": "AuthClient",
                           "metadata": {"name": name}, "spec": spec}
    return obj


def credentials(cluster: Cluster) -> dict[str, str]:
    secret = cluster.read("v1/secrets", SECRET)
    return {k: base64.b64decode(v).decode() for k, v in (secret or {}).get("data", {}).items()}


async def until(cluster: Cluster, predicate: Callable[[], bool]) -> None:
    await cluster.emulator.wait_for(predicate, within=30)


def condition(cluster: Cluster, kind: str = "Ready", name: str = "orders-worker") -> dict[str, Any]:
    obj = cluster.read(AUTHCLIENTS, name) or {}
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), {})


async def token(held: dict[str, str], secret: str | None = None, **form: str) -> httpx.Response:
    """A client-credentials token request, as an app makes it with what the Secret holds."""
    async with httpx.AsyncClient() as http:
        return await http.post(
            held["token_endpoint"], data={"grant_type": "client_credentials", **form},
            auth=(held["client_id"], secret or held["client_secret"]),
        )


def verified(issuer: str, access_token: str) -> dict[str, Any]:
    """A resource server's check, from the issuer's JWKS (blocking, as PyJWKClient is)."""
    key = jwt.PyJWKClient(f"{issuer}/.well-known/jwks.json").get_signing_key_from_jwt(access_token)
    claims: dict[str, Any] = jwt.decode(access_token, key.key, algorithms=["EdDSA"], audience=AUDIENCE, issuer=issuer)
    return claims


async def test_an_authclient_yields_a_secret_whose_credentials_get_a_token(
    cluster: Cluster, operator: KopfRunner, service: tuple[str, Path]
) -> None:
    url, server_err = service
    await cluster.create(API, "authclients", authclient_object(SPEC))
    await until(cluster, lambda: condition(cluster).get("status") == "True")

    held = credentials(cluster)
    assert set(held) == {"client_id", "client_secret", "token_endpoint", "issuer"}
    assert (held["issuer"], held["token_endpoint"]) == (url, f"{url}/oauth2/token")
    status = (cluster.read(AUTHCLIENTS, "orders-worker") or {})["status"]
    assert (status["clientId"], status["observedGeneration"]) == (held["client_id"], 1)
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True", "Reconciled": "True", "Degraded": "False"
    }
    secret = cluster.read("v1/secrets", SECRET)
    assert secret is not None
    owner = cluster.read(AUTHCLIENTS, "orders-worker")
    assert owner is not None
    assert [(r["kind"], r["uid"], r["controller"]) for r in secret["metadata"]["ownerReferences"]] == [
        ("AuthClient", owner["metadata"]["uid"], True)
    ]

    answer = await token(held, scope="orders:read")
    assert answer.status_code == 200, answer.text
    claims = await anyio.to_thread.run_sync(verified, url, answer.json()["access_token"])
    assert (claims["sub"], claims["scope"], claims["exp"] - claims["iat"]) == (held["client_id"], "orders:read", 600)
    assert (await token(held, scope="orders:admin")).json()["error"] == "invalid_scope"

    # The secret is in the Secret only: not in the operator's status, log or Events, nor in the server's log.
    await until(cluster, lambda: len(cluster.emulator.requests_to("GET", "secrets", SECRET)) >= 3)  # a timer pass
    events = [json.dumps(r.data) for r in cluster.emulator.requests_to("POST", "events")]
    for place in (json.dumps(cluster.read(AUTHCLIENTS, "orders-worker")), server_err.read_text(), *events):
        assert held["client_secret"] not in place
    assert "/admin/v1/clients" in server_err.read_text()  # the server log is there to be searched


async def test_a_rotation_gives_a_new_secret_while_the_old_one_works_for_the_overlap(
    cluster: Cluster, operator: KopfRunner
) -> None:
    await cluster.create(API, "authclients", authclient_object(SPEC))
    await until(cluster, lambda: condition(cluster).get("status") == "True")
    first = credentials(cluster)

    await cluster.patch(API, "authclients", "orders-worker",
                        {"metadata": {"annotations": {authclient.ROTATE: "now"}}})
    await until(cluster, lambda: credentials(cluster).get("client_secret") != first["client_secret"])
    second = credentials(cluster)
    assert second["client_id"] == first["client_id"]
    assert (await token(second)).status_code == 200
    assert (await token(first)).status_code == 200  # the overlap: both work
    await until(cluster, lambda: authclient.ROTATE not in
                (cluster.read(AUTHCLIENTS, "orders-worker") or {})["metadata"].get("annotations", {}))
    status = (cluster.read(AUTHCLIENTS, "orders-worker") or {})["status"]
    valid_until = dt.datetime.fromisoformat(status["previousSecretValidUntil"])
    in_an_hour = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert abs((valid_until - in_an_hour).total_seconds()) < 60

    # With no overlap, the secret before the last rotation stops at once; the same request asks again.
    await cluster.patch(API, "authclients", "orders-worker", {
        "spec": {"rotationOverlap": "0s"}, "metadata": {"annotations": {authclient.ROTATE: "now"}},
    })
    await until(cluster, lambda: credentials(cluster).get("client_secret") != second["client_secret"])
    third = credentials(cluster)
    assert (await token(third)).status_code == 200
    assert (await token(second)).status_code == 401
    assert (await token(first)).status_code == 401


async def test_a_spec_change_changes_the_registration_and_keeps_the_credentials(
    cluster: Cluster, operator: KopfRunner
) -> None:
    await cluster.create(API, "authclients", authclient_object(SPEC))
    await until(cluster, lambda: condition(cluster).get("status") == "True")
    held = credentials(cluster)

    await cluster.patch(API, "authclients", "orders-worker",
                        {"spec": {"scopes": ["orders:read", "orders:admin"], "tokenLifetime": "1h"}})
    await until(cluster, lambda: condition(cluster).get("observedGeneration") == 2
                and condition(cluster).get("status") == "True")
    assert credentials(cluster) == held
    answer = await token(held, scope="orders:admin")
    assert answer.status_code == 200, answer.text
    assert answer.json()["expires_in"] == 3600
    assert (await token(held, scope="orders:write")).json()["error"] == "invalid_scope"


async def test_a_deleted_authclient_takes_its_client_and_its_secret_with_it(
    cluster: Cluster, operator: KopfRunner
) -> None:
    await cluster.create(API, "authclients", authclient_object(SPEC))
    await until(cluster, lambda: condition(cluster).get("status") == "True")
    held = credentials(cluster)

    await cluster.delete(API, "authclients", "orders-worker")
    await until(cluster, lambda: cluster.read(AUTHCLIENTS, "orders-worker") is None)  # the finalizer let go
    assert cluster.read("v1/secrets", SECRET) is None
    answer = await token(held)
    assert (answer.status_code, answer.json()["error"]) == (401, "invalid_client")


async def test_a_secret_deleted_by_hand_comes_back_with_a_new_secret(cluster: Cluster, operator: KopfRunner) -> None:
    await cluster.create(API, "authclients", authclient_object(SPEC))
    await until(cluster, lambda: condition(cluster).get("status") == "True")
    held = credentials(cluster)

    await cluster.delete("/api/v1", "secrets", SECRET)
    await until(cluster, lambda: credentials(cluster).get("client_secret") not in (None, held["client_secret"]))
    again = credentials(cluster)
    assert again["client_id"] == held["client_id"]
    assert (await token(again)).status_code == 200
    assert (await token(held)).status_code == 200  # whoever still has the old one: the overlap


async def test_a_secret_someone_else_owns_is_left_alone(cluster: Cluster, operator: KopfRunner) -> None:
    theirs = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET}, "data": {"x": "eQ=="}}
    await cluster.create("/api/v1", "secrets", theirs)
    await cluster.create(API, "authclients", authclient_object(SPEC))
    await until(cluster, lambda: condition(cluster, "Degraded").get("reason") == "Conflict")
    assert credentials(cluster) == {"x": "y"}
    assert "clientId" not in (cluster.read(AUTHCLIENTS, "orders-worker") or {})["status"]  # nothing registered


async def test_a_service_that_does_not_answer_is_reported_and_retried(
    cluster: Cluster, operator_env: None, monkeypatch: pytest.MonkeyPatch, free_port: int,
    settings: Settings, stack: Stack, tmp_path: Path,
) -> None:
    port = stack_module.free_port()  # nothing listens there yet
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AUTHCLIENT_SERVICE_URL", url)
    monkeypatch.setenv("AUTHCLIENT_ADMIN_CLIENT_ID", "bootstrap")
    monkeypatch.setenv("AUTHCLIENT_ADMIN_CLIENT_SECRET", ADMIN_SECRET)
    async with conftest.running_operator(cluster, free_port):
        await cluster.create(API, "authclients", authclient_object(SPEC))
        await until(cluster, lambda: condition(cluster, "Degraded").get("reason") == "ServiceError")
        assert "no answer" in condition(cluster, "Degraded")["message"]
        assert cluster.read("v1/secrets", SECRET) is None
        try:
            async with serving(
                settings, stack, tmp_path, port=port, AUTH_ISSUER=url,
                AUTH_BOOTSTRAP_CLIENT_ID="bootstrap", AUTH_BOOTSTRAP_CLIENT_SECRET=ADMIN_SECRET,
            ):
                await until(cluster, lambda: condition(cluster).get("status") == "True")
                assert (await token(credentials(cluster))).status_code == 200
        finally:
            await wipe(stack)


async def test_without_an_admin_client_the_operator_says_what_is_missing(
    cluster: Cluster, operator_env: None, monkeypatch: pytest.MonkeyPatch, free_port: int
) -> None:
    for name in ("AUTHCLIENT_SERVICE_URL", "AUTHCLIENT_ADMIN_CLIENT_ID", "AUTHCLIENT_ADMIN_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    async with conftest.running_operator(cluster, free_port):
        await cluster.create(API, "authclients", authclient_object(SPEC))
        await until(cluster, lambda: condition(cluster, "Degraded").get("reason") == "NotConfigured")
        assert "AUTHCLIENT_SERVICE_URL" in condition(cluster, "Degraded")["message"]
        await cluster.delete(API, "authclients", "orders-worker")  # nothing registered: nothing holds it
        await until(cluster, lambda: cluster.read(AUTHCLIENTS, "orders-worker") is None)



async def test_authclients_outside_the_client_namespaces_are_left_alone(
    cluster: Cluster, operator_env: None, monkeypatch: pytest.MonkeyPatch, free_port: int
) -> None:
    monkeypatch.setenv("AUTHCLIENT_NAMESPACES", "tenants,others")  # the chart's operator.clientNamespaces
    async with conftest.running_operator(cluster, free_port):
        await cluster.create(API, "authclients", authclient_object(SPEC))
        await cluster.create(API, "authconfigs", test_operator.authconfig_object({"targetRef": {"name": "auth"}}))
        await test_operator.until_ready(cluster)  # served meanwhile: the operator has been at work
        await test_operator.until_passes(cluster, 2)
    ignored = cluster.read(AUTHCLIENTS, "orders-worker")
    assert ignored is not None
    assert "status" not in ignored and not ignored["metadata"].get("finalizers")
    assert cluster.emulator.requests_to("GET", "secrets", SECRET) == []


async def test_authconfigs_outside_the_operators_namespace_are_left_alone(
    cluster: Cluster, operator_env: None, monkeypatch: pytest.MonkeyPatch, free_port: int
) -> None:
    monkeypatch.setenv("AUTHCONFIG_NAMESPACE", "elsewhere")  # the chart's: its own namespace
    for name in ("AUTHCLIENT_SERVICE_URL", "AUTHCLIENT_ADMIN_CLIENT_ID", "AUTHCLIENT_ADMIN_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    async with conftest.running_operator(cluster, free_port):
        await cluster.create(API, "authconfigs", test_operator.authconfig_object({"targetRef": {"name": "auth"}}))
        await cluster.create(API, "authclients", authclient_object(SPEC))
        await until(cluster, lambda: condition(cluster, "Degraded").get("reason") == "NotConfigured")
        reads = len(list(cluster.emulator))
        await until(cluster, lambda: len(list(cluster.emulator)) > reads + 4)  # the AuthClient's timer, again
    ignored = cluster.read(test_operator.AUTHCONFIGS, "auth")
    assert ignored is not None
    assert "status" not in ignored and not ignored["metadata"].get("finalizers")
    assert cluster.emulator.requests_to("GET", "deployments", "auth") == []
