"""Fixtures for the service: real PostgreSQL behind real PgBouncer (transaction mode), and SQLite."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from redis.asyncio import Redis
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import create_async_engine

from devtools.stack import Stack
from service import keys, migrations, store
from service.app import create_app
from service.config import Settings
from service.resources import Resources

BASE = "http://auth.test"
PASSWORD = "correct horse battery"


def environ(stack: Stack, keys_dir: Path, **overrides: str) -> dict[str, str]:
    return {
        "AUTH_DATABASE_URL": stack.pgbouncer_url,
        "AUTH_DB_STATEMENT_CACHE_SIZE": "0",  # PgBouncer 1.18 in transaction mode
        "AUTH_REDIS_URL": stack.redis_url,
        "AUTH_KEYS_DIR": str(keys_dir),
        "AUTH_ISSUER": BASE,
        "AUTH_BCRYPT_COST": "4",
        "AUTH_HASH_WORKERS": "2",
        "AUTH_INTROSPECTION_SECRET": "introspection-secret",
        "AUTH_RATE_LIMIT_ENABLED": "false",
        "AUTH_DATA_DIR": str(keys_dir.parent / "data"),
        **overrides,
    }


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("keys")
    keys.generate(folder, kid="test-key")
    return folder


@pytest.fixture(scope="session")
def settings(stack: Stack, keys_dir: Path) -> Settings:
    # sync on purpose: Alembic's async env.py runs its own event loop
    s = Settings.from_environ(environ(stack, keys_dir))
    migrations.upgrade(s)  # the real migrations, through PgBouncer like production
    return s


def make_settings(stack: Stack, keys_dir: Path, **overrides: str) -> Settings:
    return Settings.from_environ(environ(stack, keys_dir, **overrides))


async def wipe(stack: Stack) -> None:
    """TRUNCATE the tables and FLUSHDB the test Redis: every test starts from nothing."""
    engine = create_async_engine(stack.admin_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("TRUNCATE users, sessions, refresh_tokens, clients, audit_events CASCADE"))
    finally:
        await engine.dispose()
    if stack.redis.running:
        redis = Redis.from_url(stack.redis_url)
        try:
            await redis.flushdb()
        finally:
            await redis.aclose()


@dataclasses.dataclass
class Running:
    """An app with its lifespan running, a client for it, and its resources for inspection."""

    client: httpx.AsyncClient
    resources: Resources
    transport: httpx.AsyncBaseTransport | None = None  # for other clients of the same app (authlib)


@pytest.fixture
async def running_app(settings: Settings, stack: Stack) -> AsyncIterator[Any]:
    """A factory: ``async with running_app(settings) as app`` starts one more app."""
    import contextlib

    @contextlib.asynccontextmanager
    async def start(s: Settings = settings) -> AsyncIterator[Running]:
        async with LifespanManager(create_app(s)) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
                yield Running(client, manager._state["resources"], transport)

    yield start
    await wipe(stack)


@contextlib.contextmanager
def counting_queries(app: Running) -> Iterator[list[str]]:
    """Every SQL statement the app's primary engine sends inside the block."""
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(app.resources.engine.sync_engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(app.resources.engine.sync_engine, "before_cursor_execute", count)


@pytest.fixture
async def app(running_app: Any) -> AsyncIterator[Running]:
    async with running_app() as started:
        yield started


@pytest.fixture
def client(app: Running) -> httpx.AsyncClient:
    return app.client


@dataclasses.dataclass(frozen=True)
class Account:
    username: str
    email: str
    password: str
    id: str


async def register(client: httpx.AsyncClient, username: str = "alice", password: str = PASSWORD) -> Account:
    email = f"{username}@example.com"
    response = await client.post(
        "/api/v1/auth/register", json={"username": username, "email": email, "password": password}
    )
    assert response.status_code == 201, response.text
    return Account(username, email, password, response.json()["id"])


async def login(client: httpx.AsyncClient, account: Account) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/auth/token", data={"username": account.username, "password": account.password}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
async def alice(client: httpx.AsyncClient) -> Account:
    return await register(client)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def quick_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis outages end 50 ms after Redis answers again, not a second."""
    monkeypatch.setattr(store, "RETRY_INTERVAL", 0.05)


@pytest.fixture
def redis_restarted(stack: Stack) -> Iterator[None]:
    yield
    stack.redis.start()  # whatever the test did, the next one finds Redis up


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Iterator[Settings]:
    yield Settings.from_environ(
        {"AUTH_DATA_DIR": str(tmp_path / "data"), "AUTH_BCRYPT_COST": "4", "AUTH_RATE_LIMIT_ENABLED": "false"}
    )


@contextlib.asynccontextmanager
async def scratch_database(stack: Stack, revision: str | None = None) -> AsyncIterator[str]:
    """A database of its own, straight to PostgreSQL (no PgBouncer alias for it): empty, or with only an
    ``alembic_version`` row saying ``revision``. Yields its URL; dropped afterwards."""
    name = f"scratch_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(stack.admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}" OWNER auth'))
        url = stack.database_url.rsplit("/", 1)[0] + f"/{name}"
        if revision is not None:
            engine = create_async_engine(url)
            try:
                async with engine.begin() as connection:
                    await connection.execute(text("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)"))
                    await connection.execute(text("INSERT INTO alembic_version VALUES (:r)"), {"r": revision})
            finally:
                await engine.dispose()
        yield url
    finally:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


@pytest.fixture
def mailbox() -> Iterator[Any]:
    """A real SMTP server on loopback receiving the service's mails (tests/service/mailbox.py)."""
    from tests.service.mailbox import Mailbox

    box = Mailbox()
    box.start()
    yield box
    box.stop()


def mail_settings(stack: Stack, keys_dir: Path, smtp_url: str, **overrides: str) -> Settings:
    """Settings that send through the test SMTP server, polling and retrying fast."""
    return make_settings(
        stack, keys_dir, AUTH_SMTP_URL=smtp_url, AUTH_MAIL_POLL_INTERVAL="0.05", AUTH_MAIL_RETRY_BASE="0.05",
        **overrides,
    )


# -- the command line run as a user would: an empty folder, a key, a port nobody answers on --


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    folder = tmp_path / "cwd"
    folder.mkdir()
    return folder


@pytest.fixture
def key_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "keys"
    keys.generate(folder, kid="k1")
    return folder


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port nobody listens on (held, so nobody else takes it): connections are refused."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]
