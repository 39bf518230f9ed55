"""Slow clients against `authsvc serve`: a body that trickles in is cut off, not waited for."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import anyio
import pytest

from devtools.stack import Stack
from service.config import Settings
from tests.service.test_observability_serve import serving

pytestmark = pytest.mark.anyio

TIMEOUT = 1.0  # AUTH_REQUEST_BODY_TIMEOUT for these tests
SLOW = 10  # connections, as in the audit


async def trickle(url: str) -> tuple[float, bytes]:
    """Headers at once, then the body a byte every 5 s, as in the audit; returns how long after the headers
    the server answered, and all it sent before it closed the connection."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = b"username=carol&password=correct+horse+battery"
    head = (
        "POST /api/v1/auth/token HTTP/1.1\r\nHost: auth.test\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    try:
        writer.write(head.encode())
        await writer.drain()
        sent = time.monotonic()

        async def dribble() -> None:
            with contextlib.suppress(ConnectionError):
                for byte in body[:-1]:  # never the last one: without a cut-off this would wait for ever
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await anyio.sleep(5)  # the slow client itself, not a synchronisation

        async with anyio.create_task_group() as group:
            group.start_soon(dribble)
            first = await reader.read(1)
            elapsed = time.monotonic() - sent
            group.cancel_scope.cancel()  # the client gives up once answered
        rest = await reader.read()  # to the end: the server closes the connection
        return elapsed, first + rest
    finally:
        writer.close()


async def test_bodies_trickling_in_get_408_and_their_connections_closed(
    settings: Settings, stack: Stack, tmp_path: Path
) -> None:
    async with serving(settings, stack, tmp_path, AUTH_REQUEST_BODY_TIMEOUT=str(TIMEOUT)) as (url, _, _):
        with anyio.fail_after(TIMEOUT + 15):  # the body would take minutes, and never end
            results = await asyncio.gather(*(trickle(url) for _ in range(SLOW)))
    for elapsed, answer in results:
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), answer
        assert b"connection: close" in head.lower()
        assert json.loads(payload) == {
            "error": "request_timeout",
            "error_description": f"request body not received within {TIMEOUT:g}s",
            "detail": f"request body not received within {TIMEOUT:g}s",
        }
        # cut off at the deadline (asyncio timers may fire a clock tick early), on a busy machine too
        assert TIMEOUT - 0.05 <= elapsed < TIMEOUT + 5
