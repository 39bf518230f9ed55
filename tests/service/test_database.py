"""Schema, migrations and query plans on a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from sqlalchemy import event, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from devtools.stack import Stack
from service import database, migrations, tokens
from service.app import create_app
from service.config import Settings
from service.db import sessions as session_queries
from service.db import users
from tests.service.conftest import Running

pytestmark = pytest.mark.anyio
TABLES = {"users", "sessions", "refresh_tokens", "clients", "account_tokens", "mails", "audit_events"}


@pytest.fixture
async def scratch_db(stack: Stack, settings: Settings) -> AsyncIterator[Settings]:
    """An empty database of its own, so migration tests cannot disturb the others."""
    name = f"scratch_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(stack.admin_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}" OWNER auth'))
    url = stack.database_url.rsplit("/", 1)[0] + f"/{name}"
    yield Settings.from_environ({"AUTH_DATABASE_URL": url, "AUTH_KEYS_DIR": str(settings.keys_dir)})
    async with admin.connect() as connection:
        await connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    await admin.dispose()


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))


async def test_migrations_upgrade_from_empty_and_downgrade_cleanly(scratch_db: Settings) -> None:
    import anyio

    engine = database.create_engine(scratch_db, scratch_db.database_url, pool=False)
    try:
        assert await table_names(engine) == set()
        await anyio.to_thread.run_sync(migrations.upgrade, scratch_db)
        assert await table_names(engine) == TABLES | {"alembic_version"}
        assert await migrations.current(engine) == migrations.head(scratch_db)
        await anyio.to_thread.run_sync(migrations.downgrade, scratch_db, "base")
        assert await table_names(engine) == {"alembic_version"}
        await anyio.to_thread.run_sync(migrations.upgrade, scratch_db)  # and up again
        assert await table_names(engine) >= TABLES
    finally:
        await engine.dispose()


async def test_the_models_match_the_migrations(scratch_db: Settings) -> None:
    """Alembic's autogenerate finds nothing to add: the migrations are the whole schema."""
    import anyio
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from service.db.models import Base

    await anyio.to_thread.run_sync(migrations.upgrade, scratch_db)
    engine = database.create_engine(scratch_db, scratch_db.database_url, pool=False)
    try:
        async with engine.connect() as connection:
            diff = await connection.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
            )
    finally:
        await engine.dispose()
    assert diff == []


async def test_the_service_refuses_to_start_on_an_out_of_date_schema(scratch_db: Settings) -> None:
    from asgi_lifespan import LifespanManager

    with pytest.raises(migrations.SchemaOutOfDate, match="run `authsvc migrate`"):
        async with LifespanManager(create_app(scratch_db)):
            pass


async def explain(app: Running, run: Any) -> str:
    """The plan PostgreSQL picks for the exact statement a query function sends."""
    captured: list[tuple[str, Any]] = []
    sync_engine = app.resources.engine.sync_engine

    def capture(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        captured.append((statement, params))

    event.listen(sync_engine, "before_cursor_execute", capture)
    try:
        async with app.resources.sessions() as db:
            await run(db)
    finally:
        event.remove(sync_engine, "before_cursor_execute", capture)
    statement, params = captured[-1]
    async with app.resources.engine.connect() as connection:
        rows = await connection.exec_driver_sql("EXPLAIN " + statement, params)
        return "\n".join(row[0] for row in rows)


async def test_login_and_token_lookups_use_their_indexes_on_100k_rows(app: Running, stack: Stack) -> None:
    admin = create_async_engine(stack.admin_url)
    try:
        async with admin.begin() as connection:
            await connection.execute(text("""
                INSERT INTO users (id, username, email, password_hash, is_active, created_at, updated_at)
                SELECT gen_random_uuid(), 'user' || i, 'user' || i || '@example.com', 'x', true, now(), now()
                FROM generate_series(1, 100000) AS i"""))
            await connection.execute(text("""
                INSERT INTO sessions (id, user_id, created_at, expires_at, last_used_at)
                SELECT gen_random_uuid(), id, now(), now() + interval '30 days', now() FROM users"""))
            await connection.execute(text("""
                INSERT INTO refresh_tokens (id, session_id, token_hash, created_at, expires_at)
                SELECT gen_random_uuid(), id, sha256(id::text::bytea), now(), now() + interval '7 days'
                FROM sessions"""))
            for table in TABLES:
                await connection.execute(text(f"ANALYZE {table}"))
    finally:
        await admin.dispose()

    by_name = await explain(app, lambda db: users.by_login(db, "User4242"))
    assert "uq_users_username_lower" in by_name and "Seq Scan" not in by_name, by_name
    by_email = await explain(app, lambda db: users.by_login(db, "user4242@EXAMPLE.com"))
    assert "uq_users_email_lower" in by_email and "Seq Scan" not in by_email, by_email

    now = dt.datetime.now(dt.UTC)
    token = "x" * 43
    assert hashlib.sha256(token.encode()).digest() == tokens.digest(token)
    rotation = await explain(
        app, lambda db: session_queries.rotate(db, token, now=now, refresh_ttl=60, grace=0)
    )  # the last statement of a refused rotation is the lookup by hash
    assert "uq_refresh_tokens_token_hash" in rotation and "Seq Scan on refresh_tokens" not in rotation, rotation
    logout_all = await explain(app, lambda db: session_queries.revoke_all(db, uuid.uuid4(), now=now))
    assert "ix_sessions_user_id_revoked_at" in logout_all, logout_all


async def test_an_exhausted_pool_is_answered_503_not_500(running_app: Any, stack: Stack, keys_dir: Any) -> None:
    from tests.service.conftest import make_settings, register

    settings = make_settings(
        stack, keys_dir, AUTH_DB_POOL_SIZE="1", AUTH_DB_MAX_OVERFLOW="0", AUTH_DB_POOL_TIMEOUT="0.2"
    )
    async with running_app(settings) as app:
        await register(app.client)
        async with app.resources.engine.connect():  # the only connection, held
            response = await app.client.post("/api/v1/auth/token", data={"username": "alice", "password": "x" * 9})
        assert (response.status_code, response.json()["error"]) == (503, "database_unavailable")
        assert response.headers["retry-after"] == "1"


@pytest.fixture
def pgbouncer_restarted(stack: Stack) -> Any:
    yield
    stack.pgbouncer.start()


async def test_a_database_outage_fails_readiness_and_requests_get_503(
    app: Running, stack: Stack, pgbouncer_restarted: None
) -> None:
    from tests.service.conftest import register

    await register(app.client)
    stack.pgbouncer.stop()
    ready = await app.client.get("/health/readiness")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "failed"
    login = await app.client.post("/api/v1/auth/token", data={"username": "alice", "password": "x" * 9})
    assert (login.status_code, login.json()["error"]) == (503, "database_unavailable")
    assert (await app.client.get("/health/liveness")).status_code == 200  # no restart storm
    stack.pgbouncer.start()
    assert (await app.client.get("/health/readiness")).status_code == 200


async def test_slow_queries_are_logged_with_duration_but_never_parameters(
    running_app: Any, stack: Stack, keys_dir: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.service.conftest import make_settings

    settings = make_settings(stack, keys_dir, AUTH_DB_SLOW_QUERY_MS="20")
    async with running_app(settings) as app, app.resources.sessions() as db:
        await db.execute(text("SELECT pg_sleep(0.05), :secret"), {"secret": "hunter2-digest"})
        await db.execute(text("SELECT 1"))
    slow = [record for record in caplog.records if record.getMessage() == "slow query"]
    assert len(slow) == 1
    assert "pg_sleep" in slow[0].statement  # type: ignore[attr-defined]
    assert slow[0].duration_ms >= 50  # type: ignore[attr-defined]
    assert "hunter2" not in caplog.text


async def test_reads_go_to_the_replica_when_one_is_configured(running_app: Any, stack: Stack, keys_dir: Any) -> None:
    from tests.service.conftest import bearer, login, make_settings, register

    replica = stack.database_url  # the same data over another connection pool stands in for a replica
    async with running_app(make_settings(stack, keys_dir, AUTH_DATABASE_READ_URL=replica, AUTH_REDIS_URL="")) as app:
        assert app.resources.reads is not app.resources.sessions
        pair = await login(app.client, await register(app.client))
        read_engine = app.resources.reads.kw["bind"]
        before = read_engine.pool.checkedin()
        assert (await app.client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))).status_code == 200
        assert read_engine.pool.checkedin() == before + 1  # the replica pool served the read


async def test_a_pooled_connection_the_server_closed_is_replaced_at_checkout_not_answered_503(
    running_app: Any, stack: Stack, keys_dir: Any
) -> None:
    """A restart or an idle timeout closes pooled connections while nobody uses them: the next request
    must get a fresh connection, not an error (and without a ping round trip on every checkout)."""
    from tests.service.conftest import PASSWORD, make_settings, register

    direct = make_settings(  # straight to PostgreSQL: a backend that ends closes our socket
        stack, keys_dir, AUTH_DATABASE_URL=stack.database_url, AUTH_DB_POOL_SIZE="1", AUTH_DB_MAX_OVERFLOW="0"
    )
    async with running_app(direct) as app:
        await register(app.client, "gina")
        returned: list[Any] = []
        event.listen(app.resources.engine.sync_engine, "checkin", lambda _, record: returned.append(record))
        async with app.resources.sessions() as db:
            backend = (await db.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        admin = create_async_engine(stack.admin_url)
        try:
            async with admin.connect() as connection:
                await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        finally:
            await admin.dispose()
        deadline = time.monotonic() + 10
        while not returned[-1].driver_connection.is_closed():  # until asyncpg has seen the server hang up
            assert time.monotonic() < deadline, "the pooled connection never saw its backend end"
            await anyio.sleep(0.01)
        login = await app.client.post("/api/v1/auth/token", data={"username": "gina", "password": PASSWORD})
        assert login.status_code == 200, login.text
