"""Engines and unit-of-work factories: pool settings from config, PgBouncer-safe, slow queries logged.

Behind PgBouncer < 1.21 in transaction mode a server connection changes between transactions, so
named prepared statements leak across clients. ``AUTH_DB_STATEMENT_CACHE_SIZE=0`` turns off both
asyncpg's and SQLAlchemy's statement caches and gives every statement a unique name, the recipe
SQLAlchemy documents for PgBouncer.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from service import metrics, telemetry
from service.config import Settings

log = logging.getLogger("service.database")


def create_engine(settings: Settings, url: str, *, pool: bool = True, label: str | None = None) -> AsyncEngine:
    parsed = make_url(url)
    options: dict[str, Any] = {"hide_parameters": True}  # parameters hold hashes and token digests
    if parsed.get_backend_name() == "sqlite":
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        options["connect_args"] = {"timeout": settings.db_pool_timeout}
    else:
        options["connect_args"] = _postgres_connect_args(settings)
        # SQLAlchemy's own prepared-statement cache is a dialect option carried in the URL
        parsed = parsed.update_query_dict({"prepared_statement_cache_size": str(settings.db_statement_cache_size)})
    if pool and parsed.get_backend_name() != "sqlite":
        options.update(
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout,
            pool_recycle=settings.db_pool_recycle,
            pool_pre_ping=False,  # a dead connection surfaces as an error the next query maps to 503
            # the default async queue pool, timing checkouts for the auth_db_pool_* metrics
            poolclass=metrics.pool_class(label or ("replica" if url == settings.database_read_url else "primary")),
        )
    elif not pool:
        options["poolclass"] = NullPool
    engine = create_async_engine(parsed, **options)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    if settings.db_slow_query_ms:
        _log_slow_queries(engine, settings.db_slow_query_ms / 1000)
    metrics.watch_pool(engine)
    telemetry.trace_engine(engine)  # database spans when tracing is on
    return engine


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


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
