"""The auth service's admin API as the operator uses it: ``/admin/v1/clients`` (issue 14's contract).

The operator authenticates as the chart's bootstrap client: a client-credentials token with the ``admin``
scope from ``/oauth2/token``, kept until shortly before it expires and fetched again after a 401 (a key
removed as compromised ends it early). Secrets the service answers with are handed to the caller and
never logged; error messages carry the service's ``error`` and ``detail`` only.

Configured from the operator's environment (the chart sets it): ``AUTHCLIENT_SERVICE_URL`` (the Service,
as the operator reaches it), ``AUTHCLIENT_ADMIN_CLIENT_ID`` and ``AUTHCLIENT_ADMIN_CLIENT_SECRET``.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

CLIENTS = "/admin/v1/clients"
TOKEN = "/oauth2/token"  # noqa: S105 - a path
DISCOVERY = "/.well-known/oauth-authorization-server"
_tokens: dict[Endpoint, tuple[str, float]] = {}  # per endpoint: (token, monotonic time to stop using it)


@dataclasses.dataclass(frozen=True)
class Endpoint:
    url: str
    client_id: str
    client_secret: str = dataclasses.field(repr=False)

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> Endpoint | None:
        """None unless all three are set: the operator then serves no AuthClient and says why."""
        url, client_id, secret = (
            env.get(f"AUTHCLIENT_{name}", "").strip()
            for name in ("SERVICE_URL", "ADMIN_CLIENT_ID", "ADMIN_CLIENT_SECRET")
        )
        return cls(url.rstrip("/"), client_id, secret) if url and client_id and secret else None


class AdminError(Exception):
    """The service refused or failed a call; ``status`` 0 means it did not answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status or 'no answer'}: {message}")
        self.status = status

    @property
    def transient(self) -> bool:
        """Worth retrying as is: an outage, an overload, or credentials the service may yet accept."""
        return self.status in (0, 401, 403, 429) or self.status >= 500


class Admin:
    def __init__(self, http: aiohttp.ClientSession, endpoint: Endpoint) -> None:
        self._http = http
        self._endpoint = endpoint

    async def discovery(self) -> dict[str, Any]:
        """The issuer and the token endpoint as the service publishes them (RFC 8414)."""
        return await self._call("GET", DISCOVERY, authorized=False)

    async def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Register a client; the answer holds its ``client_secret``, the only time it is shown."""
        return await self._call("POST", CLIENTS, body)

    async def get(self, client_id: str) -> dict[str, Any] | None:
        try:
            return await self._call("GET", f"{CLIENTS}/{client_id}")
        except AdminError as exc:
            if exc.status == 404:
                return None
            raise

    async def update(self, client_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Change the registration; with ``rotate_secret`` the answer holds the new secret."""
        return await self._call("PATCH", f"{CLIENTS}/{client_id}", body)

    async def disable(self, client_id: str) -> bool:
        """Refuse the client from now on (the service keeps the row); False when it does not know it."""
        try:
            await self._call("DELETE", f"{CLIENTS}/{client_id}")
        except AdminError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def _call(
        self, method: str, path: str, body: Mapping[str, Any] | None = None, *, authorized: bool = True
    ) -> dict[str, Any]:
        for attempt in (1, 2):
            headers = {"Accept": "application/json"}
            if authorized:
                headers["Authorization"] = f"Bearer {await self._token(fresh=attempt == 2)}"
            status, answer = await self._send(method, path, headers, json=body)
            if status == 401 and authorized and attempt == 1:
                continue  # the token may have been ended early: one more try with a new one
            if status >= 400:
                raise AdminError(status, f"{method} {path}: {_problem(answer)}")
            return answer
        raise AssertionError("unreachable")  # pragma: no cover

    async def _token(self, *, fresh: bool) -> str:
        cached = _tokens.get(self._endpoint)
        if cached is not None and not fresh and time.monotonic() < cached[1]:
            return cached[0]
        # client_secret_basic: each part form-urlencoded first (RFC 6749 section 2.3.1)
        endpoint = self._endpoint
        pair = ":".join(urllib.parse.quote_plus(part) for part in (endpoint.client_id, endpoint.client_secret))
        headers = {"Accept": "application/json", "Authorization": f"Basic {base64.b64encode(pair.encode()).decode()}"}
        status, answer = await self._send(
            "POST", TOKEN, headers, data={"grant_type": "client_credentials", "scope": "admin"}
        )
        if status >= 400 or not isinstance(answer.get("access_token"), str):
            raise AdminError(status if status >= 400 else 502, f"POST {TOKEN} as the admin client: {_problem(answer)}")
        lifetime = float(answer.get("expires_in") or 60)
        _tokens[self._endpoint] = (answer["access_token"], time.monotonic() + max(lifetime - 30, lifetime / 2))
        return str(answer["access_token"])

    async def _send(self, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> tuple[int, dict[str, Any]]:
        if kwargs.get("json") is None:
            kwargs.pop("json", None)
        try:
            async with self._http.request(method, self._endpoint.url + path, headers=headers, **kwargs) as response:
                text = await response.text()
                try:
                    answer = json.loads(text) if text else {}
                except ValueError:
                    answer = {"detail": text[:200]}
                return response.status, answer if isinstance(answer, dict) else {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AdminError(0, f"{method} {path}: {exc.__class__.__name__} {exc}") from exc


@contextlib.asynccontextmanager
async def connect(endpoint: Endpoint, request_timeout: float = 15) -> AsyncIterator[Admin]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=request_timeout)) as http:
        yield Admin(http, endpoint)


def _problem(answer: Mapping[str, Any]) -> str:
    """The service's error body, ``{"error": code, "detail": message}``, as one line; never a secret."""
    code, detail = answer.get("error"), answer.get("detail") or answer.get("error_description")
    return f"{code}: {detail}" if code and detail else str(code or detail or "no detail")
