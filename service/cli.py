"""``authsvc``: serve | migrate | cleanup | keys generate | check-config."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from service import __version__, logs
from service.config import ConfigError, Settings

log = logging.getLogger("service.cli")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="authsvc",
        description="Authentication service. Settings come from AUTH_* environment variables "
        "(docs/configuration.md); with none set it runs on SQLite in ./.authsvc.",
    )
    top.add_argument("--version", action="version", version=f"authsvc {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP service under uvicorn")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 in pods)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")

    migrate = commands.add_parser("migrate", help="upgrade the database schema (Alembic) to this release")
    migrate.add_argument("--revision", default="head", help="target revision (default head)")

    cleanup = commands.add_parser("cleanup", help="delete expired refresh tokens and long-dead sessions")
    cleanup.add_argument("--loop", action="store_true", help="run forever (sidecar mode)")
    cleanup.add_argument("--interval", type=int, default=None, help="seconds between passes with --loop "
                         "(default AUTH_CLEANUP_INTERVAL)")
    cleanup.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics "
                         "(auth_cleanup_rows_deleted_total) on this port, for the --loop sidecar")

    keys = commands.add_parser("keys", help="signing-key tools")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    generate = key_commands.add_parser("generate", help="write a new private signing key <kid>.pem")
    generate.add_argument("--dir", type=Path, default=None, help="folder (default AUTH_KEYS_DIR)")
    generate.add_argument("--kid", default=None, help="key id (default: a UTC timestamp)")
    generate.add_argument("--algorithm", choices=["EdDSA", "RS256", "ES256"], default="EdDSA")

    commands.add_parser("check-config", help="validate the AUTH_* settings and exit")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_environ(os.environ)
    except ConfigError as exc:
        print(f"authsvc: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.setup(settings.log_level)  # JSON lines on stderr, with trace and request ids
    match args.command:
        case "serve":
            return serve(args.host, args.port, args.workers, settings.log_level)
        case "migrate":
            from service import migrations

            migrations.upgrade(settings, args.revision)
            print(f"schema at {args.revision}")
            return 0
        case "cleanup":
            if args.metrics_port:
                import prometheus_client

                prometheus_client.start_http_server(args.metrics_port)  # a daemon thread
            return asyncio.run(cleanup(settings, args.loop, args.interval or settings.cleanup_interval))
        case "keys":
            from service import keys

            path = keys.generate(args.dir or settings.keys_dir, args.kid, args.algorithm)
            print(path)
            return 0
        case "check-config":
            print("configuration ok")
            return 0
    return 2  # unreachable: argparse requires a command


def serve(host: str, port: int, workers: int, log_level: str = "INFO") -> int:
    import uvicorn

    metrics_dir(workers)  # N workers share PROMETHEUS_MULTIPROC_DIR: /metrics answers with their sum
    # Each worker sizes its bcrypt pool to its share of the CPUs (Settings.processes): N workers of
    # "all CPUs" each would oversubscribe the cores and starve the event loops.
    os.environ["WEB_CONCURRENCY"] = str(workers)
    uvicorn.run(
        "service.app:main",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        lifespan="on",
        proxy_headers=False,  # X-Forwarded-For is believed only from AUTH_TRUSTED_PROXIES
        server_header=False,
        # an idle keep-alive connection is closed after 5 s (uvicorn's default, stated because docs/design.md
        # relies on it); bodies are bounded by AUTH_REQUEST_BODY_TIMEOUT, headers by the proxy in front
        timeout_keep_alive=5,
        log_config=logs.config(log_level),  # applied in every worker process
        access_log=False,  # service.access logs each request, with its route, duration and ids
    )
    return 0


def metrics_dir(workers: int) -> Path | None:
    """For N > 1 workers: the ``PROMETHEUS_MULTIPROC_DIR`` they share (see service/metrics.py).

    Runs before anything imports prometheus_client, which picks its mode on import. A directory the
    operator set is used and its ``*.db`` files removed (a previous run's values must not be added
    to this one's); otherwise a temporary one is made and removed at exit.
    """
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not configured and workers <= 1:
        return None  # one process: the normal registry, with the process and GC collectors
    if configured:
        folder = Path(configured)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
    else:
        import atexit
        import shutil
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="authsvc-metrics-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)  # the workers inherit it
    return folder


async def cleanup(settings: Settings, loop: bool, interval: int) -> int:
    from service import cleanup as sweep
    from service import database

    engine = database.create_engine(settings, settings.database_url, pool=False)
    sessions = database.sessionmaker(engine)
    stop = asyncio.Event()
    if loop:
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    try:
        while True:
            counts = await sweep.run_once(sessions, settings, dt.datetime.now(dt.UTC))
            print(
                f"cleanup: deleted {counts.refresh_tokens} refresh tokens, {counts.sessions} sessions"
                + (" (stopped: another replica holds the cleanup lock)" if counts.skipped else ""),
                flush=True,
            )
            if not loop:
                return 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)  # the schedule, or SIGTERM
            if stop.is_set():
                return 0
    finally:
        await engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
