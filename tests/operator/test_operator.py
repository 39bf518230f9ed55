"""End to end: ``kopf run -m authsvc_operator.handlers`` against kmock's emulated API server on loopback.

Each test starts the operator in its own thread (``KopfRunner``) and waits on conditions the emulator
re-checks after every request it serves; nothing waits on the clock. The timer runs every 0.5 s and a
failed pass is retried after 0.3 s, both set through the operator's environment variables.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import kmock
import pytest

from authsvc_operator import authconfig
from tests.operator import conftest, schema
from tests.operator.conftest import AUTHCONFIGS_API, Cluster

pytestmark = pytest.mark.anyio

AUTHCONFIGS = "auth.platform.dev/v1alpha1/authconfigs"
SPEC: dict[str, Any] = {
    "targetRef": {"name": "auth"},
    "database": {"pool": {"size": 20, "maxOverflow": 5}},
    "pgbouncer": {"defaultPoolSize": 40},
    "rateLimits": {"routes": {"token": "20/minute"}, "trustedProxies": ["10.0.0.0/8"]},
    "passwords": {"bcryptCost": 12},
    "cleanup": {"schedule": "*/5 * * * *", "batchSize": 500},
}


def authconfig_object(spec: dict[str, Any], name: str = "auth") -> dict[str, Any]:
    """As the API server stores it: defaulted by the CRD's schema."""
    obj: dict[str, Any] = schema.defaulted(
        {"apiVersion": "auth.platform.dev/v1alpha1", "kind": "AuthConfig", "metadata": {"name": name}, "spec": spec}
    )
    return obj


def with_spec(path: str, value: Any) -> dict[str, Any]:
    spec: dict[str, Any] = schema.defaulted({"spec": SPEC})["spec"]
    node = spec
    *parents, leaf = path.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    return spec


def conditions(obj: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj or {}).get("status", {}).get("conditions", [])}


async def until_ready(cluster: Cluster, generation: int = 1, name: str = "auth") -> dict[str, Any]:
    def ready() -> bool:
        obj = cluster.read(AUTHCONFIGS, name)
        return (
            conditions(obj).get("Ready", {}).get("status") == "True"
            and (obj or {}).get("status", {}).get("observedGeneration") == generation
        )

    await cluster.emulator.wait_for(ready)
    obj = cluster.read(AUTHCONFIGS, name)
    assert obj is not None
    return obj


async def until_degraded(cluster: Cluster, reason: str, name: str = "auth") -> dict[str, Any]:
    def degraded() -> bool:
        condition = conditions(cluster.read(AUTHCONFIGS, name)).get("Degraded", {})
        return condition.get("status") == "True" and condition.get("reason") == reason

    await cluster.emulator.wait_for(degraded)
    return conditions(cluster.read(AUTHCONFIGS, name))["Degraded"]


async def until_passes(cluster: Cluster, count: int, target: str = "auth") -> None:
    """Until ``count`` more reconcile passes have started (each begins by reading the target)."""
    start = len(cluster.emulator.requests_to("GET", "deployments", target))
    await cluster.emulator.wait_for(
        lambda: len(cluster.emulator.requests_to("GET", "deployments", target)) >= start + count
    )


def writes(cluster: Cluster) -> list[str]:
    return [
        f"{r.method.value} {r.resource.plural if r.resource else ''}/{r.name or r.data['metadata']['name']}"
        for r in cluster.emulator
        if r.method.value in {"POST", "PATCH", "PUT", "DELETE"} and r.resource is not None
        and r.resource.plural in {"configmaps", "cronjobs", "deployments"}
    ]


async def test_applying_an_authconfig_creates_each_child_and_rolls_each_deployment_exactly_once(
    cluster: Cluster, operator: object
) -> None:
    await cluster.create(AUTHCONFIGS_API, "authconfigs", authconfig_object(SPEC))
    owner = await until_ready(cluster)
    await until_passes(cluster, 2)  # the timer looks twice more and finds nothing to do

    assert sorted(writes(cluster)) == sorted([
        "POST deployments/auth",  # the test's own fixtures
        "POST deployments/auth-pgbouncer",
        "POST configmaps/auth-overrides",
        "POST configmaps/auth-pgbouncer-overrides",
        "PATCH deployments/auth",
        "PATCH deployments/auth-pgbouncer",
        "POST cronjobs/auth-cleanup",
    ])
    status = owner["status"]
    ref = {"apiVersion": "auth.platform.dev/v1alpha1", "kind": "AuthConfig", "name": "auth",
           "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}

    overrides = cluster.read("v1/configmaps", "auth-overrides")
    assert overrides is not None
    assert overrides["data"] == authconfig.settings_env(SPEC)
    assert overrides["data"]["AUTH_DB_POOL_SIZE"] == "20"
    assert overrides["data"]["AUTH_TRUSTED_PROXIES"] == "10.0.0.0/8"
    assert overrides["metadata"]["ownerReferences"] == [ref]

    deployment = cluster.read("apps/v1/deployments", "auth")
    assert deployment is not None
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"checksum/config": "from-helm", authconfig.CONFIG_CHECKSUM: status["checksum"]}
    assert status["checksum"] == authconfig.checksum(overrides["data"])
    assert "ownerReferences" not in deployment["metadata"]  # patched, never adopted

    pgbouncer_overrides = cluster.read("v1/configmaps", "auth-pgbouncer-overrides")
    assert pgbouncer_overrides is not None
    assert pgbouncer_overrides["data"] == {"pgbouncer.ini": authconfig.pgbouncer_ini(SPEC)}
    assert "default_pool_size = 40\n" in pgbouncer_overrides["data"]["pgbouncer.ini"]
    pgbouncer = cluster.read("apps/v1/deployments", "auth-pgbouncer")
    assert pgbouncer is not None
    assert pgbouncer["spec"]["template"]["metadata"]["annotations"][authconfig.PGBOUNCER_CHECKSUM] == (
        status["pgbouncerChecksum"]
    )

    cronjob = cluster.read("batch/v1/cronjobs", "auth-cleanup")
    assert cronjob is not None
    assert cronjob["metadata"]["ownerReferences"] == [ref]
    assert (cronjob["spec"]["schedule"], cronjob["spec"]["concurrencyPolicy"]) == ("*/5 * * * *", "Forbid")

    assert status["observedGeneration"] == 1
    assert status["warnings"] == []
    assert {(c["type"], c["status"]) for c in status["conditions"]} == {
        ("Ready", "True"), ("Reconciled", "True"), ("Degraded", "False")
    }


async def test_the_liveness_endpoint_answers_while_the_operator_runs(
    cluster: Cluster, operator: object, liveness_url: str
) -> None:
    await cluster.create(AUTHCONFIGS_API, "authconfigs", authconfig_object(SPEC))
    await until_ready(cluster)  # so the operator has started
    async with aiohttp.ClientSession() as http, http.get(liveness_url, headers={"Connection": "close"}) as response:
        assert response.status == 200


async def test_changing_the_bcrypt_cost_rewrites_the_configmap_and_rolls_only_the_service(
    cluster: Cluster, operator: object
) -> None:
    await cluster.create(AUTHCONFIGS_API, "authconfigs", authconfig_object(SPEC))
    before = (await until_ready(cluster))["status"]

    await cluster.patch(AUTHCONFIGS_API, "authconfigs", "auth", {"spec": {"passwords": {"bcryptCost": 14}}})
    after = (await until_ready(cluster, generation=2))["status"]

    overrides = cluster.read("v1/configmaps", "auth-overrides")
    assert overrides is not None
    assert overrides["data"]["AUTH_BCRYPT_COST"] == "14"
    assert after["checksum"] == authconfig.checksum(overrides["data"]) != before["checksum"]
    deployment = cluster.read("apps/v1/deployments", "auth")
    assert deployment is not None
    assert deployment["spec"]["template"]["metadata"]["annotations"][authconfig.CONFIG_CHECKSUM] == after["checksum"]
    assert after["pgbouncerChecksum"] == before["pgbouncerChecksum"]
    assert writes(cluster).count("PATCH deployments/auth") == 2
    assert writes(cluster).count("PATCH deployments/auth-pgbouncer") == 1  # PgBouncer's settings did not change


async def test_a_hand_edit_of_the_configmap_is_put_back_by_the_timer(cluster: Cluster, operator: object) -> None:
    await cluster.create(AUTHCONFIGS_API, "authconfigs", authconfig_object(SPEC))
    await until_ready(cluster)
    expected = authconfig.settings_env(SPEC)

    edit = {"data": {"AUTH_BCRYPT_COST": "4", "AUTH_RATE_LIMIT_ENABLED": None, "AUTH_BY_HAND": "1"}}
    edited = await cluster.patch("/api/v1", "configmaps", "auth-overrides", edit)
    assert edited["data"]["AUTH_BCRYPT_COST"] == "4"

    def put_back() -> bool:
        overrides = cluster.read("v1/configmaps", "auth-overrides")
        return overrides is not None and overrides["data"] == expected

    await cluster.emulator.wait_for(put_back)
    assert writes(cluster).count("PATCH configmaps/auth-overrides") == 2  # the edit, then the operator's
    assert writes(cluster).count("PATCH deployments/auth") == 1  # same settings as the pods have: no roll


@pytest.mark.parametrize("drift_interval", ["60"])  # so the retry is the handler's own, not the timer's
async def test_an_api_error_is_shown_in_status_and_retried(cluster: Cluster, operator: object) -> None:
    fault = cluster.emulator.fail("POST", "cronjobs", name="auth-cleanup", status=503, times=2)

    await cluster.create(AUTHCONFIGS_API, "authconfigs", authconfig_object(SPEC))
    await until_ready(cluster)

    assert len(fault.hits) == 2
    assert writes(cluster).count("POST cronjobs/auth-cleanup") == 3
    assert cluster.read("batch/v1/cronjobs", "auth-cleanup") is not None
    history = cluster.emulator.objects[kmock.resource(AUTHCONFIGS), "auth", "auth"].history
    reasons = [conditions(dict(version)).get("Degraded", {}).get("reason") for version in history if version]
    assert "ApiError" in reasons


async def test_a_spec_the_service_would_refuse_is_a_permanent_error_shown_in_status(
    cluster: Cluster, operator: object
) -> None:
    # The CRD's pattern admits any /NN; the service's own parser refuses a /33 for IPv4.
    await cluster.create(AUTHCONFIGS_API, "authconfigs",
                         authconfig_object(with_spec("rateLimits.trustedProxies", ["10.0.0.0/33"])))
    degraded = await until_degraded(cluster, "InvalidSpec")
    assert "AUTH_TRUSTED_PROXIES" in degraded["message"]
    assert conditions(cluster.read(AUTHCONFIGS, "auth"))["Ready"]["status"] == "False"
    assert writes(cluster) == ["POST deployments/auth", "POST deployments/auth-pgbouncer"]  # nothing written

    await cluster.patch(AUTHCONFIGS_API, "authconfigs", "auth",
                        {"spec": {"rateLimits": {"trustedProxies": ["10.0.0.0/8"]}}})
    await until_ready(cluster, generation=2)
    assert cluster.read("v1/configmaps", "auth-overrides") is not None


async def test_a_missing_target_is_reported_and_reconciled_once_it_appears(
    cluster: Cluster, operator: object
) -> None:
    await cluster.create(AUTHCONFIGS_API, "authconfigs",
                         authconfig_object({**SPEC, "targetRef": {"name": "auth-eu"}}, name="eu"))
    degraded = await until_degraded(cluster, "TargetNotFound", name="eu")
    assert degraded["message"] == "no Deployment auth/auth-eu"

    await cluster.create("/apis/apps/v1", "deployments", conftest.service_deployment("auth-eu"))
    status = (await until_ready(cluster, name="eu"))["status"]
    assert cluster.read("v1/configmaps", "auth-eu-overrides") is not None
    assert status["warnings"] == [
        "no Deployment auth-eu-pgbouncer: the PgBouncer settings are written but applied nowhere"
    ]


async def test_a_cleanup_cronjob_someone_else_owns_is_left_alone_and_reported(
    cluster: Cluster, operator: object
) -> None:
    helm_cronjob = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "auth-cleanup", "labels": {"app.kubernetes.io/managed-by": "Helm"}},
        "spec": {"schedule": "*/10 * * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}},
    }
    await cluster.create("/apis/batch/v1", "cronjobs", helm_cronjob)
    before = cluster.read("batch/v1/cronjobs", "auth-cleanup")

    await cluster.create(AUTHCONFIGS_API, "authconfigs", authconfig_object(SPEC))
    degraded = await until_degraded(cluster, "Conflict")
    assert "cleanup.mode" in degraded["message"]
    assert cluster.read("batch/v1/cronjobs", "auth-cleanup") == before
    assert cluster.read("v1/configmaps", "auth-overrides") is not None  # the settings still apply


async def test_pool_sizing_problems_are_warnings_in_status_not_failures(cluster: Cluster, operator: object) -> None:
    spec = with_spec("database.pool", {"size": 300, "maxOverflow": 100, "timeoutSeconds": 5, "recycleSeconds": 1800})
    await cluster.create(AUTHCONFIGS_API, "authconfigs", authconfig_object(spec))
    (warning,) = (await until_ready(cluster))["status"]["warnings"]
    assert "= 1200 client connections can exceed one PgBouncer's maxClientConn 1000" in warning

    def posted() -> list[dict[str, Any]]:
        return [r.data for r in cluster.emulator.requests_to("POST", "events") if warning in r.data.get("message", "")]

    await cluster.emulator.wait_for(lambda: len(posted()) == 1)  # and an Event on the AuthConfig, once
    (event,) = posted()
    assert (event["type"], event["involvedObject"]["kind"], event["involvedObject"]["name"]) == (
        "Warning", "AuthConfig", "auth"
    )
    await until_passes(cluster, 2)
    assert len(posted()) == 1


async def test_a_restarted_operator_finds_everything_in_place_and_writes_nothing(
    cluster: Cluster, operator_env: None, free_port: int
) -> None:
    async with conftest.running_operator(cluster, free_port):
        await cluster.create(AUTHCONFIGS_API, "authconfigs", authconfig_object(SPEC))
        await until_ready(cluster)
    before = writes(cluster)

    async with conftest.running_operator(cluster, free_port):
        await until_passes(cluster, 2)  # the resume handler, then the timer
    assert writes(cluster) == before


async def test_deleting_the_authconfig_leaves_the_service_deployment_untouched(
    cluster: Cluster, operator: object
) -> None:
    await cluster.create(AUTHCONFIGS_API, "authconfigs", authconfig_object(SPEC))
    owner = await until_ready(cluster)
    deployment = cluster.read("apps/v1/deployments", "auth")
    served = len(list(cluster.emulator))

    await cluster.delete(AUTHCONFIGS_API, "authconfigs", "auth")
    await cluster.emulator.wait_for(lambda: cluster.read(AUTHCONFIGS, "auth") is None)  # finalizer released

    assert cluster.read("apps/v1/deployments", "auth") == deployment
    later = list(cluster.emulator)[served:]
    assert not [r for r in later if r.resource is not None and r.resource.plural == "deployments"
                and r.method.value != "GET"]
    # The children stay for the API server's garbage collector, which follows their owner references.
    overrides = cluster.read("v1/configmaps", "auth-overrides")
    assert overrides is not None
    assert overrides["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
