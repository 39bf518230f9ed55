"""End to end: signing-key rotation by ``kopf run -m authsvc_operator.handlers`` on the emulator, with a fake clock.

The operator's timer runs every 0.5 s of real time; the tests move the operator's clock (``clock``) and
wait for the Secret to change. At each step the Secret is laid out in a folder and loaded by the
service's own ``service.keys.load``, and tokens are signed and verified with ``service.tokens``: what
the pods would do with it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from authsvc_operator import signing
from service import errors, keys, tokens
from tests.operator import conftest, test_operator
from tests.operator.conftest import AUTHCONFIGS_API, Cluster, FakeClock
from tests.operator.test_operator import AUTHCONFIGS, authconfig_object, conditions, until_degraded, until_ready

pytestmark = pytest.mark.anyio

SECRET = "auth-signing-keys"  # <target>-signing-keys, the chart's name
SPEC: dict[str, Any] = {"targetRef": {"name": "auth"}, "signingKeys": {}}  # 720h, 1h, 48h, EdDSA
HOUR = dt.timedelta(hours=1)
FIRST, SECOND = "20260101-000000", "20260130-230000"  # kids made at T0 and at T0 + 719h
ISSUER, AUDIENCE = "https://auth.example.com", "https://api.example.com"


def secret_data(cluster: Cluster) -> dict[str, bytes]:
    secret = cluster.read("v1/secrets", SECRET)
    return {k: base64.b64decode(v) for k, v in (secret or {}).get("data", {}).items()}


def layout(data: dict[str, bytes]) -> dict[str, Any]:
    return {
        "active": data[signing.ACTIVE_KID].decode() if signing.ACTIVE_KID in data else None,
        "private": sorted(e.removesuffix(".pem") for e in data if e.endswith(".pem") and not e.endswith(".pub.pem")),
        "public": sorted(e.removesuffix(".pub.pem") for e in data if e.endswith(".pub.pem")),
        "other": sorted(e for e in data if not e.endswith(".pem") and e != signing.ACTIVE_KID),
    }


async def until_layout(cluster: Cluster, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, bytes]:
    await cluster.emulator.wait_for(lambda: predicate(layout(secret_data(cluster))))
    return secret_data(cluster)


async def until_status(cluster: Cluster, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    def holds() -> bool:
        return predicate(((cluster.read(AUTHCONFIGS, "auth") or {}).get("status") or {}).get("signingKeys") or {})

    await cluster.emulator.wait_for(holds)
    return dict((cluster.read(AUTHCONFIGS, "auth") or {})["status"]["signingKeys"])


def keyset(data: dict[str, bytes], folder: Path) -> keys.KeySet:
    """What a pod loads from the Secret mounted as its keys folder."""
    folder.mkdir()
    for entry, content in data.items():
        (folder / entry).write_bytes(content)
    return keys.load(folder, None)


def token(keyset: keys.KeySet, now: dt.datetime) -> str:
    return tokens.issue_access(
        keyset, user_id=uuid.uuid4(), username="alice", session_id=uuid.uuid4(), issuer=ISSUER, audience=AUDIENCE,
        ttl=900, now=now,
    )


def verifies(keyset: keys.KeySet, jwt: str, now: dt.datetime) -> bool:
    try:
        tokens.verify_access(keyset, jwt, issuer=ISSUER, audience=AUDIENCE, now=now)
    except errors.InvalidToken:
        return False
    return True


def secret_writes(cluster: Cluster) -> list[str]:
    return [r.method.value for r in cluster.emulator
            if r.resource is not None and r.resource.plural == "secrets" and r.method.value != "GET"]


async def until_passes(cluster: Cluster, count: int) -> None:
    """Until ``count`` more passes have read the Secret: the first of them began after the test's last move."""
    def reads() -> int:
        return len(cluster.emulator.requests_to("GET", "secrets", SECRET))

    start = reads()
    await cluster.emulator.wait_for(lambda: reads() >= start + count)


def phases(status: dict[str, Any]) -> dict[str, str]:
    return {key["kid"]: key["phase"] for key in status.get("keys", [])}


async def test_a_full_rotation_cycle_next_active_retired_removed_with_the_secret_at_each_step(
    cluster: Cluster, clock: FakeClock, operator_env: None, free_port: int, tmp_path: Path
) -> None:
    t0 = clock.current
    async with conftest.running_operator(cluster, free_port) as runner:
        await cluster.create(AUTHCONFIGS_API, "authconfigs", authconfig_object(SPEC))

        # A first key signs at once: nothing else could.
        data = await until_layout(cluster, lambda s: s["active"] is not None)
        assert layout(data) == {"active": FIRST, "private": [FIRST], "public": [], "other": []}
        status = await until_status(cluster, lambda s: s.get("activeKid") == FIRST)
        assert status["nextRotation"] == "2026-01-31T00:00:00Z"
        assert phases(status) == {FIRST: "active"}
        assert (await until_ready(cluster))["status"]["warnings"] == []  # the Deployment mounts this Secret
        one = keyset(data, tmp_path / "1")
        assert one.signing.kid == FIRST

        # publishAhead (1 h) before the rotation, the next key is published, not signing.
        clock.advance(719 * HOUR - dt.timedelta(seconds=1))
        await until_passes(cluster, 2)
        assert layout(secret_data(cluster))["private"] == [FIRST]  # not due yet
        clock.advance(dt.timedelta(seconds=1))
        data = await until_layout(cluster, lambda s: s["private"] == [FIRST, SECOND])
        assert layout(data) == {"active": FIRST, "private": [FIRST, SECOND], "public": [], "other": []}
        status = await until_status(cluster, lambda s: len(s.get("keys", [])) == 2)
        assert phases(status) == {FIRST: "active", SECOND: "next"}
        two = keyset(data, tmp_path / "2")
        assert (two.signing.kid, sorted(two.by_kid)) == (FIRST, [FIRST, SECOND])
        late = token(two, t0 + 720 * HOUR - dt.timedelta(seconds=1))  # signed by a pod just before the switch

        # At the rotation the next key signs and the former signer keeps only its public half.
        clock.advance(HOUR)
        data = await until_layout(cluster, lambda s: s["active"] == SECOND)
        assert layout(data) == {"active": SECOND, "private": [SECOND], "public": [FIRST], "other": []}
        status = await until_status(cluster, lambda s: s.get("activeKid") == SECOND)
        assert phases(status) == {FIRST: "retired", SECOND: "active"}
        assert status["nextRotation"] == "2026-03-02T00:00:00Z"
        retired = next(key for key in status["keys"] if key["kid"] == FIRST)
        assert (retired["retiredAt"], retired["removeAt"]) == ("2026-01-31T00:00:00Z", "2026-02-02T00:00:00Z")
        three = keyset(data, tmp_path / "3")
        assert three.signing.kid == SECOND
        assert three.by_kid[FIRST].private is None
        assert three.by_kid[FIRST].jwk() == one.by_kid[FIRST].jwk()  # the same key, its public half
        assert verifies(three, late, t0 + 720 * HOUR + dt.timedelta(minutes=10))
        assert verifies(three, token(three, clock.current), clock.current)

        # retireAfter (48 h) later the former signer leaves the Secret, and its tokens with it.
        clock.advance(48 * HOUR - dt.timedelta(seconds=1))
        await until_passes(cluster, 2)
        assert layout(secret_data(cluster))["public"] == [FIRST]
        clock.advance(dt.timedelta(seconds=1))
        data = await until_layout(cluster, lambda s: s["public"] == [])
        assert layout(data) == {"active": SECOND, "private": [SECOND], "public": [], "other": []}
        assert phases(await until_status(cluster, lambda s: len(s.get("keys", [])) == 1)) == {SECOND: "active"}
        four = keyset(data, tmp_path / "4")
        assert not verifies(four, token(one, clock.current), clock.current)

        # One write per transition, none for the passes in between.
        assert secret_writes(cluster) == ["POST", "PATCH", "PATCH", "PATCH"]
        authconfig = cluster.read(AUTHCONFIGS, "auth")
        private_pems = [data[f"{SECOND}.pem"]] + [
            pem for folder in ("1", "2") for pem in [(tmp_path / folder / f"{FIRST}.pem").read_bytes()]
        ]
    # No private key in the AuthConfig (status, annotations), in an Event or in the log.
    events = [json.dumps(r.data) for r in cluster.emulator.requests_to("POST", "events")]
    assert f"signing key {SECOND}: new -> next" in runner.output  # the log is there to be searched
    for pem in private_pems:
        body = b"".join(pem.splitlines()[1:-1]).decode()
        for place in (json.dumps(authconfig), runner.output, *events):
            assert body not in place and "PRIVATE KEY" not in place


async def test_a_forced_rotation_publishes_now_signs_after_publish_ahead_and_the_request_is_consumed(
    cluster: Cluster, clock: FakeClock, operator: object
) -> None:
    await cluster.create(AUTHCONFIGS_API, "authconfigs", authconfig_object(SPEC))
    await until_layout(cluster, lambda s: s["active"] == FIRST)
    clock.advance(24 * HOUR)

    await cluster.patch(AUTHCONFIGS_API, "authconfigs", "auth", {"metadata": {"annotations": {signing.FORCE: "now"}}})
    data = await until_layout(cluster, lambda s: len(s["private"]) == 2)
    assert layout(data) == {"active": FIRST, "private": [FIRST, "20260102-000000"], "public": [], "other": []}
    status = await until_status(cluster, lambda s: len(s.get("keys", [])) == 2)
    assert status["nextRotation"] == "2026-01-02T01:00:00Z"  # publishAhead after the request, not 30 days
    await cluster.emulator.wait_for(
        lambda: signing.FORCE not in (cluster.read(AUTHCONFIGS, "auth") or {})["metadata"].get("annotations", {})
    )

    clock.advance(HOUR)
    data = await until_layout(cluster, lambda s: s["active"] == "20260102-000000")
    assert layout(data)["public"] == [FIRST]
    status = await until_status(cluster, lambda s: s.get("activeKid") == "20260102-000000")
    assert status["nextRotation"] == "2026-02-01T01:00:00Z"  # and from there on the schedule


async def test_a_compromised_signer_is_removed_at_once_and_a_new_key_signs(
    cluster: Cluster, clock: FakeClock, operator: object, tmp_path: Path
) -> None:
    await cluster.create(AUTHCONFIGS_API, "authconfigs", authconfig_object(SPEC))
    before = keyset(await until_layout(cluster, lambda s: s["active"] == FIRST), tmp_path / "before")
    stolen = token(before, clock.current)
    clock.advance(dt.timedelta(minutes=10))

    await cluster.patch(AUTHCONFIGS_API, "authconfigs", "auth",
                        {"metadata": {"annotations": {signing.COMPROMISED: f"{FIRST}, unknown"}}})
    data = await until_layout(cluster, lambda s: s["active"] != FIRST)
    assert layout(data) == {"active": "20260101-001000", "private": ["20260101-001000"], "public": [], "other": []}
    after = keyset(data, tmp_path / "after")
    assert not verifies(after, stolen, clock.current)
    assert verifies(after, token(after, clock.current), clock.current)
    await until_status(cluster, lambda s: s.get("activeKid") == "20260101-001000")

    def warned() -> bool:
        return any(r.data.get("type") == "Warning" and FIRST in r.data.get("message", "")
                   for r in cluster.emulator.requests_to("POST", "events"))

    await cluster.emulator.wait_for(warned)
    # The annotation may stay: the kid is gone and nothing more happens.
    writes = secret_writes(cluster)
    await until_passes(cluster, 2)
    assert secret_writes(cluster) == writes


async def test_an_operator_restarted_mid_cycle_finishes_the_rotation_with_the_key_it_published(
    cluster: Cluster, clock: FakeClock, operator_env: None, free_port: int
) -> None:
    async with conftest.running_operator(cluster, free_port):
        await cluster.create(AUTHCONFIGS_API, "authconfigs", authconfig_object(SPEC))
        await until_layout(cluster, lambda s: s["active"] == FIRST)
        clock.advance(719 * HOUR)
        published = await until_layout(cluster, lambda s: s["private"] == [FIRST, SECOND])
    writes = secret_writes(cluster)

    async with conftest.running_operator(cluster, free_port):  # nothing due: the new operator changes nothing
        await until_passes(cluster, 2)
        assert secret_writes(cluster) == writes

    clock.advance(HOUR)  # the rotation falls due while no operator runs
    async with conftest.running_operator(cluster, free_port):
        data = await until_layout(cluster, lambda s: s["active"] == SECOND)
    assert layout(data) == {"active": SECOND, "private": [SECOND], "public": [FIRST], "other": []}
    assert data[f"{SECOND}.pem"] == published[f"{SECOND}.pem"]  # the key verifiers know, not a new one


async def test_the_charts_first_key_is_adopted_as_the_signer_and_kept(
    cluster: Cluster, clock: FakeClock, operator: object, tmp_path: Path
) -> None:
    chart_key = keys.generate(tmp_path, kid="20251201-abc123").read_bytes()
    await cluster.create("/api/v1", "secrets", {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": SECRET, "labels": {"app.kubernetes.io/managed-by": "Helm"},
                     "annotations": {"helm.sh/resource-policy": "keep"}},
        "data": {"20251201-abc123.pem": base64.b64encode(chart_key).decode(), "stray": "eA=="},
    })
    await cluster.create(AUTHCONFIGS_API, "authconfigs", authconfig_object(SPEC))
    data = await until_layout(cluster, lambda s: s["active"] is not None)
    assert layout(data) == {"active": "20251201-abc123", "private": ["20251201-abc123"], "public": [], "other": []}
    assert data["20251201-abc123.pem"] == chart_key
    secret = cluster.read("v1/secrets", SECRET)
    assert secret is not None
    assert secret["metadata"]["labels"]["auth.platform.dev/authconfig"] == "auth"
    assert "ownerReferences" not in secret["metadata"]  # deleting the AuthConfig must not delete the keys
    status = await until_status(cluster, lambda s: s.get("activeKid") == "20251201-abc123")
    assert status["nextRotation"] == "2026-01-31T00:00:00Z"  # a full period from the adoption


async def test_a_hand_edit_of_the_active_kid_is_put_back(cluster: Cluster, clock: FakeClock, operator: object) -> None:
    await cluster.create(AUTHCONFIGS_API, "authconfigs", authconfig_object(SPEC))
    await until_layout(cluster, lambda s: s["active"] == FIRST)
    await cluster.patch("/api/v1", "secrets", SECRET, {"data": {signing.ACTIVE_KID: base64.b64encode(b"x").decode()}})
    assert layout(secret_data(cluster))["active"] == "x"
    await until_layout(cluster, lambda s: s["active"] == FIRST)


async def test_a_secret_claimed_by_another_authconfig_is_left_alone_and_reported(
    cluster: Cluster, clock: FakeClock, operator: object
) -> None:
    await cluster.create("/api/v1", "secrets", {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": SECRET, "labels": {"auth.platform.dev/authconfig": "other"}}, "data": {},
    })
    before = cluster.read("v1/secrets", SECRET)
    await cluster.create(AUTHCONFIGS_API, "authconfigs", authconfig_object(SPEC))
    degraded = await until_degraded(cluster, "Conflict")
    assert "AuthConfig other" in degraded["message"]
    assert cluster.read("v1/secrets", SECRET) == before
    assert cluster.read("v1/configmaps", "auth-overrides") is not None  # the settings still apply


async def test_a_rotation_the_service_could_not_live_with_is_refused_before_any_key_is_made(
    cluster: Cluster, clock: FakeClock, operator: object
) -> None:
    # The CRD's CEL rules refuse this at admission; an object stored before a rule existed gets here.
    spec = {**SPEC, "tokens": {"accessTtlSeconds": 3600}, "signingKeys": {"retireAfter": "1h"}}
    await cluster.create(AUTHCONFIGS_API, "authconfigs", authconfig_object(spec))
    degraded = await until_degraded(cluster, "InvalidSpec")
    assert "retireAfter must be at least the longest token lifetime (3600s)" in degraded["message"]
    assert cluster.read("v1/secrets", SECRET) is None


async def test_without_signing_keys_the_status_says_nothing_of_them_and_the_secret_stays(
    cluster: Cluster, clock: FakeClock, operator: object
) -> None:
    await cluster.create(AUTHCONFIGS_API, "authconfigs", authconfig_object(SPEC))
    await until_status(cluster, lambda s: s.get("activeKid") == FIRST)
    secret = cluster.read("v1/secrets", SECRET)

    await cluster.patch(AUTHCONFIGS_API, "authconfigs", "auth", {"spec": {"signingKeys": None}})
    obj = await until_ready(cluster, generation=2)
    assert "signingKeys" not in obj["status"]
    assert conditions(obj)["Ready"]["status"] == "True"
    clock.advance(800 * HOUR)  # no rotation any more
    await test_operator.until_passes(cluster, 2)
    assert cluster.read("v1/secrets", SECRET) == secret


async def test_keys_written_to_a_secret_the_pods_do_not_mount_are_a_warning(
    cluster: Cluster, clock: FakeClock, operator: object
) -> None:
    await cluster.create(AUTHCONFIGS_API, "authconfigs",
                         authconfig_object({**SPEC, "signingKeys": {"secretName": "elsewhere"}}))
    (warning,) = (await until_ready(cluster))["status"]["warnings"]
    assert warning.startswith("Deployment auth mounts no Secret elsewhere: its pods do not see the rotated keys")
    assert cluster.read("v1/secrets", "elsewhere") is not None  # written all the same
    assert cluster.read("v1/secrets", SECRET) is None
