"""What the Redis cache and revoked list save on `GET /api/v1/auth/me`: latency and database queries.

    python bench/me_cache.py [--requests 2000] [--rounds 3]

Starts a throwaway PostgreSQL + PgBouncer + Redis (devtools/stack.py) and runs the app in-process over
httpx's ASGI transport (no network, no uvicorn: the differences are not diluted by them). Requests are
sequential, after a warm-up. Modes, each against the same user and session:

  redis         AUTH_REDIS_URL set, cache warm: epoch, session entry, revoked mark, user generation in one MGET
  redis-down    Redis configured but stopped: the fallback path, one query that checks the session too
  no-cache      Redis up, AUTH_USER_CACHE_TTL=0: the revoked list in Redis, the user from the database
  memory        no AUTH_REDIS_URL: the in-process store of the embedded default (one process only)

Prints p50/p99 latency (µs), CPU µs per request and database queries per request, medians of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PASSWORD = "correct horse battery"  # noqa: S105 - a throwaway account
MODES = ("redis", "redis-down", "no-cache", "memory")


async def measure(environ: dict[str, str], requests: int, stop_redis: Any = None) -> dict[str, float]:
    import httpx
    from asgi_lifespan import LifespanManager
    from sqlalchemy import event

    from service.app import create_app
    from service.config import Settings

    settings = Settings.from_environ(environ)
    async with LifespanManager(create_app(settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            body = {"username": "bench", "email": "bench@example.com", "password": PASSWORD}
            await client.post("/api/v1/auth/register", json=body)
            pair = (await client.post("/api/v1/auth/token", data={"username": "bench", "password": PASSWORD})).json()
            headers = {"Authorization": f"Bearer {pair['access_token']}"}
            if stop_redis:
                stop_redis()
            for _ in range(50):  # warm-up: cache filled, Redis outage noticed
                await expect_ok(client.get("/api/v1/auth/me", headers=headers))
            queries = 0

            def count(*_: Any) -> None:
                nonlocal queries
                queries += 1

            engine = manager._state["resources"].engine.sync_engine
            event.listen(engine, "before_cursor_execute", count)
            latencies = []
            cpu = time.process_time()
            for _ in range(requests):
                started = time.perf_counter()
                await expect_ok(client.get("/api/v1/auth/me", headers=headers))
                latencies.append(time.perf_counter() - started)
            cpu = time.process_time() - cpu
            event.remove(engine, "before_cursor_execute", count)
    latencies.sort()
    return {
        "p50_us": latencies[len(latencies) // 2] * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
        "cpu_us": cpu / requests * 1e6,
        "queries": queries / requests,
    }


async def expect_ok(call: Any) -> None:
    response = await call
    if response.status_code != 200:
        raise RuntimeError(f"me answered {response.status_code}: {response.text}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    from devtools.stack import Stack
    from service import keys, migrations
    from service.config import Settings

    with Stack() as stack, tempfile.TemporaryDirectory() as folder:
        keys.generate(Path(folder), kid="bench")
        base = {
            "AUTH_DATABASE_URL": stack.pgbouncer_url,
            "AUTH_DB_STATEMENT_CACHE_SIZE": "0",
            "AUTH_KEYS_DIR": folder,
            "AUTH_BCRYPT_COST": "4",
            "AUTH_RATE_LIMIT_ENABLED": "false",
            "AUTH_LOG_LEVEL": "WARNING",
        }
        migrations.upgrade(Settings.from_environ(base))
        environs = {
            "redis": {**base, "AUTH_REDIS_URL": stack.redis_url},
            "redis-down": {**base, "AUTH_REDIS_URL": stack.redis_url},
            "no-cache": {**base, "AUTH_REDIS_URL": stack.redis_url, "AUTH_USER_CACHE_TTL": "0"},
            "memory": base,
        }
        results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
        for _ in range(args.rounds):
            for mode in MODES:
                stop = stack.redis.stop if mode == "redis-down" else None
                results[mode].append(asyncio.run(measure(environs[mode], args.requests, stop)))
                stack.redis.start()
                asyncio.run(_wipe(stack.admin_url))
    print(f"GET /api/v1/auth/me, {args.requests} sequential requests, median of {args.rounds} rounds")
    print(f"{'mode':<12}{'p50 µs':>10}{'p99 µs':>10}{'CPU µs':>10}{'queries/req':>13}")
    for mode in MODES:
        row = {key: statistics.median(r[key] for r in results[mode]) for key in results[mode][0]}
        print(f"{mode:<12}{row['p50_us']:>10.0f}{row['p99_us']:>10.0f}{row['cpu_us']:>10.0f}{row['queries']:>13.2f}")
    return 0


async def _wipe(admin_url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(admin_url)
    async with engine.begin() as connection:
        await connection.execute(text("TRUNCATE users, sessions, refresh_tokens CASCADE"))
    await engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
