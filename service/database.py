"""Engines and unit-of-work factories: pool settings from config, PgBouncer-safe, slow queries logged.

Behind PgBouncer < 1.21 in transaction mode a server connection changes between transactions, so
named prepared statements leak across clients. ``AUTH_DB_STATEMENT_CACHE_SIZE=0`` turns off both
asyncpg's and SQLAlchemy's statement caches and gives every statement a unique name, the recipe
SQLAlchemy documents for PgBouncer.

A lost database is an outage, not a bug: ``unavailable(exc)`` tells the two apart for app.py (503 +
Retry-After against 500), and the same test marks such errors as disconnects, so SQLAlchemy drops the
connection and every older one in the pool instead of handing a broken connection to the next request.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # no stubs yet
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from service import metrics, telemetry
from service.config import Settings

log = logging.getLogger("service.database")

# asyncpg's errors that say the connection, not the statement, failed: class 08 (connection exception:
# "connection was closed in the middle of operation", PgBouncer's "server login has been failing"),
# the server shutting down or starting (57P01-57P03), no connection slot left (53300)
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    OSError,  # the socket: refused, reset, unreachable, timed out (TimeoutError is an OSError)
)
# SQLite's "come back later": another writer holds the lock, or the file cannot be opened or written
SQLITE_UNAVAILABLE = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_FULL")


def create_engine(settings: Settings, url: str, *, pool: bool = True, label: str | None = None) -> AsyncEngine:
    parsed = make_url(url)
    options: dict[str, Any] = {"hide_parameters": True}  # parameters hold hashes and token digests
    if parsed.get_backend_name() == "sqlite":
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        options["connect_args"] = {"timeout": settings.db_pool_timeout}
    else:
        options["connect_args"] = _postgres_connect_args(settings)
        if pool and settings.db_command_timeout:
            # requests only (migrations and cleanup may run long): behind PgBouncer a query waits for a
            # server connection up to its query_wait_timeout (120 s) while PostgreSQL is down
            options["connect_args"]["command_timeout"] = settings.db_command_timeout
        # SQLAlchemy's own prepared-statement cache is a dialect option carried in the URL
        parsed = parsed.update_query_dict({"prepared_statement_cache_size": str(settings.db_statement_cache_size)})
    if pool and parsed.get_backend_name() != "sqlite":
        options.update(
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout,
            pool_recycle=settings.db_pool_recycle,
            # no ping per checkout (BEGIN, ";", ROLLBACK through PgBouncer: +0.2 ms each): a connection whose
            # socket is closed is discarded at checkout for free (_discard_closed), and the first
            # connection error invalidates the whole pool (_mark_disconnect)
            pool_pre_ping=False,
            # the default async queue pool, timing checkouts for the auth_db_pool_* metrics
            poolclass=metrics.pool_class(label or ("replica" if url == settings.database_read_url else "primary")),
        )
    elif not pool:
        options["poolclass"] = NullPool
    engine = create_async_engine(parsed, **options)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    else:
        event.listen(engine.sync_engine, "checkout", _discard_closed)
    event.listen(engine.sync_engine, "handle_error", _mark_disconnect)
    if settings.db_slow_query_ms:
        _log_slow_queries(engine, settings.db_slow_query_ms / 1000)
    metrics.watch_pool(engine)
    telemetry.trace_engine(engine)  # database spans when tracing is on
    return engine


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


def unavailable(exc: BaseException) -> bool:
    """True when ``exc`` says the database could not be reached or the connection broke (503, retry),
    False for everything else, a bad statement included (a bug: 500)."""
    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection free within AUTH_DB_POOL_TIMEOUT
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    seen: BaseException | None = exc
    while seen is not None:  # SQLAlchemy's error wraps the adapter's, which wraps the driver's
        if isinstance(seen, CONNECTION_ERRORS):
            return True
        if isinstance(seen, sqlite3.Error) and getattr(seen, "sqlite_errorname", "").startswith(SQLITE_UNAVAILABLE):
            return True
        seen = seen.orig if isinstance(seen, sa_exc.DBAPIError) else seen.__cause__
    return False


def reason(exc: BaseException) -> str:
    """The driver's own words for a database failure: the innermost error's type and message."""
    while (inner := exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc.__cause__) is not None:
        exc = inner
    return f"{type(exc).__name__}: {exc}"


def _mark_disconnect(context: ExceptionContext) -> None:
    # SQLAlchemy only counts "connection is closed" as a disconnect; PgBouncer's error replies, a
    # server shutting down, a reset mid-query leave the connection unusable too, and it must not go
    # back to the pool (the next user would get "another operation is in progress")
    if not context.is_disconnect and unavailable(context.original_exception):
        context.is_disconnect = True


def _discard_closed(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    # the server closed it while it sat in the pool (restart, kill, idle timeout): asyncpg has seen
    # the EOF already, so this costs no round trip; the pool connects a fresh one instead
    if record.driver_connection.is_closed():  # the asyncpg connection
        raise sa_exc.DisconnectionError("connection closed while idle in the pool")


def _postgres_connect_args(settings: Settings) -> dict[str, Any]:
    connect_args: dict[str, Any] = {
        "timeout": settings.db_connect_timeout,
        "server_settings": {"application_name": "authsvc"},
        "statement_cache_size": settings.db_statement_cache_size,
    }
    if settings.db_statement_cache_size == 0:
        connect_args["prepared_statement_name_func"] = _unique_statement_name
    return connect_args


def _unique_statement_name() -> str:
    return f"__asyncpg_{uuid.uuid4().hex}__"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")  # ON DELETE CASCADE from users to sessions to tokens
    cursor.execute("PRAGMA journal_mode=WAL")  # readers don't wait for the writer
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _log_slow_queries(engine: AsyncEngine, threshold: float) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _start(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        conn.info.setdefault("query_started", []).append(time.perf_counter())

    @event.listens_for(sync_engine, "after_cursor_execute")
    def _stop(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        elapsed = time.perf_counter() - conn.info["query_started"].pop()
        if elapsed >= threshold:
            # The statement only: parameters can hold password hashes and token digests.
            log.warning(
                "slow query",
                extra={"duration_ms": round(elapsed * 1000, 1), "statement": " ".join(statement.split())},
            )
