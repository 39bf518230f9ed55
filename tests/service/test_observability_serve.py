"""`authsvc serve` as it runs for real: several workers behind one /metrics, JSON logs, console traces."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.stack import Stack, free_port
from service.config import Settings
from tests.service.conftest import PASSWORD, environ
from tests.service.test_observability_metrics import parse

pytestmark = pytest.mark.anyio
CLOSE = {"Connection": "close"}  # a new connection per request: the kernel spreads them over the workers


@contextlib.asynccontextmanager
async def serving(
    settings: Settings, stack: Stack, tmp_path: Path, *args: str, port: int | None = None, **env: str
) -> AsyncIterator[tuple[str, Path, Path]]:
    """``authsvc serve`` in a child process; yields its base URL and the files its stdout and stderr go to."""
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROMETHEUS_", "AUTH_"))}
    port = port or free_port()
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service.cli", "serve", "--port", str(port), *args,
            env={**base_env, **environ(stack, settings.keys_dir), "PYTHONUNBUFFERED": "1", **env},
            stdout=stdout, stderr=stderr,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as client, asyncio.timeout(60):
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/health/startup", headers=CLOSE)).status_code == 200:
                        break
                assert process.returncode is None, err.read_text()
                await asyncio.sleep(0.1)
        yield url, out, err
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(20):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


def json_objects(text: str) -> list[dict[str, Any]]:
    """The console exporter prints indented JSON objects one after another."""
    decoder, found, position = json.JSONDecoder(), [], 0
    while (start := text.find("{", position)) != -1:
        value, position = decoder.raw_decode(text, start)
        found.append(value)
    return found


def answering_pids(err: Path) -> set[int]:
    """The worker processes that have logged a `GET / 200` so far."""
    pids = set()
    for line in err.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # the last line may still be being written
            continue
        if record.get("logger") == "service.access" and record.get("message") == "GET / 200":
            pids.add(record["process.pid"])
    return pids


async def test_two_workers_answer_one_scrape_with_the_sum_of_both(
    settings: Settings, stack: Stack, tmp_path: Path
) -> None:
    shared = tmp_path / "metrics"
    async with serving(settings, stack, tmp_path, "--workers", "2", PROMETHEUS_MULTIPROC_DIR=str(shared)) as (
        url, _, err,
    ), httpx.AsyncClient(base_url=url) as client:
        sent = 0
        # the kernel spreads connections over the workers as they accept; a worker still starting may get
        # none of the first ones, so send until both have answered (per the access log; bounded)
        while sent < 400 and (sent < 40 or len(answering_pids(err)) < 2):
            assert (await client.get("/", headers=CLOSE)).status_code == 200
            sent += 1
        totals = set()
        for _ in range(6):  # whichever worker answers, it reports both
            samples = parse((await client.get("/metrics", headers=CLOSE)).text)
            totals.add(samples[(
                "http_server_request_duration_seconds_count",
                frozenset({("http_request_method", "GET"), ("http_route", "/"), ("http_response_status_code", "200")}),
            )])
        pids = {path.stem.rsplit("_", 1)[1] for path in shared.glob("counter_*.db")}
    assert totals == {float(sent)}
    assert len(pids) == 2  # both workers write their own files

    records = [json.loads(line) for line in err.read_text().splitlines()]  # every stderr line is JSON
    access = [r for r in records if r["logger"] == "service.access" and r["message"] == "GET / 200"]
    assert len(access) == sent
    assert all(len(r["request_id"]) == 32 and "trace_id" not in r for r in access)  # tracing is off
    assert len({r["process.pid"] for r in access}) == 2  # both workers answered: the scrapes added them up
    assert any(r["logger"].startswith("uvicorn") for r in records)  # uvicorn's own lines, as JSON too


async def test_the_console_one_liner_shows_the_hashing_time_of_a_login(
    settings: Settings, stack: Stack, tmp_path: Path
) -> None:
    # what docs/observability.md tells a developer to run: OTEL_TRACES_EXPORTER=console scripts/serve
    async with serving(settings, stack, tmp_path, OTEL_TRACES_EXPORTER="console") as (
        url, out, _,
    ), httpx.AsyncClient(base_url=url) as client:
        body = {"username": "carol", "email": "carol@example.com", "password": PASSWORD}
        assert (await client.post("/api/v1/auth/register", json=body)).status_code == 201
        form = {"username": "carol", "password": PASSWORD}
        assert (await client.post("/api/v1/auth/token", data=form)).status_code == 200
    spans = json_objects(out.read_text())
    [login] = [s for s in spans if s["name"] == "POST /api/v1/auth/token"]
    [verify] = [s for s in spans if s["name"] == "password.verify"]
    assert verify["parent_id"] == login["context"]["span_id"]
    assert verify["attributes"]["password.bcrypt.cost"] == 4
    assert verify["attributes"]["password.bcrypt.duration"] > 0
    assert verify["attributes"]["password.queue.wait_time"] >= 0
    assert login["resource"]["attributes"]["service.name"] == "authsvc"
    assert any(s["name"].startswith("SELECT") and s["parent_id"] == login["context"]["span_id"] for s in spans)
