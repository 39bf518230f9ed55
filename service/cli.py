"""``authsvc``: serve | migrate | cleanup | keys generate | clients … | users … | audit tail | check-config."""

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

    cleanup = commands.add_parser(
        "cleanup", help="delete expired refresh tokens, long-dead sessions and audit events past AUTH_AUDIT_RETENTION"
    )
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

    users = commands.add_parser("users", help="find, disable, enable and delete users, on the database directly "
                                "(break-glass; recorded in the audit log with the actor `cli`)")
    user_commands = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    listing = user_commands.add_parser("list", help="users as JSON, by lowered username")
    listing.add_argument("--q", default=None, help="a username or email prefix, any case")
    listing.add_argument("--active", choices=["true", "false"], default=None, help="only enabled or disabled users")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    for action, text in (
        ("show", "one user as JSON, with its live sessions"),
        ("disable", "refuse the user's logins and end every session at once"),
        ("enable", "allow the user to log in again"),
        ("delete", "erase the account, its sessions and tokens; the username and email become free"),
    ):
        command = user_commands.add_parser(action, help=text)
        command.add_argument("user", help="a user id, username or email")
        if action == "delete":
            command.add_argument("--yes", action="store_true", help="required: there is no undo")

    audit_command = commands.add_parser("audit", help="read the audit log (docs/admin.md)")
    audit_commands = audit_command.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    tail = audit_commands.add_parser("tail", help="the latest events as JSON lines, oldest first")
    tail.add_argument("-n", "--lines", type=int, default=20, help="how many (default 20)")
    tail.add_argument("-f", "--follow", action="store_true", help="then print new events as they are stored")
    tail.add_argument("--user-id", default=None, help="only events about this user id")
    tail.add_argument("--client-id", default=None, help="only events of this client")
    tail.add_argument("--type", default=None, help="only events of this type")

    commands.add_parser("check-config", help="validate the AUTH_* settings and exit")

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
        case "users" | "audit":
            if settings.embedded:
                from service import migrations

                migrations.upgrade(settings)
            if args.command == "users":
                return asyncio.run(manage_users(settings, args))
            return asyncio.run(audit_tail(settings, args))
        case "check-config":
            print("configuration ok")
            return 0
    return 2  # unreachable: argparse requires a command


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
                f"cleanup: deleted {counts.refresh_tokens} refresh tokens, {counts.sessions} sessions, "
                f"{counts.account_tokens} account tokens, {counts.mails} mails, {counts.audit_events} audit events"
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
    from service import audit, clients, database, errors

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
                    actor=audit.CLI,
                )
                print(json.dumps({"client_id": client.id, "client_secret": secret}))
            case "list":
                print(json.dumps([client.shape() for client in await clients.every(sessions)], indent=2))
            case "disable":
                if not await clients.disable(sessions, args.client_id, now, audit.CLI):
                    print(f"authsvc: no client {args.client_id}", file=sys.stderr)
                    return 1
                print(json.dumps({"client_id": args.client_id, "disabled": True}))
            case "rotate-secret":
                secret = await clients.rotate_secret(sessions, args.client_id, args.keep_previous, now, audit.CLI)
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


async def manage_users(settings: Settings, args: argparse.Namespace) -> int:
    """``authsvc users …``: the admin API's actions on the database directly, for when HTTP is not reachable.

    Ending sessions and disabling also reach Redis (when configured), as from the service, so every
    replica refuses at once; if Redis cannot be reached the command says so, and replicas then refuse
    within AUTH_USER_CACHE_TTL.
    """
    import uuid

    from service import admin, audit, database, errors, store
    from service.cache import Cache
    from service.db import sessions as session_queries
    from service.db import users

    engine = database.create_engine(settings, settings.database_url, pool=False)
    sessions = database.sessionmaker(engine)
    cache = Cache(store.create(settings.redis_url, settings.redis_timeout), settings.user_cache_ttl,
                  settings.access_token_ttl)
    now = dt.datetime.now(dt.UTC)
    try:
        if args.users_command == "list":
            if not 1 <= args.limit <= 100_000:
                raise errors.InvalidRequest("--limit must be from 1 to 100000")
            async with sessions() as db:
                found = await users.search(db, prefix=args.q, active=None if args.active is None else
                                           args.active == "true", after=None, limit=args.limit)
            print(json.dumps([admin.shape_user(user) for user in found], indent=2))
            return 0
        async with sessions() as db:
            try:
                user = await users.by_id(db, uuid.UUID(args.user))
            except ValueError:
                user = await users.by_login(db, args.user)
            if user is None:
                raise errors.NotFound(f"no user {args.user}")
            live = await session_queries.live_of_user(db, user.id, now=now, before=None, limit=1000)
        match args.users_command:
            case "show":
                shown = {**admin.shape_user(user), "sessions": [admin.shape_session(s) for s in live]}
                print(json.dumps(shown, indent=2))
            case "disable" | "enable":
                patch = admin.UserPatch(is_active=args.users_command == "enable")
                user = await admin.update_user(sessions, cache, user.id, patch, actor=audit.CLI, request=None, now=now)
                print(json.dumps(admin.shape_user(user)))
            case "delete":
                if not args.yes:
                    print("authsvc: deleting a user cannot be undone: add --yes", file=sys.stderr)
                    return 2
                await admin.delete_user(sessions, cache, user.id, actor=audit.CLI, request=None, now=now)
                print(json.dumps({"id": str(user.id), "deleted": True}))
    except errors.ServiceError as exc:
        print(f"authsvc: {exc.detail}", file=sys.stderr)
        return 1
    finally:
        await cache.close()  # one last try at marks Redis did not take
        if cache.pending_revocations or cache.pending_users:
            print("authsvc: warning: Redis could not be reached: other replicas may accept this user's "
                  f"sessions for up to AUTH_USER_CACHE_TTL ({settings.user_cache_ttl} s)", file=sys.stderr)
        if isinstance(cache.store, store.RedisStore):
            await cache.store.close()
        await engine.dispose()
    return 0


async def audit_tail(settings: Settings, args: argparse.Namespace) -> int:
    """``authsvc audit tail``: the last N events (filtered), oldest first; ``--follow`` polls for more."""
    import uuid

    from service import admin, audit, database
    from service.db import audit as queries

    if args.type is not None and args.type not in audit.TYPES:
        print(f"authsvc: --type must be one of {', '.join(audit.TYPES)}", file=sys.stderr)
        return 2
    try:
        user_id = uuid.UUID(args.user_id) if args.user_id else None
    except ValueError:
        print("authsvc: --user-id must be a UUID", file=sys.stderr)
        return 2
    engine = database.create_engine(settings, settings.database_url, pool=False)
    sessions = database.sessionmaker(engine)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    wanted = {"user_id": user_id, "client_id": args.client_id, "type": args.type}
    try:
        async with sessions() as db:
            newest = await queries.page(db, limit=1)  # followed from here: nothing stored later is missed
            rows = await queries.page(db, user_id=user_id, client_id=args.client_id, type=args.type,
                                      limit=max(1, min(args.lines, 10_000)))
        rows.reverse()
        shown = {row.id for row in rows}
        last = newest[0].id if newest else 0
        while True:
            for row in rows:
                print(json.dumps(admin.shape_event(row)), flush=True)
            if not args.follow:
                return 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            if stop.is_set():
                return 0
            async with sessions() as db:
                fresh = await queries.after(db, last)
            last = max((row.id for row in fresh), default=last)
            rows = [row for row in fresh if row.id not in shown and all(
                value is None or getattr(row, name) == value for name, value in wanted.items()
            )]
    finally:
        await engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
