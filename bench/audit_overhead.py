"""What the audit log costs a login: failed logins in a storm, and successful ones.

    python bench/audit_overhead.py [--requests 400] [--concurrency 32] [--rounds 5] [--cost 4]

Starts a throwaway PostgreSQL + PgBouncer + Redis (tests/stack.py) and runs the app in-process over httpx's
ASGI transport (no uvicorn, no network: the differences are not diluted by them). ``--concurrency`` logins
are in flight at once, the way a storm arrives. Modes, interleaved round by round:

  off       failed logins write no event (audit.Log.write replaced by a no-op), successful ones none either
            (audit.record a no-op): the service before the audit log
  batched   the service as it is: a failed login's event joins the next group INSERT and the login is
            answered once it is committed; a successful login's event is one more INSERT in its transaction
  inline    (for comparison) each failed login's event in a transaction of its own

Each round is one app in which the modes alternate in blocks, in rotating order. Prints, per mode, logins
per second and CPU µs per login of this process (all threads: bcrypt included),
and the INSERT statements per failed login; medians of the rounds. Bcrypt cost 4 (the default here) makes
the database's share of a login as large as it gets; at production costs (12: ~250 ms of bcrypt) the same
absolute overhead is a far smaller fraction.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PASSWORD = "correct horse battery"  # noqa: S105 - a throwaway account
MODES = ("off", "batched", "inline")


@contextlib.contextmanager
def mode_of(mode: str, app_resources: Any) -> Iterator[None]:
    from service import audit
    from service.db import audit as queries

    log = app_resources.audit
    original_write, original_record = log.write, audit.record

    async def nothing(*_: Any, **__: Any) -> None:
        return None

    async def inline(row: dict[str, Any]) -> None:
        async with log.sessions.begin() as db:
            await queries.insert(db, [row])

    if mode == "off":
        log.write, audit.record = nothing, nothing
    elif mode == "inline":
        log.write = inline
    try:
        yield
    finally:
        log.write, audit.record = original_write, original_record


async def measure(environ: dict[str, str], requests: int, concurrency: int, blocks: int) -> dict[str, dict[str, float]]:
    """One app; the modes alternate block by block, so a change in the machine's load hits them alike."""
    import httpx
    from asgi_lifespan import LifespanManager
    from sqlalchemy import event

    from service.app import create_app
    from service.config import Settings

    totals = {mode: dict.fromkeys(("failed_s", "failed_cpu", "inserts", "ok_s", "ok_cpu"), 0.0) for mode in MODES}
    async with LifespanManager(create_app(Settings.from_environ(environ))) as manager:
        res = manager._state["resources"]
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            body = {"username": "bench", "email": "bench@example.com", "password": PASSWORD}
            await client.post("/api/v1/auth/register", json=body)
            inserts = 0

            def count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
                nonlocal inserts
                inserts += statement.startswith("INSERT INTO audit_events")

            async def storm(form: dict[str, str], n: int, expected: int) -> tuple[float, float]:
                gate = asyncio.Semaphore(concurrency)

                async def one(i: int) -> None:
                    async with gate:
                        data = {key: value.format(i=i) for key, value in form.items()}
                        response = await client.post("/api/v1/auth/token", data=data)
                        if response.status_code != expected:
                            raise RuntimeError(f"login answered {response.status_code}: {response.text}")

                started, cpu = time.perf_counter(), time.process_time()
                await asyncio.gather(*(one(i) for i in range(n)))
                return time.perf_counter() - started, time.process_time() - cpu

            await storm({"username": "warm{i}", "password": PASSWORD}, 50, 401)  # warm-up
            event.listen(res.engine.sync_engine, "before_cursor_execute", count)
            for block in range(blocks):
                for mode in MODES[block % 3:] + MODES[:block % 3]:  # each mode first, second and last alike
                    with mode_of(mode, res):
                        before = inserts
                        wall, cpu = await storm({"username": "nobody{i}", "password": PASSWORD}, requests, 401)
                        totals[mode]["failed_s"] += wall
                        totals[mode]["failed_cpu"] += cpu
                        totals[mode]["inserts"] += inserts - before
                        wall, cpu = await storm({"username": "bench", "password": PASSWORD}, requests, 200)
                        totals[mode]["ok_s"] += wall
                        totals[mode]["ok_cpu"] += cpu
            event.remove(res.engine.sync_engine, "before_cursor_execute", count)
    n = requests * blocks
    return {
        mode: {
            "failed_per_s": n / t["failed_s"], "failed_cpu_us": t["failed_cpu"] / n * 1e6,
            "inserts_per_failed": t["inserts"] / n, "ok_per_s": n / t["ok_s"], "ok_cpu_us": t["ok_cpu"] / n * 1e6,
        }
        for mode, t in totals.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100, help="logins of each kind per block (default 100)")
    parser.add_argument("--blocks", type=int, default=6, help="blocks per round, modes alternating (default 6)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cost", type=int, default=4, help="AUTH_BCRYPT_COST (default 4)")
    args = parser.parse_args(argv)

    from service import keys, migrations
    from service.config import Settings
    from tests.stack import Stack

    with Stack() as stack, tempfile.TemporaryDirectory() as folder:
        keys.generate(Path(folder), kid="bench")
        environ = {
            "AUTH_DATABASE_URL": stack.pgbouncer_url,
            "AUTH_DB_STATEMENT_CACHE_SIZE": "0",
            "AUTH_REDIS_URL": stack.redis_url,
            "AUTH_KEYS_DIR": folder,
            "AUTH_BCRYPT_COST": str(args.cost),
            "AUTH_HASH_QUEUE_SIZE": str(max(64, args.concurrency * 2)),
            "AUTH_HASH_MAX_WAIT": "60",
            "AUTH_RATE_LIMIT_ENABLED": "false",
            "AUTH_LOG_LEVEL": "WARNING",
        }
        migrations.upgrade(Settings.from_environ(environ))
        results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
        for _ in range(args.rounds):
            measured = asyncio.run(measure(environ, args.requests, args.concurrency, args.blocks))
            for mode in MODES:
                results[mode].append(measured[mode])
            asyncio.run(_wipe(stack.admin_url))
    print(f"POST /api/v1/auth/token, bcrypt cost {args.cost}, {args.requests * args.blocks} failed and as many "
          f"successful logins per mode and round, {args.concurrency} at once; median of {args.rounds} rounds")
    print(f"{'mode':<10}{'failed/s':>10}{'CPU µs':>10}{'INSERTs':>10}{'ok/s':>10}{'CPU µs':>10}")
    for mode in MODES:
        row = {key: statistics.median(r[key] for r in results[mode]) for key in results[mode][0]}
        print(f"{mode:<10}{row['failed_per_s']:>10.0f}{row['failed_cpu_us']:>10.0f}"
              f"{row['inserts_per_failed']:>10.2f}{row['ok_per_s']:>10.0f}{row['ok_cpu_us']:>10.0f}")
    return 0


async def _wipe(admin_url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(admin_url)
    async with engine.begin() as connection:
        await connection.execute(text("TRUNCATE users, sessions, refresh_tokens, audit_events CASCADE"))
    await engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
