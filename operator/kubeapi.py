"""Just enough of the Kubernetes API for the reconcile: get, create, merge-patch and delete, namespaced.

Why not a client library: the reconcile touches five kinds with four verbs, and kopf already brings
aiohttp and the login (the pod's service account in the cluster, a kubeconfig outside). This reuses both
and adds no dependency tree to the image. Each reconcile opens its own session and closes it, so a
rotated service-account token is read afresh and no idle connection outlives a pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import kopf

FIELD_MANAGER = "authconfig-operator"


@dataclasses.dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str

    def path(self, namespace: str, name: str | None = None) -> str:
        root = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        return f"{root}/namespaces/{namespace}/{self.plural}" + (f"/{name}" if name else "")


CONFIGMAPS = Kind("", "v1", "configmaps")
CRONJOBS = Kind("batch", "v1", "cronjobs")
DEPLOYMENTS = Kind("apps", "v1", "deployments")
SECRETS = Kind("", "v1", "secrets")


class ApiError(Exception):
    """A refused or failed API call. ``status`` 0 means no answer at all (connection, timeout)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status or 'no answer'}: {message}")
        self.status = status

    @property
    def transient(self) -> bool:
        """Worth retrying as is: an outage, an overload or a lost race (409), not a refusal."""
        return self.status == 0 or self.status in (409, 429) or self.status >= 500


class Api:
    def __init__(self, http: aiohttp.ClientSession, server: str) -> None:
        self._http = http
        self._server = server.rstrip("/")

    async def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._call("GET", kind.path(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, kind: Kind, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._call("POST", kind.path(namespace), body)

    async def patch(self, kind: Kind, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return await self._call("PATCH", kind.path(namespace, name), patch)

    async def delete(self, kind: Kind, namespace: str, name: str) -> bool:
        """Delete, and say whether there was anything to delete."""
        try:
            await self._call("DELETE", kind.path(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        params = {}
        if body is not None:
            headers["Content-Type"] = "application/merge-patch+json" if method == "PATCH" else "application/json"
            params["fieldManager"] = FIELD_MANAGER
        try:
            async with self._http.request(
                method, self._server + path, params=params, headers=headers,
                data=None if body is None else json.dumps(body),
            ) as response:
                text = await response.text()
                if response.status >= 400:
                    raise ApiError(response.status, f"{method} {path}: {_message(text)}")
                result: dict[str, Any] = json.loads(text) if text else {}
                return result
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(0, f"{method} {path}: {exc.__class__.__name__} {exc}") from exc


@contextlib.asynccontextmanager
async def connect(request_timeout: float = 15) -> AsyncIterator[Api]:
    """A session with the credentials kopf itself would log in with (service account, else kubeconfig)."""
    info = await asyncio.to_thread(_login)
    ssl = info.as_ssl_context() if info.server.startswith("https") else False
    async with aiohttp.ClientSession(
        headers=info.as_http_headers(),
        connector=aiohttp.TCPConnector(ssl=ssl),
        timeout=aiohttp.ClientTimeout(total=request_timeout),
        trust_env=info.trust_env,
    ) as http:
        yield Api(http, info.server)


def _login() -> kopf.ConnectionInfo:
    settings = kopf.OperatorSettings()  # the logins read only networking.trust_env from it
    info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise ApiError(0, "no credentials: neither a service account token nor a kubeconfig was found")
    return info


def _message(text: str) -> str:
    try:
        status = json.loads(text)
    except ValueError:
        return text[:200]
    return str(status.get("message") or status.get("reason") or text[:200])
