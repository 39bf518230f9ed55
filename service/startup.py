"""Before ``authsvc serve`` starts its workers: the checks that turn a bad start into one clear line, and the
line saying what the service runs on.

uvicorn runs the lifespan in every worker and prints a traceback when it fails. The CLI runs these checks
first, in its own process: settings, the port, the keys, the database and its schema, Redis. A failure is a
``StartupError`` whose message names what is wrong and what to do; ``explain`` gives the same kind of line
for the other errors a command can meet (a database that went away during ``migrate`` or ``cleanup``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import anyio.to_thread
import asyncpg  # type: ignore[import-untyped]  # no stubs; only its exception classes
from redis import asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import make_url

from service import __version__, database, keys, migrations
from service.config import ConfigError, Settings
from service.passwords import available_cpus

log = logging.getLogger("service.startup")
# what PostgreSQL answers a connection it will not take: wrong role or password, no such database, too many
CONNECTION_REFUSALS = (
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,
    asyncpg.exceptions.InvalidCatalogNameError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.PostgresConnectionError,
)


class StartupError(Exception):
    """The service cannot start or the command cannot run; the message says why and what to do."""


def hash_threads(settings: Settings, processes: int) -> int:
    """bcrypt threads per worker: AUTH_HASH_WORKERS, else the container's CPUs shared by the workers."""
    return settings.hash_workers or max(1, available_cpus() // processes)


def where(url: str) -> str:
    """A database named for people and logs: host, port and name, never the credentials."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite {parsed.database}"
    return f"PostgreSQL {parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"


def redis_where(url: str) -> str:
    parts = urlsplit(url)
    if parts.hostname is None:  # unix:///path/to/socket
        return f"Redis {parts.path}"
    return f"Redis {parts.hostname}:{parts.port or 6379}/{parts.path.strip('/') or 0}"


def reason(exc: BaseException) -> str:
    """The first line of what the driver said, without SQLAlchemy's wrapping and links."""
    cause: BaseException = exc
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        cause = exc.orig.__cause__ or exc.orig  # asyncpg's own error, under the DBAPI adapter's
    elif isinstance(exc, RedisError) and isinstance(exc.__context__, OSError | TimeoutError):
        cause = exc.__context__  # the socket's error, under redis-py's "Error 111 connecting to …"
    if isinstance(cause, TimeoutError):
        return "no answer in time"
    if isinstance(cause, socket.gaierror):
        return f"cannot resolve the host name ({(cause.strerror or str(cause)).lower()})"
    if isinstance(cause, OSError) and cause.errno is not None and cause.errno > 0:
        return os.strerror(cause.errno).lower()
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__


def unreachable(exc: BaseException, connecting: bool = False) -> bool:
    """A connection that could not be made or was lost, as opposed to a bug or a bad file. ``connecting``:
    the error came from opening a connection, where any database error means the server said no."""
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError | TimeoutError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        cause = exc.orig.__cause__ if exc.orig is not None else None
        return connecting or isinstance(cause, CONNECTION_REFUSALS)
    return isinstance(exc, OSError) and exc.filename is None


def database_failure(settings: Settings, url: str, exc: BaseException) -> StartupError:
    if url.startswith("sqlite"):
        return StartupError(
            f"cannot open the database {where(url)[len('SQLite '):]}: {reason(exc)}; check that AUTH_DATA_DIR "
            f"({settings.data_dir}) is a folder this user may write"
        )
    variable = "AUTH_DATABASE_READ_URL" if url == settings.database_read_url else "AUTH_DATABASE_URL"
    return StartupError(
        f"cannot reach the database at {where(url)[len('PostgreSQL '):]} ({variable}): {reason(exc)}; "
        f"check that PostgreSQL (or PgBouncer) runs there and that {variable} is right"
    )


def explain(exc: BaseException, settings: Settings | None) -> str:
    """The one line ``authsvc`` prints for a failure (after ``authsvc: ``)."""
    if isinstance(exc, ConfigError):
        return f"configuration error: {exc}"
    if isinstance(exc, StartupError | migrations.SchemaOutOfDate | migrations.MigrationsMissing):
        return str(exc)
    if settings is not None and unreachable(exc):
        return str(database_failure(settings, settings.database_url, exc))
    if isinstance(exc, sa_exc.DBAPIError) and settings is not None:
        return f"the database at {where(settings.database_url)} refused a statement: {reason(exc)} " \
            "(run with --debug for the traceback)"
    if isinstance(exc, OSError) and exc.filename is not None:
        variable = next((name for name, folder in (("AUTH_KEYS_DIR", settings.keys_dir),
                                                   ("AUTH_DATA_DIR", settings.data_dir))
                         if Path(exc.filename).is_relative_to(folder)), None) if settings else None
        return f"{exc.filename}{f' ({variable})' if variable else ''}: {(exc.strerror or str(exc)).lower()}"
    return f"unexpected {type(exc).__name__}: {reason(exc)} (run with --debug for the traceback)"


@contextlib.asynccontextmanager
async def reaching(settings: Settings, url: str) -> AsyncIterator[None]:
    try:
        yield
    except Exception as exc:
        if unreachable(exc, connecting=True):
            raise database_failure(settings, url, exc) from exc
        raise


def open_sqlite(settings: Settings) -> None:
    """The embedded database opens, checked with the standard library first: aiosqlite's thread that fails
    to open it can outlive the event loop and print a traceback of its own."""
    if not settings.embedded:
        return
    path = make_url(settings.database_url).database or ""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(path)) as connection:
            connection.execute("PRAGMA schema_version")  # reads the file: "not a database" shows here
    except sqlite3.Error as exc:
        raise StartupError(
            f"cannot open the database {path}: {str(exc).lower()}; check that AUTH_DATA_DIR "
            f"({settings.data_dir}) is a folder this user may write"
        ) from exc


async def revision(settings: Settings) -> str | None:
    """The database's schema revision, after making sure it is reachable and not ahead of this release."""
    open_sqlite(settings)
    engine = database.create_engine(settings, settings.database_url, pool=False)
    try:
        async with reaching(settings, settings.database_url):
            found = await migrations.current(engine)
    finally:
        await engine.dispose()
    migrations.refuse_unknown(settings, found)
    return found


async def reach(settings: Settings) -> None:
    """The database answers (``cleanup``: which runs beside pods of both releases during an upgrade, so it
    does not insist on its own schema revision)."""
    open_sqlite(settings)
    engine = database.create_engine(settings, settings.database_url, pool=False)
    try:
        async with reaching(settings, settings.database_url), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


def check_port(host: str, port: int) -> None:
    """uvicorn would bind it after starting the app, and print its failure among its own start-up lines."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(f"{host}:{port} is in use: stop what listens there or pick another --port") from None
            raise StartupError(f"cannot listen on {host}:{port} (--host, --port): {reason(exc)}") from None


async def check_serve(settings: Settings, host: str, port: int, workers: int) -> str:
    """Everything ``serve`` needs, checked in order; returns the line saying what it runs on.

    Nothing is written before the settings are valid, and on the embedded default the key is generated only
    once the database could be created and migrated.
    """
    check_port(host, port)
    if settings.embedded:
        open_sqlite(settings)
        async with reaching(settings, settings.database_url):
            await anyio.to_thread.run_sync(migrations.upgrade, settings)
        keys.ensure(settings.keys_dir)
    keyset = keys.load(settings.keys_dir, settings.signing_key_id)
    for url in filter(None, (settings.database_url, settings.database_read_url)):
        engine = database.create_engine(settings, url, pool=False)
        try:
            async with reaching(settings, url):
                if url == settings.database_url:
                    await migrations.check(settings, engine)
                else:
                    async with engine.connect() as connection:
                        await connection.execute(text("SELECT 1"))
        finally:
            await engine.dispose()
    redis = await check_redis(settings)
    parts = [
        f"authsvc {__version__} on {where(settings.database_url)}",
        *([f"read replica {where(settings.database_read_url)[len('PostgreSQL '):]}"]
          if settings.database_read_url else []),
        redis,
        f"signing key {keyset.signing.kid} ({keyset.signing.algorithm}), keys {' '.join(sorted(keyset.by_kid))}",
        f"bcrypt cost {settings.bcrypt_cost}",
        f"hash pool of {hash_threads(settings, workers)} threads (queue {settings.hash_queue_size}) per worker",
        f"{workers} worker{'s' if workers > 1 else ''}",
    ]
    return ", ".join(parts)


async def check_redis(settings: Settings) -> str:
    """Redis down degrades the service rather than stopping it (docs/rate-limits.md): a warning, not a failure."""
    if settings.redis_url is None:
        return "no Redis (rate limits and cache in-process)"
    problem = await redis_problem(settings, settings.redis_url)
    if problem is not None:
        log.warning(
            "cannot reach %s (AUTH_REDIS_URL): %s; starting without it: in-process rate limits, no cache, "
            "revocations checked in the database, until it answers", redis_where(settings.redis_url), problem,
        )
        return f"{redis_where(settings.redis_url)} (unreachable)"
    return redis_where(settings.redis_url)


async def redis_problem(settings: Settings, url: str) -> str | None:
    """Why Redis does not answer a PING within a few of its timeouts, or None when it does."""
    client = aioredis.Redis.from_url(url, socket_timeout=settings.redis_timeout,
                                     socket_connect_timeout=settings.redis_timeout)
    try:
        async with asyncio.timeout(max(1.0, settings.redis_timeout * 4)):
            await client.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        return reason(exc)
    finally:
        await client.aclose()
    return None
