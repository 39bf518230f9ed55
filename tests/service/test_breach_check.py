"""The optional k-anonymity breach check, against a real HTTP server on loopback speaking the range API."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.stack import Stack, free_port
from tests.service.conftest import make_settings

pytestmark = pytest.mark.anyio
BREACHED = "monkey see monkey do"  # not in the offline list; "breached" by this server


class RangeApi:
    """GET /range/<5 hex> → SUFFIX:COUNT lines, like Have I Been Pwned's, padded with zero counts."""

    def __init__(self) -> None:
        self.port = free_port()
        self.asked: list[str] = []
        sha1 = hashlib.sha1(BREACHED.encode()).hexdigest().upper()  # noqa: S324 - the API's own scheme
        self.corpus = {sha1[:5]: [f"{sha1[5:]}:42"]}
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                api.asked.append(self.path)
                prefix = self.path.rsplit("/", 1)[-1]
                lines = [*api.corpus.get(prefix, []), "0" * 35 + ":0"]  # a padding entry
                payload = "\r\n".join(lines).encode()
                self.send_response(200)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/range/"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def range_api() -> Iterator[RangeApi]:
    api = RangeApi()
    yield api
    api.stop()


async def register(client: Any, name: str, password: str) -> Any:
    return await client.post(
        "/api/v1/auth/register", json={"username": name, "email": f"{name}@example.com", "password": password}
    )


async def test_a_breached_password_is_refused_and_only_a_hash_prefix_leaves(
    running_app: Any, stack: Stack, keys_dir: Path, range_api: RangeApi
) -> None:
    async with running_app(make_settings(stack, keys_dir, AUTH_PASSWORD_BREACH_API=range_api.url)) as app:
        refused = await register(app.client, "alice", BREACHED)
        assert (refused.status_code, refused.json()["error"]) == (422, "weak_password")
        assert "breach" in refused.json()["detail"]
        assert (await register(app.client, "bob", "a fine unbreached passphrase")).status_code == 201
    assert len(range_api.asked) == 2 and all(len(path.rsplit("/", 1)[-1]) == 5 for path in range_api.asked)


@pytest.mark.parametrize(("fail_closed", "status"), [("false", 201), ("true", 503)])
async def test_an_unreachable_breach_api_fails_open_or_closed_by_setting(
    running_app: Any, stack: Stack, keys_dir: Path, range_api: RangeApi, fail_closed: str, status: int
) -> None:
    range_api.stop()
    settings = make_settings(
        stack, keys_dir, AUTH_PASSWORD_BREACH_API=range_api.url, AUTH_PASSWORD_BREACH_FAIL_CLOSED=fail_closed
    )
    async with running_app(settings) as app:
        response = await register(app.client, "alice", BREACHED)
        assert response.status_code == status, response.text
        if status == 503:
            assert response.json()["error"] == "unavailable" and response.headers["retry-after"]
