"""What observability costs per request: no middleware, tracing off (the default), tracing on.

    python bench/tracing_overhead.py [--rounds 3] [--index 3000] [--me 1000] [--logins 300]

Starts a throwaway PostgreSQL + PgBouncer + Redis (devtools/stack.py), then runs each mode in its own
process (OpenTelemetry's tracer provider is per process) against the same stack, in-process over
httpx's ASGI transport: no network and no uvicorn, so the differences are not diluted by them and
the percentages are upper bounds of what a real deployment sees. Requests are sequential. The
figure to read is CPU time per request (``time.process_time``, every thread of the server process,
the span exporter's included): on a shared machine it is far steadier than wall-clock latency,
which is printed too (p50, p99). Each figure is the median of ``--rounds`` rounds.

Modes:
  bare       the app without ``telemetry.instrument`` (no request id, access log, latency histogram)
  off        what ships with no OTEL_* set: request id, JSON access log line, latency histogram;
             the password.* spans are the OpenTelemetry API's no-op spans
  on         tracing on, every request sampled, spans batched to an exporter that drops them
             (the SDK's and the instrumentations' cost, not the network's)
  on-10%     tracing on, parentbased_traceidratio 0.1 (the chart's default sampler)

Workloads: ``GET /`` (no I/O), ``GET /api/v1/auth/me`` (JWT check, Redis, PostgreSQL), and a
``POST /api/v1/auth/token`` login at bcrypt cost 4 (a real login is at cost 12, ~250 ms, which
makes any overhead here vanish).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MODES = ("bare", "off", "on", "on-10%")
PASSWORD = "correct horse battery"  # noqa: S105 - a throwaway account


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--index", type=int, default=3000, help="GET / requests per round")
    parser.add_argument("--me", type=int, default=1000, help="GET /me requests per round")
    parser.add_argument("--logins", type=int, default=300, help="logins per round")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(asyncio.run(measure(args.child, args.index, args.me, args.logins))))
        return 0

    from devtools.stack import Stack
    from service import keys, migrations
    from service.config import Settings

    with tempfile.TemporaryDirectory(prefix="authsvc-bench-") as scratch, Stack(Path(scratch) / "stack") as stack:
        keys_dir = Path(scratch) / "keys"
        keys.generate(keys_dir, kid="bench")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AUTH_", "PROMETHEUS_"))},
            **stack.environ(),
            "AUTH_KEYS_DIR": str(keys_dir),
            "AUTH_DATA_DIR": str(Path(scratch) / "data"),
            "AUTH_BCRYPT_COST": "4",
            "AUTH_RATE_LIMIT_ENABLED": "false",
            "AUTH_LOG_LEVEL": "INFO",
        }
        migrations.upgrade(Settings.from_environ(env))
        results: dict[str, list[dict[str, dict[str, float]]]] = {mode: [] for mode in MODES}
        for round_ in range(args.rounds):
            for mode in MODES:  # interleaved, so drift on the machine touches every mode alike
                print(f"round {round_ + 1}/{args.rounds}: {mode}", file=sys.stderr, flush=True)
                child = subprocess.run(  # noqa: S603 - our own script
                    [sys.executable, __file__, "--child", mode, "--index", str(args.index),
                     "--me", str(args.me), "--logins", str(args.logins)],
                    env=env, cwd=ROOT, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                )
                results[mode].append(json.loads(child.stdout))
    report(results)
    return 0


def report(results: dict[str, list[dict[str, dict[str, float]]]]) -> None:
    rounds = len(results["bare"])
    print("\nper request, µs: CPU time of the server process (all its threads) and wall-clock latency;")
    print(f"median of {rounds} rounds, in-process over the ASGI transport, sequential requests\n")
    print(f"{'workload':<9} {'mode':<7} {'CPU':>8} {'Δ bare':>8} {'Δ off':>8} {'p50':>8} {'p99':>8}")
    for workload in results["bare"][0]:
        figures = {
            mode: {stat: statistics.median(run[workload][stat] for run in runs) for stat in ("cpu", "p50", "p99")}
            for mode, runs in results.items()
        }
        bare, off = figures["bare"]["cpu"], figures["off"]["cpu"]
        for mode in MODES:
            cpu = figures[mode]["cpu"]
            print(
                f"{workload:<9} {mode:<7} {cpu:>8.0f} {cpu - bare:>+8.0f} {cpu - off:>+8.0f}"
                f" {figures[mode]['p50']:>8.0f} {figures[mode]['p99']:>8.0f}"
                f"   CPU {100 * (cpu - bare) / bare:+.1f}% vs bare, {100 * (cpu - off) / off:+.1f}% vs off"
            )
        print()


async def measure(mode: str, index: int, me: int, logins: int) -> dict[str, dict[str, float]]:
    import httpx
    from asgi_lifespan import LifespanManager
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from service import logs, telemetry
    from service.app import create_app
    from service.config import Settings

    class Dropped(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    settings = Settings.from_environ(os.environ)
    logs.setup(settings.log_level)  # JSON access lines, to our stderr (the parent discards it)
    if mode == "bare":
        telemetry.instrument = lambda app: None
    elif mode.startswith("on"):
        sampler = ParentBased(TraceIdRatioBased(0.1)) if mode == "on-10%" else None
        provider = TracerProvider(sampler=sampler)
        provider.add_span_processor(BatchSpanProcessor(Dropped()))
        telemetry.enable(provider)

    async with LifespanManager(create_app(settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            username = f"bench{os.getpid()}"
            body = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
            expect(await client.post("/api/v1/auth/register", json=body), 201)
            form = {"username": username, "password": PASSWORD}
            token = (await client.post("/api/v1/auth/token", data=form)).json()["access_token"]
            bearer = {"Authorization": f"Bearer {token}"}

            async def index_page() -> None:
                expect(await client.get("/"), 200)

            async def me_page() -> None:
                expect(await client.get("/api/v1/auth/me", headers=bearer), 200)

            async def login() -> None:
                expect(await client.post("/api/v1/auth/token", data=form), 200)

            return {
                "GET /": await timed(index_page, index),
                "GET /me": await timed(me_page, me),
                "login": await timed(login, logins),
            }


def expect(response: Any, status: int) -> None:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.method} {response.request.url.path}: {response.status_code}")


async def timed(call: Any, count: int) -> dict[str, float]:
    for _ in range(max(20, count // 10)):  # warm-up: connections, caches, lazy imports
        await call()
    samples = []
    cpu_begun = time.process_time()  # every thread of this process: bcrypt, the span exporter's
    for _ in range(count):
        begun = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - begun) * 1e6)
    cpu = (time.process_time() - cpu_begun) * 1e6 / count
    samples.sort()
    return {"cpu": cpu, "p50": samples[len(samples) // 2], "p99": samples[int(len(samples) * 0.99) - 1]}


if __name__ == "__main__":
    sys.exit(main())
