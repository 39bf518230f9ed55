"""``authsvc``: serve | migrate | cleanup | keys generate | clients … | check-config."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import sys
import traceback
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
    top.add_argument("--debug", action="store_true", help="print the traceback of a failure")
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

    clients = commands.add_parser("clients", help="register and manage OAuth 2.0 clients (docs/oauth.md)")
    client_commands = clients.add_subparsers(dest="clients_command", required=True, metavar="ACTION")
    create = client_commands.add_parser(
        "create", help='register a client; prints {"client_id", "client_secret"} (the secret is shown only here)'
    )
    create.add_argument("name", help="a name for people (1-100 characters)")
    create.add_argument("--grant-type", action="append", required=True, dest="grant_types",
                        choices=["client_credentials", "password", "refresh_token"], help="repeat for several")
    create.add_argument("--scope", default="", help='space-separated scopes it may be granted, e.g. "orders:read"')
    create.add_argument("--audience", action="append", default=[], dest="audiences",
                        help="an audience (aud) its client-credentials tokens may carry; repeat for several")
    create.add_argument("--public", action="store_true", help="a public client: no secret (password grant only)")
    create.add_argument("--token-ttl", type=int, default=None, help="access-token lifetime in seconds (default: "
                        "AUTH_CLIENT_TOKEN_TTL for client credentials, AUTH_ACCESS_TOKEN_TTL for users)")
    client_commands.add_parser("list", help="every client as JSON (never a secret)")
    disable = client_commands.add_parser("disable", help="refuse the client from now on and end its sessions")
    disable.add_argument("client_id")
    rotate = client_commands.add_parser("rotate-secret", help="print a new secret; the old one stays valid a while")
    rotate.add_argument("client_id")
    rotate.add_argument("--keep-previous", type=int, default=86400, metavar="SECONDS",
                        help="how long the current secret stays valid beside the new one (default 86400)")

    check_config = commands.add_parser(
        "check-config", help="report every problem with the AUTH_* settings and the keys, one line each, and exit"
    )
    check_config.add_argument("--connect", action="store_true",
                              help="also reach the database, check its schema revision, and ping Redis")

    # `authsvc CMD --debug` as well as `authsvc --debug CMD`; SUPPRESS: a command's default must not undo the latter
    for command in [*commands.choices.values(), generate]:
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="print the traceback of a failure")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Every failure ends as one line on stderr naming what is wrong and what to do, and a non-zero exit;
    the traceback too with ``--debug`` or AUTH_LOG_LEVEL=DEBUG."""
    args = parser().parse_args(argv)
    settings: Settings | None = None
    try:
        if args.command == "check-config":  # before the settings: it reports every problem, not the first
            return check_config(args.connect)
        settings = Settings.from_environ(os.environ)
        logs.setup(settings.log_level)  # JSON lines on stderr, with trace and request ids
        return run(args, settings)
    except Exception as exc:
        if args.debug or os.environ.get("AUTH_LOG_LEVEL", "").strip().upper() == "DEBUG":
            traceback.print_exc()
        if isinstance(exc, ConfigError):
            print(f"authsvc: configuration error: {exc}", file=sys.stderr)
            return 2
        from service import startup

        print(f"authsvc: {startup.explain(exc, settings)}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace, settings: Settings) -> int:
    match args.command:
        case "serve":
            return serve(args.host, args.port, args.workers, settings.log_level, settings)
        case "migrate":
            from service import migrations, startup

            asyncio.run(startup.revision(settings))  # reachable, and not ahead of this release
            migrations.upgrade(settings, args.revision)
            target = migrations.head(settings) if args.revision == "head" else args.revision
            print(f"schema at {target} on {startup.where(settings.database_url)}")
            return 0
        case "cleanup":
            if args.metrics_port:
                import prometheus_client

                prometheus_client.start_http_server(args.metrics_port)  # a daemon thread
            from service import startup

            asyncio.run(startup.reach(settings))  # one clear line if the database does not answer
            return asyncio.run(cleanup(settings, args.loop, args.interval or settings.cleanup_interval))
        case "keys":
            from service import keys, startup

            try:
                path = keys.generate(args.dir or settings.keys_dir, args.kid, args.algorithm)
            except FileExistsError as exc:
                raise startup.StartupError(f"{exc.filename} exists: keys are never overwritten; pick another --kid") \
                    from None
            except ValueError as exc:
                raise startup.StartupError(f"--kid: {exc}") from None
            print(path)
            return 0
        case "clients":
            if settings.embedded:  # the laptop default sets itself up, as `serve` does
                from service import migrations

                migrations.upgrade(settings)
            return asyncio.run(manage_clients(settings, args))
    return 2  # unreachable: argparse requires a command


def check_config(connect: bool) -> int:
    from service import checkconfig

    report = asyncio.run(checkconfig.check(os.environ, connect))
    for line in report.passed:
        print(line)
    for line in [*report.settings, *report.connections]:
        print(f"authsvc: {line}", file=sys.stderr)
    return report.status


def serve(host: str, port: int, workers: int, log_level: str = "INFO", settings: Settings | None = None) -> int:
    import uvicorn

    metrics_dir(workers)  # N workers share PROMETHEUS_MULTIPROC_DIR: /metrics answers with their sum
    if settings is not None:
        check(settings, host, port, workers)
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


def check(settings: Settings, host: str, port: int, workers: int) -> None:
    """What ``serve`` needs, checked here before uvicorn starts: a failure in the workers' lifespan would be
    printed with tracebacks. Logs the line saying what the service runs on.

    The checks import prometheus_client. The parent of N workers serves no /metrics, so its metrics stay in
    memory: files of its own in the shared directory would be added up as if it were one more worker.
    """
    shared = os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None) if workers > 1 else None
    try:
        from service import startup  # imports prometheus_client, which picks its mode then

        log.info("%s", asyncio.run(startup.check_serve(settings, host, port, workers)))
    finally:
        if shared is not None:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared


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


async def manage_clients(settings: Settings, args: argparse.Namespace) -> int:
    """``authsvc clients …``: JSON on stdout; a refusal is one line on stderr and exit status 1."""
    from service import clients, database, errors

    engine = database.create_engine(settings, settings.database_url, pool=False)
    sessions = database.sessionmaker(engine)
    now = dt.datetime.now(dt.UTC)
    try:
        match args.clients_command:
            case "create":
                scopes = clients.parse_scope(args.scope) or frozenset()
                client, secret = await clients.register(
                    sessions, name=args.name, grant_types=args.grant_types, scopes=scopes,
                    audiences=args.audiences, confidential=not args.public, access_token_ttl=args.token_ttl, now=now,
                )
                print(json.dumps({"client_id": client.id, "client_secret": secret}))
            case "list":
                print(json.dumps([client.shape() for client in await clients.every(sessions)], indent=2))
            case "disable":
                if not await clients.disable(sessions, args.client_id, now):
                    print(f"authsvc: no client {args.client_id}", file=sys.stderr)
                    return 1
                print(json.dumps({"client_id": args.client_id, "disabled": True}))
            case "rotate-secret":
                secret = await clients.rotate_secret(sessions, args.client_id, args.keep_previous, now)
                if secret is None:
                    print(f"authsvc: no enabled confidential client {args.client_id}", file=sys.stderr)
                    return 1
                until = now + dt.timedelta(seconds=args.keep_previous)
                print(json.dumps({"client_id": args.client_id, "client_secret": secret,
                                  "previous_secret_valid_until": until.isoformat()}))
    except errors.ServiceError as exc:
        print(f"authsvc: {exc.detail}", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
