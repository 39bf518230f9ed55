"""The emulator subclass does what kopf needs from an API server and kmock 0.8 does not (DESIGN §9)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import kmock
import pytest

from tests.operator.emulator import Emulator

pytestmark = pytest.mark.anyio

CONFIGMAPS = "/api/v1/namespaces/ns/configmaps"


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator() as emulator, kmock.Server(emulator):
        try:
            yield emulator
        finally:
            await emulator.stop_watches()


async def call(emulator: Emulator, method: str, path: str, body: Any = None, content_type: str = "") -> Any:
    headers = {"Connection": "close", "Content-Type": content_type or "application/json"}
    async with emulator.request(method, path, data=None if body is None else json.dumps(body), headers=headers) as r:
        return r.status, await r.json()


async def watch(emulator: Emulator, since: str | None, count: int) -> list[dict[str, Any]]:
    params = {"watch": "true", **({"resourceVersion": since} if since else {})}
    events = []
    async with emulator.request("GET", CONFIGMAPS, params=params, headers={"Connection": "close"}) as response:
        async for line in response.content:
            if line.strip():
                events.append(json.loads(line))
            if len(events) == count:
                break
    return events


async def test_every_write_gets_a_new_resource_version_and_the_server_owned_fields(emulator: Emulator) -> None:
    status, created = await call(emulator, "POST", CONFIGMAPS, {"metadata": {"name": "a"}, "data": {"k": "1"}})
    assert status in (200, 201)
    meta = created["metadata"]
    assert (meta["namespace"], meta["generation"], meta["resourceVersion"]) == ("ns", 1, "1")
    assert meta["uid"] and meta["creationTimestamp"]
    _, patched = await call(emulator, "PATCH", f"{CONFIGMAPS}/a", {"data": {"k": "2"}}, "application/merge-patch+json")
    assert patched["metadata"]["resourceVersion"] == "2"
    assert patched["metadata"]["uid"] == meta["uid"]


async def test_a_no_op_patch_changes_nothing(emulator: Emulator) -> None:
    await call(emulator, "POST", CONFIGMAPS, {"metadata": {"name": "a"}, "data": {"k": "1"}})
    _, same = await call(emulator, "PATCH", f"{CONFIGMAPS}/a", {"data": {"k": "1"}}, "application/merge-patch+json")
    assert same["metadata"]["resourceVersion"] == "1"


async def test_a_json_patch_guarded_by_a_stale_resource_version_is_refused_with_422(emulator: Emulator) -> None:
    await call(emulator, "POST", CONFIGMAPS, {"metadata": {"name": "a"}})
    ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/resourceVersion", "value": "0"},
           {"op": "add", "path": "/metadata/finalizers", "value": ["x"]}]
    status, _ = await call(emulator, "PATCH", f"{CONFIGMAPS}/a", ops, "application/json-patch+json")
    assert status == 422
    ops[0]["value"] = "1"
    status, patched = await call(emulator, "PATCH", f"{CONFIGMAPS}/a", ops, "application/json-patch+json")
    assert (status, patched["metadata"]["finalizers"]) == (200, ["x"])


async def test_a_merge_patch_naming_a_stale_resource_version_is_refused_with_409(emulator: Emulator) -> None:
    await call(emulator, "POST", CONFIGMAPS, {"metadata": {"name": "a"}, "data": {"k": "1"}})
    await call(emulator, "PATCH", f"{CONFIGMAPS}/a", {"data": {"k": "2"}}, "application/merge-patch+json")
    stale = {"metadata": {"resourceVersion": "1"}, "data": {"k": "3"}}
    status, _ = await call(emulator, "PATCH", f"{CONFIGMAPS}/a", stale, "application/merge-patch+json")
    assert status == 409
    assert emulator.read("v1/configmaps", "ns", "a")["data"] == {"k": "2"}  # type: ignore[index]
    current = {"metadata": {"resourceVersion": "2"}, "data": {"k": "3"}}
    status, patched = await call(emulator, "PATCH", f"{CONFIGMAPS}/a", current, "application/merge-patch+json")
    assert (status, patched["data"], patched["metadata"]["resourceVersion"]) == (200, {"k": "3"}, "3")


async def test_a_list_carries_the_version_a_watch_resumes_from_without_replaying(emulator: Emulator) -> None:
    await call(emulator, "POST", CONFIGMAPS, {"metadata": {"name": "a"}})
    _, listed = await call(emulator, "GET", CONFIGMAPS)
    assert listed["metadata"]["resourceVersion"] == "1"
    await call(emulator, "POST", CONFIGMAPS, {"metadata": {"name": "b"}})  # after the list, before the watch
    events = await watch(emulator, listed["metadata"]["resourceVersion"], 1)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "b")]


async def test_a_watch_without_a_version_starts_with_the_current_state(emulator: Emulator) -> None:
    await call(emulator, "POST", CONFIGMAPS, {"metadata": {"name": "a"}})
    events = await watch(emulator, None, 1)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a")]


async def test_deleting_an_object_with_finalizers_only_marks_it(emulator: Emulator) -> None:
    await call(emulator, "POST", CONFIGMAPS, {"metadata": {"name": "a", "finalizers": ["x"]}})
    await call(emulator, "DELETE", f"{CONFIGMAPS}/a")
    marked = emulator.read("v1/configmaps", "ns", "a")
    assert marked is not None and marked["metadata"]["deletionTimestamp"]
    await call(emulator, "PATCH", f"{CONFIGMAPS}/a", {"metadata": {"finalizers": None}}, "application/merge-patch+json")
    assert emulator.read("v1/configmaps", "ns", "a") is None


async def test_an_injected_fault_fails_the_request_before_it_changes_anything(emulator: Emulator) -> None:
    fault = emulator.fail("POST", "configmaps", name="a", status=503)
    status, _ = await call(emulator, "POST", CONFIGMAPS, {"metadata": {"name": "a"}})
    assert (status, len(fault.hits), emulator.read("v1/configmaps", "ns", "a")) == (503, 1, None)
    status, _ = await call(emulator, "POST", CONFIGMAPS, {"metadata": {"name": "a"}})
    assert status in (200, 201)
