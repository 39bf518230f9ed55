"""Database outages under load, against `authsvc serve`: PostgreSQL and PgBouncer killed by pid, and a bug.

A stack of their own: these tests kill its servers, which every other test relies on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from devtools.stack import HOST, Stack, postgres_bindir
from service import migrations
from service.config import Settings
from tests.service.conftest import PASSWORD, make_settings, wipe
from tests.service.test_observability_serve import serving

pytestmark = pytest.mark.anyio

TOKEN, ME, REFRESH = "/api/v1/auth/token", "/api/v1/auth/me", "/api/v1/auth/refresh"
CLIENTS = 8
RECOVERY = 5.0  # seconds from the server answering again to requests succeeding again (PgBouncer retries
# its login to a restarted PostgreSQL after server_login_retry, 1 s in devtools/stack.py)


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("outage-stack")) as stack:
        yield stack


@pytest.fixture(scope="module")
def own_settings(own_stack: Stack, keys_dir: Path) -> Settings:
    # the stack commits asynchronously for speed, and a crash would lose the last commits (users registered
    # just before a kill): durable commits here, as in production, in every session (PgBouncer's included)
    psql(own_stack, "ALTER DATABASE auth SET synchronous_commit = on")
    psql(own_stack, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'auth'")
    settings = make_settings(own_stack, keys_dir)
    migrations.upgrade(settings)
    return settings


def psql(stack: Stack, sql: str) -> None:
    subprocess.run(
        [str(postgres_bindir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST,
         "-p", str(stack.postgres.port), "-U", "postgres", "-d", "auth", "-c", sql],
        check=True, capture_output=True, timeout=30,
    )


@pytest.fixture
async def killable(own_stack: Stack) -> AsyncIterator[Stack]:
    """The private stack, every server up again and every row gone after each test, however it ended."""
    yield own_stack
    own_stack.postgres.start()
    own_stack.pgbouncer.start()
    if not own_stack.redis.running:
        own_stack.redis.start()
    await wipe(own_stack)


@dataclasses.dataclass(frozen=True)
class Answer:
    started: float
    path: str
    status: int | str  # the status code, or the name of the transport error
    retry_after: str | None
    error: str | None  # the body's error code, for an error


class Load:
    """Clients logging in, calling `me` and rotating their refresh token in a loop; every answer recorded."""

    def __init__(self, url: str, usernames: list[str]) -> None:
        self.url, self.usernames = url, usernames
        self.answers: list[Answer] = []
        self.stopped = anyio.Event()

    def count(self, since: float, condition: Callable[[Answer], bool] = lambda answer: True) -> int:
        return sum(1 for answer in self.answers if answer.started >= since and condition(answer))

    async def client(self, username: str) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            pair: dict[str, Any] | None = None
            while not self.stopped.is_set():
                if pair is None:
                    response = await self.call(client, "POST", TOKEN, data={"username": username, "password": PASSWORD})
                    pair = response.json() if response is not None and response.status_code == 200 else None
                    continue
                me = await self.call(client, "GET", ME, headers={"Authorization": f"Bearer {pair['access_token']}"})
                response = await self.call(client, "POST", REFRESH, json={"refresh_token": pair["refresh_token"]})
                if response is not None and response.status_code == 200:
                    pair = response.json()
                elif 401 in (getattr(me, "status_code", None), getattr(response, "status_code", None)):
                    pair = None  # a rotation whose answer was lost counts as reuse: log in again

    async def call(self, client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        started = time.monotonic()
        try:
            response = await client.request(method, path, **kwargs)
        except httpx.TransportError as error:  # a reset keep-alive connection, say
            self.answers.append(Answer(started, path, type(error).__name__, None, None))
            return None
        code = response.json().get("error") if response.status_code >= 400 else None
        self.answers.append(Answer(started, path, response.status_code, response.headers.get("retry-after"), code))
        return response


async def until(condition: Callable[[], bool], within: float, what: str) -> float:
    """Poll `condition` until it holds; returns when it did. Fails after `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {within}s"
        await anyio.sleep(0.02)
    return time.monotonic()


def errors_logged(err: Path) -> list[dict[str, Any]]:
    records = []
    for line in err.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # the last line may still be being written
            continue
        if record["level"] in ("ERROR", "CRITICAL"):
            records.append(record)
    return records


def database_backed(answer: Answer) -> bool:
    return answer.path in (TOKEN, REFRESH)  # `me` may be answered from the cache in Redis


@pytest.mark.parametrize(
    ("victim", "direct"),
    [("postgres", False), ("pgbouncer", False), ("postgres", True)],
    ids=["postgresql-behind-pgbouncer", "pgbouncer", "postgresql-direct"],
)
async def test_a_database_server_killed_under_load_gives_503s_never_500_and_service_resumes(
    own_settings: Settings, killable: Stack, tmp_path: Path, victim: str, direct: bool
) -> None:
    stack = killable
    # a query that PgBouncer holds for a server connection fails after 1 s instead of 5
    env = {"AUTH_DB_COMMAND_TIMEOUT": "1", **({"AUTH_DATABASE_URL": stack.database_url} if direct else {})}
    async with serving(own_settings, stack, tmp_path, **env) as (url, _, err):
        usernames = [f"loader{number}" for number in range(CLIENTS)]
        async with httpx.AsyncClient(base_url=url) as client:
            for username in usernames:
                body = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
                assert (await client.post("/api/v1/auth/register", json=body)).status_code == 201
        load = Load(url, usernames)
        server = getattr(stack, victim)
        async with anyio.create_task_group() as clients:
            for username in usernames:
                clients.start_soon(load.client, username)
            begun = time.monotonic()
            await until(lambda: load.count(begun, lambda a: a.status == 200) >= 100, 30, "load before the kill")
            killed = time.monotonic()
            await anyio.to_thread.run_sync(server.kill)
            await until(lambda: load.count(killed, database_backed) >= 3 * CLIENTS, 30, "load during the outage")
            await anyio.to_thread.run_sync(server.start)  # on the same port, after crash recovery
            back = time.monotonic()
            ok = lambda answer: database_backed(answer) and answer.status == 200  # noqa: E731
            recovered = await until(lambda: load.count(back, ok) >= 1, 30, "a database-backed success")
            await until(lambda: load.count(recovered, ok) >= 50, 30, "load after recovery")
            load.stopped.set()

    statuses = Counter(answer.status for answer in load.answers)
    assert set(statuses) <= {200, 401, 503}, statuses  # no 500, no reset connection
    during = Counter(a.error for a in load.answers if killed <= a.started < back and database_backed(a))
    assert during["database_unavailable"] > 0, during  # the outage was felt, as 503s
    assert all(a.retry_after == "1" for a in load.answers if a.error == "database_unavailable")
    assert recovered - back < RECOVERY, f"{recovered - back:.1f}s to the first success after the restart"
    late = Counter(a.error for a in load.answers if a.started > back + RECOVERY and database_backed(a))
    assert late["database_unavailable"] == 0, late
    assert errors_logged(err) == []  # an outage is a warning per request, not a traceback


async def test_redis_killed_under_load_gives_no_error_and_revives_no_session(
    own_settings: Settings, killable: Stack, tmp_path: Path
) -> None:
    """Redis SIGKILLed under load and restarted empty: every request still answers (the cache is bypassed,
    limits count in memory), and a session logged out before the kill stays refused throughout."""
    stack = killable
    async with serving(own_settings, stack, tmp_path) as (url, _, err):
        usernames = [f"loader{number}" for number in range(CLIENTS)]
        async with httpx.AsyncClient(base_url=url) as client:
            for username in usernames:
                body = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
                assert (await client.post("/api/v1/auth/register", json=body)).status_code == 201
            # S1 and S2 of one user; S1 logs out before the kill, S2 keeps warming the cache meanwhile
            login = {"username": usernames[0], "password": PASSWORD}
            s1, s2 = [(await client.post(TOKEN, data=login)).json() for _ in range(2)]
            assert (await client.post("/api/v1/auth/revoke", json={"refresh_token": s1["refresh_token"]})
                    ).status_code == 204
            bearer = {"s1": {"Authorization": f"Bearer {s1['access_token']}"},
                      "s2": {"Authorization": f"Bearer {s2['access_token']}"}}
            seen: Counter[tuple[str, int]] = Counter()

            async def probe() -> None:
                for name in ("s2", "s1"):
                    seen[(name, (await client.get(ME, headers=bearer[name])).status_code)] += 1

            load = Load(url, usernames[1:])
            async with anyio.create_task_group() as clients:
                for username in usernames[1:]:
                    clients.start_soon(load.client, username)
                begun = time.monotonic()
                await until(lambda: load.count(begun, lambda a: a.status == 200) >= 100, 30, "load before the kill")
                await probe()
                killed = time.monotonic()
                await anyio.to_thread.run_sync(stack.redis.kill)
                await until(lambda: load.count(killed) >= 3 * CLIENTS, 30, "load during the outage")
                await probe()
                await anyio.to_thread.run_sync(stack.redis.start)  # empty: no persistence
                back = time.monotonic()
                await until(lambda: load.count(back, lambda a: a.status == 200) >= 50, 30, "load after Redis is back")
                for _ in range(3):  # S2 warms the cache again; S1 must not ride on it
                    await probe()
                load.stopped.set()

    statuses = Counter(answer.status for answer in load.answers)
    assert set(statuses) <= {200, 401}, statuses  # no 500, no 503, no reset connection
    assert seen[("s1", 200)] == 0 and seen[("s1", 401)] == 5, seen
    assert seen[("s2", 200)] == 5, seen
    assert errors_logged(err) == []


class Connection:
    """One HTTP/1.1 connection to the server: requests go one after another on it (keep-alive)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, url: str) -> AsyncIterator[Connection]:
        host, port = url.removeprefix("http://").split(":")
        connection = cls(*await asyncio.open_connection(host, int(port)))
        try:
            yield connection
        finally:
            connection.writer.close()

    async def request(self, method: str, path: str, body: bytes = b"", **headers: str) -> tuple[int, dict[str, Any]]:
        lines = [f"{method} {path} HTTP/1.1", "Host: auth.test", f"Content-Length: {len(body)}"]
        lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await self.writer.drain()
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        fields = dict(line.lower().split(": ", 1) for line in head[1:] if line)
        payload = await self.reader.readexactly(int(fields["content-length"]))
        assert fields.get("connection") != "close", head
        return int(head[0].split()[1]), json.loads(payload) if payload else {}


FORM = "application/x-www-form-urlencoded"


async def test_a_bug_is_one_500_logged_once_and_the_connection_stays_usable(
    own_settings: Settings, killable: Stack, tmp_path: Path
) -> None:
    stack = killable
    admin = create_async_engine(stack.admin_url)
    async with serving(own_settings, stack, tmp_path) as (url, _, err), Connection.open(url) as connection:
        body = b'{"username": "carol", "email": "carol@example.com", "password": "%s"}' % PASSWORD.encode()
        status, _ = await connection.request("POST", "/api/v1/auth/register", body, Content_Type="application/json")
        assert status == 201
        # the schema out of step with the code: every login query names a column that is not there
        async with admin.begin() as db:
            await db.execute(text("ALTER TABLE users RENAME COLUMN password_hash TO password_digest"))
        try:
            login = b"username=carol&password=" + PASSWORD.replace(" ", "+").encode()
            status, answer = await connection.request("POST", TOKEN, login, Content_Type=FORM)
        finally:
            async with admin.begin() as db:
                await db.execute(text("ALTER TABLE users RENAME COLUMN password_digest TO password_hash"))
            await admin.dispose()
        assert (status, answer) == (500, {
            "error": "internal_error", "error_description": "Internal server error", "detail": "Internal server error"
        })
        status, answer = await connection.request("POST", TOKEN, login, Content_Type=FORM)  # same connection
        assert status == 200, answer
    [logged] = errors_logged(err)  # once: not again by uvicorn
    assert logged["message"] == "unhandled error on POST /api/v1/auth/token"
    assert "UndefinedColumnError" in logged["exception"]


async def test_a_503_for_a_lost_database_leaves_the_connection_usable(
    own_settings: Settings, killable: Stack, tmp_path: Path
) -> None:
    stack = killable
    async with (
        serving(own_settings, stack, tmp_path, AUTH_DB_COMMAND_TIMEOUT="1") as (url, _, err),
        Connection.open(url) as connection,
    ):
        body = b'{"username": "dave", "email": "dave@example.com", "password": "%s"}' % PASSWORD.encode()
        status, _ = await connection.request("POST", "/api/v1/auth/register", body, Content_Type="application/json")
        assert status == 201
        login = b"username=dave&password=" + PASSWORD.replace(" ", "+").encode()
        await anyio.to_thread.run_sync(stack.postgres.kill)  # PgBouncer stays up and answers with errors
        asked = time.monotonic()
        status, answer = await connection.request("POST", TOKEN, login, Content_Type=FORM)
        assert (status, answer["error"]) == (503, "database_unavailable")
        # PgBouncer would hold the query up to its query_wait_timeout (120 s): AUTH_DB_COMMAND_TIMEOUT bounds it
        assert time.monotonic() - asked < 1 + 3
        await anyio.to_thread.run_sync(stack.postgres.start)
        deadline = time.monotonic() + RECOVERY
        while status != 200 and time.monotonic() < deadline:  # on the same connection throughout
            await anyio.sleep(0.05)
            status, answer = await connection.request("POST", TOKEN, login, Content_Type=FORM)
        assert status == 200, answer
    assert errors_logged(err) == []
