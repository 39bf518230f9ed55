"""kmock's KubernetesEmulator, made to behave like an API server where kopf relies on it (DESIGN §9).

kmock 0.8 gets three things wrong for kopf: it never sets or bumps ``metadata.resourceVersion`` (so
kopf's JSON patch guarded by a resourceVersion ``test``, the way it adds its finalizer, fails); it
replays every object on every watch and ignores ``?resourceVersion=`` (so kopf sees old states as new
events); and it takes a watch's snapshot and subscribes to changes at two moments, so a write between
them is lost. ``Emulator`` keeps one ordered log of changes stamped with a cluster-wide resourceVersion:
lists answer with that version, watches replay the log after the version asked for, and the snapshot
and the subscription happen under one lock. It also stamps the other server-owned metadata (uid,
creationTimestamp, generation bumped on spec changes, a name from ``generateName``), gives the status
subresource its own semantics, answers a failed JSON-patch ``test`` with 422 and a merge patch for a
stale ``resourceVersion`` with 409 as the API server does, skips no-op patches as the API server does,
and can fail chosen requests on purpose (``fail``), before they change anything.

Every request wakes ``wait_for`` so tests wait on conditions, never on the clock.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import jsonpointer
import kmock

VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}
RESOURCES: dict[str, kmock.ResourceInfo] = {
    "auth.platform.dev/v1alpha1/authconfigs": kmock.ResourceInfo(
        kind="AuthConfig", namespaced=True, verbs=VERBS, subresources={"status"}
    ),
    "auth.platform.dev/v1alpha1/authclients": kmock.ResourceInfo(
        kind="AuthClient", namespaced=True, verbs=VERBS, subresources={"status"}
    ),
    "v1/configmaps": kmock.ResourceInfo(kind="ConfigMap", namespaced=True, verbs=VERBS),
    "v1/secrets": kmock.ResourceInfo(kind="Secret", namespaced=True, verbs=VERBS),
    "v1/events": kmock.ResourceInfo(kind="Event", namespaced=True, verbs=VERBS),
    "v1/namespaces": kmock.ResourceInfo(kind="Namespace", namespaced=False, verbs=VERBS),
    "apps/v1/deployments": kmock.ResourceInfo(
        kind="Deployment", namespaced=True, verbs=VERBS, subresources={"status", "scale"}
    ),
    "batch/v1/cronjobs": kmock.ResourceInfo(kind="CronJob", namespaced=True, verbs=VERBS, subresources={"status"}),
    "apiextensions.k8s.io/v1/customresourcedefinitions": kmock.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False, verbs=VERBS
    ),
}

Key = tuple[kmock.resource, str | None, str]


@dataclasses.dataclass
class Fault:
    """Answer the next ``times`` matching requests with ``status``; ``hits`` are the requests failed."""

    method: str
    plural: str
    name: str | None
    status: int
    times: int
    hits: list[kmock.Request] = dataclasses.field(default_factory=list)


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    _version: int = attrs.field(default=0, init=False)
    _log: list[tuple[int, kmock.resource, dict[str, Any]]] = attrs.field(factory=list, init=False)
    _changed: asyncio.Condition = attrs.field(factory=asyncio.Condition, init=False)
    _faults: list[Fault] = attrs.field(factory=list, init=False)
    _stopping: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for key, info in RESOURCES.items():
            self.resources[key] = info

    # ---- test-facing API

    def fail(self, method: str, plural: str, *, name: str | None = None, status: int = 503, times: int = 1) -> Fault:
        fault = Fault(method.upper(), plural, name, status, times)
        self._faults.append(fault)
        return fault

    async def wait_for(self, predicate: Callable[[], bool], within: float = 15) -> None:
        """Until ``predicate()`` holds; it is re-checked after every request the emulator serves."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), within)

    def read(self, plural_key: str, namespace: str, name: str) -> dict[str, Any] | None:
        key = (kmock.resource(plural_key), namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    def requests_to(self, method: str, plural: str, name: str | None = None) -> list[kmock.Request]:
        return [r for r in self if _matches(r, method.upper(), plural, name)]

    async def stop_watches(self) -> None:
        """End every open watch stream, so the HTTP server can close without waiting for them."""
        async with self._changed:
            self._stopping = True
            self._changed.notify_all()

    # ---- the server side

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        try:
            if request.resource is not None and request.action is not None:
                self._inject_fault(request)
                if request.action in (kmock.action.CREATE, kmock.action.UPDATE, kmock.action.DELETE):
                    async with self._changed:
                        self._write(request)
            # Skip KubernetesEmulator's own bookkeeping (done above); serve the reactions and fallbacks.
            return await super(kmock.KubernetesEmulator, self)._handle(request)
        finally:
            async with self._changed:
                self._changed.notify_all()

    def _inject_fault(self, request: kmock.Request) -> None:
        for fault in self._faults:
            if fault.times > 0 and _matches(request, fault.method, fault.plural, fault.name):
                fault.times -= 1
                fault.hits.append(request)
                raise kmock.KubernetesError(status=fault.status, reason="Injected", message="failed by the test")

    def _write(self, request: kmock.Request) -> None:
        assert request.resource is not None
        if request.action == kmock.action.CREATE:
            if "name" not in request.data.get("metadata", {}) and request.data["metadata"].get("generateName"):
                # as the API server does for kopf's Events; the request shows the name given
                request.data["metadata"]["name"] = request.data["metadata"]["generateName"] + uuid.uuid4().hex[:5]
            body = copy.deepcopy(request.data)
            meta = body.setdefault("metadata", {})
            namespace = request.namespace or meta.get("namespace")
            key: Key = (request.resource, namespace, meta["name"])
            if self._exists(key):
                raise kmock.KubernetesError(status=409, reason="AlreadyExists", message=f"{meta['name']} exists")
            if namespace:
                meta["namespace"] = namespace
            meta.update(
                uid=str(uuid.uuid4()),
                creationTimestamp=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                generation=1,
            )
            self._store(key, body, "ADDED")
            return

        key = (request.resource, request.namespace, str(request.name))
        if not self._exists(key):
            raise kmock.KubernetesObjectNotFoundError()
        old = copy.deepcopy(self.objects[key].raw)
        if request.action == kmock.action.DELETE:
            if old["metadata"].get("finalizers"):
                if not old["metadata"].get("deletionTimestamp"):
                    old["metadata"]["deletionTimestamp"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                    self._store(key, old, "MODIFIED")
            else:
                self._store(key, old, "DELETED")
            return

        precondition = request.data.get("metadata", {}).get("resourceVersion") if isinstance(request.data, Mapping) \
            else None
        if precondition is not None and precondition != old["metadata"].get("resourceVersion"):
            # a merge patch naming a resourceVersion applies only to that version, as on the API server
            raise kmock.KubernetesError(status=409, reason="Conflict", message="the object has been modified")
        new = _patched(old, request)
        has_status = "status" in self.resources[request.resource].subresources
        if request.subresource == "status":
            new = {**old, "status": new.get("status")}
        elif has_status:
            new["status"] = old.get("status")
        if new.get("status") is None:
            new.pop("status", None)
        for field in ("uid", "creationTimestamp", "generation", "namespace", "name", "resourceVersion"):
            if field in old["metadata"]:
                new.setdefault("metadata", {})[field] = old["metadata"][field]
        if new == old:
            return  # a no-op patch changes nothing, not even the resourceVersion
        if new.get("spec") != old.get("spec"):
            new["metadata"]["generation"] = old["metadata"].get("generation", 0) + 1
        gone = new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers")
        self._store(key, new, "DELETED" if gone else "MODIFIED")

    def _exists(self, key: Key) -> bool:
        return key in self.objects and not self.objects[key].deleted

    def _store(self, key: Key, body: dict[str, Any], event: str) -> None:
        self._version += 1
        body["metadata"]["resourceVersion"] = str(self._version)
        if key not in self.objects:
            self.objects[key] = body
        elif self.objects[key].deleted:
            self.objects[key].create(body)
        else:
            self.objects[key].history.append(body)
        if event == "DELETED":
            self.objects[key].delete()
        self._log.append((self._version, key[0], {"type": event, "object": copy.deepcopy(body)}))

    async def _serve_fetch(self, request: kmock.Request) -> kmock.Payload:
        assert request.resource is not None
        key = (request.resource, request.namespace, str(request.name))
        if not self._exists(key):
            raise kmock.KubernetesObjectNotFoundError()
        return self.objects[key].raw

    async def _serve_create(self, request: kmock.Request) -> kmock.Payload:
        assert request.resource is not None
        namespace = request.namespace or request.data.get("metadata", {}).get("namespace")
        return self.objects[request.resource, namespace, request.data["metadata"]["name"]].raw

    async def _serve_update(self, request: kmock.Request) -> kmock.Payload:
        assert request.resource is not None
        return self.objects[request.resource, request.namespace, str(request.name)].last.raw

    async def _serve_delete(self, request: kmock.Request) -> kmock.Payload:
        assert request.resource is not None
        return self.objects[request.resource, request.namespace, str(request.name)].last.raw

    async def _serve_list(self, request: kmock.Request) -> kmock.Payload:
        if request.resource not in self.resources:
            raise kmock.KubernetesResourceNotFoundError()
        async with self._changed:
            return {
                "apiVersion": "v1",
                "kind": "List",
                "metadata": {"resourceVersion": str(self._version)},
                "items": [copy.deepcopy(obj.raw) for key, obj in self.objects.items()
                          if not obj.deleted and _in_scope(request, key)],
            }

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[kmock.Payload]:
        yield b""  # send the headers now: a watch with nothing to say yet is still a watch
        since = request.params.get("resourceVersion") or None
        async with self._changed:
            if since is None:  # no version: the current state as ADDED, then the changes after it
                cursor = self._version
                backlog = [{"type": "ADDED", "object": copy.deepcopy(obj.raw)}
                           for key, obj in self.objects.items() if not obj.deleted and _in_scope(request, key)]
            else:
                cursor, backlog = int(since), []
        for event in backlog:
            yield event
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: self._stopping or self._version > cursor)  # noqa: B023
                if self._stopping:
                    return
                events = [event for version, resource, event in self._log
                          if version > cursor and _in_scope(request, (resource, _namespace(event), ""))]
                cursor = self._version
            for event in events:
                yield copy.deepcopy(event)


def _patched(old: Mapping[str, Any], request: kmock.Request) -> dict[str, Any]:
    content_type = next((v for k, v in request.headers.items() if k.lower() == "content-type"), "")
    if "json-patch" in content_type:
        try:
            result: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(dict(old)), request.data)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(exc)) from None
        return result
    merged: dict[str, Any] = _merge_patch(old, request.data)  # merge and strategic-merge patches alike
    return merged


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge, null removes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = copy.deepcopy(dict(target)) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _in_scope(request: kmock.Request, key: Key) -> bool:
    resource, namespace, _ = key
    return bool(resource == request.resource and (request.namespace is None or namespace == request.namespace))


def _namespace(event: Mapping[str, Any]) -> str | None:
    namespace: str | None = event["object"].get("metadata", {}).get("namespace")
    return namespace


def _matches(request: kmock.Request, method: str, plural: str, name: str | None) -> bool:
    if request.resource is None or request.resource.plural != plural or request.method.value != method:
        return False
    if request.subresource is not None:
        return False
    body_name = request.data.get("metadata", {}).get("name") if isinstance(request.data, Mapping) else None
    return name is None or name in (request.name, body_name)
