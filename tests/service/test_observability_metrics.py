"""`GET /metrics`, parsed with Prometheus' own parser: each series moves after the action it counts.

Counters are process-wide and other tests move them too, so every check is a difference between
two scrapes around one action.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import threading
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from devtools.polling import wait_for
from devtools.stack import Stack
from service import cleanup, cli, metrics, passwords
from service.routes import ALL
from tests.service.conftest import PASSWORD, Running, login, make_settings, register

pytestmark = pytest.mark.anyio
TOKEN = "/api/v1/auth/token"
ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "auth-platform"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def parse(exposition: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def requests(route: str, method: str, status: int) -> dict[str, str]:
    return {"http_request_method": method, "http_route": route, "http_response_status_code": str(status)}


async def test_request_latency_is_counted_by_route_template_method_and_status(app: Running) -> None:
    account = await register(app.client)
    before = await scrape(app.client)
    await login(app.client, account)
    await app.client.post(TOKEN, data={"username": "alice", "password": "wrong password"})
    await app.client.get("/no/such/path/eyJ-not-a-label")
    await app.client.request("BREW", "/")
    after = await scrape(app.client)
    count = "http_server_request_duration_seconds_count"
    assert moved(before, after, count, **requests(TOKEN, "POST", 200)) == 1
    assert moved(before, after, count, **requests(TOKEN, "POST", 401)) == 1
    assert moved(before, after, count, **requests("unmatched", "GET", 404)) == 1  # never the raw path
    assert moved(before, after, count, **requests("/", "_OTHER", 405)) == 1  # unknown methods folded
    assert moved(before, after, "http_server_request_duration_seconds_sum", **requests(TOKEN, "POST", 200)) > 0
    assert not any("/no/such/path" in str(labels) for _, labels in after)


async def test_hash_time_and_queue_wait_are_observed_per_operation(app: Running) -> None:
    before = await scrape(app.client)
    account = await register(app.client)
    await login(app.client, account)
    after = await scrape(app.client)
    for operation in ("hash", "verify"):
        assert moved(before, after, "auth_password_hash_duration_seconds_count", operation=operation) == 1
        assert moved(before, after, "auth_password_hash_duration_seconds_sum", operation=operation) > 0
        assert moved(before, after, "auth_password_queue_wait_seconds_count", operation=operation) == 1


async def test_queue_depth_in_flight_and_admission_rejections_follow_the_hash_pool(
    running_app: Any, stack: Stack, keys_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(stack, keys_dir, AUTH_HASH_WORKERS="1", AUTH_HASH_QUEUE_SIZE="1")
    idle = parse(metrics.render().decode())  # this process, no app running
    async with running_app(settings) as app:
        await register(app.client)
        before = await scrape(app.client)
        assert moved(idle, before, "auth_password_workers") == 1
        gate = threading.Event()
        real = bcrypt.checkpw
        monkeypatch.setattr(passwords.bcrypt, "checkpw", lambda s, h: gate.wait() and real(s, h))
        form = {"username": "alice", "password": PASSWORD}
        admitted = [asyncio.create_task(app.client.post(TOKEN, data=form)) for _ in range(2)]
        try:
            await wait_for(lambda: app.resources.hasher.in_flight == 2)
            busy = await scrape(app.client)
            assert moved(before, busy, "auth_password_in_flight") == 2  # one running, one waiting
            assert moved(before, busy, "auth_password_queue_depth") == 1
            assert (await app.client.post(TOKEN, data=form)).status_code == 503
            shed = await scrape(app.client)
            assert moved(busy, shed, "auth_password_admission_rejected_total") == 1
            latency = "http_server_request_duration_seconds_count"
            assert moved(busy, shed, latency, **requests(TOKEN, "POST", 503)) == 1
        finally:
            gate.set()
            await asyncio.gather(*admitted)
        after = await scrape(app.client)
        assert moved(before, after, "auth_password_in_flight") == 0
        assert moved(before, after, "auth_password_queue_depth") == 0
    assert moved(idle, parse(metrics.render().decode()), "auth_password_workers") == 0  # closed with the app


async def test_refresh_token_reuse_is_counted(app: Running) -> None:
    pair = await login(app.client, await register(app.client))
    await app.client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    before = await scrape(app.client)
    reused = await app.client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert reused.status_code == 401
    after = await scrape(app.client)
    assert moved(before, after, "auth_refresh_reuse_detected_total") == 1


async def test_pool_gauges_follow_checkouts_and_the_acquire_wait_is_timed(app: Running) -> None:
    before = await scrape(app.client)
    assert value(before, "auth_db_pool_size", pool="primary") == app.resources.settings.db_pool_size
    async with app.resources.sessions() as db:
        await db.execute(text("SELECT 1"))
        during = await scrape(app.client)
    after = await scrape(app.client)
    assert value(during, "auth_db_pool_checked_out", pool="primary") == 1
    assert value(after, "auth_db_pool_checked_out", pool="primary") == 0
    assert value(after, "auth_db_pool_idle", pool="primary") >= 1
    assert value(after, "auth_db_pool_overflow", pool="primary") == 0
    assert moved(before, after, "auth_db_pool_acquire_seconds_count", pool="primary") == 1


async def test_a_checkout_waiting_for_a_full_pool_is_seen_and_its_timeout_counted(
    running_app: Any, stack: Stack, keys_dir: Path
) -> None:
    settings = make_settings(
        stack, keys_dir, AUTH_DB_POOL_SIZE="1", AUTH_DB_MAX_OVERFLOW="0", AUTH_DB_POOL_TIMEOUT="0.5"
    )
    async with running_app(settings) as app:
        before = await scrape(app.client)

        async def second_checkout() -> None:
            async with app.resources.sessions() as other:
                await other.execute(text("SELECT 1"))

        async with app.resources.sessions() as db:
            await db.execute(text("SELECT 1"))  # holds the only connection
            waiting = asyncio.create_task(second_checkout())
            samples: Samples = {}

            async def seen_waiting() -> bool:
                nonlocal samples
                samples = await scrape(app.client)
                return value(samples, "auth_db_pool_waiting", pool="primary") == 1

            async with asyncio.timeout(5):
                while not await seen_waiting():  # noqa: ASYNC110 - a gauge has no event to wait on
                    await asyncio.sleep(0.01)
            assert value(samples, "auth_db_pool_checked_out", pool="primary") == 1
            with pytest.raises(sa_exc.TimeoutError):
                await waiting
        after = await scrape(app.client)
    assert moved(before, after, "auth_db_pool_timeouts_total", pool="primary") == 1
    assert value(after, "auth_db_pool_waiting", pool="primary") == 0
    assert moved(before, after, "auth_db_pool_acquire_seconds_sum", pool="primary") >= 0.5  # the wait is timed


async def test_cleanup_counts_the_rows_it_deletes(app: Running) -> None:
    await login(app.client, await register(app.client))
    before = await scrape(app.client)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=400)  # the token expired and the session died long ago
    counts = await cleanup.run_once(app.resources.sessions, app.resources.settings, later)
    after = await scrape(app.client)
    assert counts.refresh_tokens >= 1 and counts.sessions >= 1
    assert moved(before, after, "auth_cleanup_rows_deleted_total", table="refresh_tokens") == counts.refresh_tokens
    assert moved(before, after, "auth_cleanup_rows_deleted_total", table="sessions") == counts.sessions


async def test_cache_results_are_exported_from_the_start(app: Running) -> None:
    samples = await scrape(app.client)
    assert ("auth_user_cache_requests_total", frozenset({("result", "hit")})) in samples
    assert ("auth_user_cache_requests_total", frozenset({("result", "miss")})) in samples


def test_several_workers_share_a_fresh_multiprocess_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(metrics.MULTIPROC_DIR, "")  # recorded, so whatever cli sets is undone afterwards
    monkeypatch.delenv(metrics.MULTIPROC_DIR)
    assert cli.metrics_dir(1) is None  # one process: the normal registry
    made = cli.metrics_dir(2)
    assert made is not None and made.is_dir() and os.environ[metrics.MULTIPROC_DIR] == str(made)
    made.rmdir()
    monkeypatch.setenv(metrics.MULTIPROC_DIR, str(tmp_path))
    (tmp_path / "counter_123.db").write_bytes(b"left by the previous run")
    (tmp_path / "keep.txt").write_text("not ours")
    assert cli.metrics_dir(1) == tmp_path  # set by the operator: used, and wiped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_every_series_and_route_the_dashboard_queries_exists() -> None:
    dashboard = json.loads((CHART / "dashboards" / "authsvc.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exported = set()
    for family in text_string_to_metric_families(metrics.render().decode()):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(family.type, [""])
        exported.update(family.name + suffix for suffix in suffixes)
    queried = {name for expr in queries for name in re.findall(r"\b(?:auth|http_server)_[a-z_]+\b", expr)}
    assert queried and queried <= exported
    routes_queried = {route for expr in queries for route in re.findall(r'http_route="([^"]+)"', expr)}
    assert routes_queried <= {route.path for route in ALL}
    titles = [p["title"] for p in dashboard["panels"] if p["type"] != "row"]
    documented = (ROOT / "docs" / "observability.md").read_text()
    assert [t for t in titles if f"**{t}**" not in documented] == []  # each panel explained


async def test_rate_limit_rejections_are_counted_by_limit(running_app: Any, stack: Stack, keys_dir: Path) -> None:
    settings = make_settings(stack, keys_dir, AUTH_RATE_LIMIT_ENABLED="true", AUTH_RATE_LIMIT_TOKEN="1/minute")
    async with running_app(settings) as app:
        before = await scrape(app.client)
        statuses = [
            (await app.client.post(TOKEN, data={"username": "nobody", "password": "x" * 8})).status_code
            for _ in range(2)
        ]
        after = await scrape(app.client)
    assert statuses == [401, 429]
    assert moved(before, after, "auth_rate_limited_total", limit="token") == 1


async def test_user_cache_misses_then_hits_are_counted(app: Running) -> None:
    from tests.service.conftest import bearer

    pair = await login(app.client, await register(app.client))
    before = await scrape(app.client)
    for _ in range(2):
        assert (await app.client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))).status_code == 200
    after = await scrape(app.client)
    assert moved(before, after, "auth_user_cache_requests_total", result="miss") == 1
    assert moved(before, after, "auth_user_cache_requests_total", result="hit") == 1


async def test_answers_given_without_redis_are_counted(app: Running, stack: Stack) -> None:
    from tests.service.conftest import bearer

    pair = await login(app.client, await register(app.client))
    before = await scrape(app.client)
    stack.redis.stop()
    try:
        assert (await app.client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))).status_code == 200
    finally:
        stack.redis.start()
    after = await scrape(app.client)
    fallbacks = [
        labels for (name, labels), count in after.items()
        if name == "auth_redis_fallback_total" and count > before.get((name, labels), 0.0)
    ]
    assert fallbacks
