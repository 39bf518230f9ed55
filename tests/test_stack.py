"""The test stack itself: the servers the rest of the suite relies on behave as the suite assumes."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import asyncpg  # type: ignore[import-untyped]  # no stubs yet
import pytest

from devtools import stack as stack_module

pytestmark = pytest.mark.anyio


def dsn(url: str) -> str:
    """asyncpg takes libpq URLs, without SQLAlchemy's driver suffix."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def redis_command(port: int, *words: str) -> bytes:
    request = f"*{len(words)}\r\n" + "".join(f"${len(word)}\r\n{word}\r\n" for word in words)
    async with await anyio.connect_tcp(stack_module.HOST, port) as connection:
        await connection.send(request.encode())
        return await connection.receive()  # replies this small arrive in one segment on loopback


async def test_pgbouncer_serves_more_clients_than_its_pool_because_it_pools_per_transaction(
    stack: stack_module.Stack,
) -> None:
    # In session mode the 21st client would wait for one of the first 20 to disconnect, which none does.
    clients = [await asyncpg.connect(dsn(stack.pgbouncer_url), statement_cache_size=0) for _ in range(30)]
    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                for number, client in enumerate(clients):
                    group.start_soon(client.fetchval, "SELECT $1::int + 1", number)  # extended protocol
        answers = [await client.fetchval("SELECT $1::int * 2", number) for number, client in enumerate(clients)]
    finally:
        for client in clients:
            await client.close()
    assert answers == [number * 2 for number in range(30)]

    admin = await asyncpg.connect(dsn(stack.admin_url))
    try:
        servers = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'auth' AND datname = 'auth'"
        )
    finally:
        await admin.close()
    assert 1 <= servers <= 20  # default_pool_size


async def test_the_service_role_owns_its_database_and_is_not_a_superuser(stack: stack_module.Stack) -> None:
    connection = await asyncpg.connect(dsn(stack.database_url))
    try:
        row = await connection.fetchrow(
            "SELECT current_user AS name, r.rolsuper AS superuser, pg_get_userbyid(d.datdba) AS owner"
            " FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = current_database()"
        )
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute("CREATE TABLE public.probe (id int)")  # what the migrations will do
        await transaction.rollback()
    finally:
        await connection.close()
    assert row is not None
    assert (row["name"], row["superuser"], row["owner"]) == ("auth", False, "auth")

    admin = await asyncpg.connect(dsn(stack.admin_url))
    try:
        assert await admin.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is True
    finally:
        await admin.close()


async def test_redis_comes_back_empty_on_the_same_port_after_a_stop(stack: stack_module.Stack) -> None:
    port, url = stack.redis.port, stack.redis_url
    assert await redis_command(port, "SET", "survivor", "1") == b"+OK\r\n"

    await anyio.to_thread.run_sync(stack.redis.stop)
    with pytest.raises(OSError):
        await anyio.connect_tcp(stack_module.HOST, port)

    await anyio.to_thread.run_sync(stack.redis.start)
    assert (stack.redis.port, stack.redis_url) == (port, url)
    assert await redis_command(port, "GET", "survivor") == b"$-1\r\n"  # nil: nothing was persisted


def test_a_server_that_cannot_start_says_why_and_where_its_log_is(
    stack: stack_module.Stack, tmp_path: Path
) -> None:
    squatter = stack_module.Redis(tmp_path, tmp_path, port=stack.redis.port)  # the port is in use
    with pytest.raises(stack_module.StackError, match="Address already in use") as failure:
        squatter.start()
    assert str(tmp_path / "redis.log") in str(failure.value)
    assert squatter.pid is None


def test_a_missing_server_names_the_debian_package_to_install() -> None:
    with pytest.raises(stack_module.StackError, match=r"apt-get install .* no-such-package"):
        stack_module.executable("no-such-server", "no-such-package", "/nonexistent/no-such-server")


def test_a_stack_stops_every_process_it_started_and_removes_its_data(tmp_path: Path) -> None:
    with stack_module.Stack(tmp_path) as stack:
        pids = [stack.postgres.pid, stack.pgbouncer.pid, stack.redis.pid]
        data = stack.data
    for pid in pids:
        assert pid is not None
        with pytest.raises(ProcessLookupError):  # the whole group: PostgreSQL's backends too
            os.killpg(pid, 0)
    assert [stack.postgres.pid, stack.pgbouncer.pid, stack.redis.pid] == [None, None, None]
    assert not data.exists()
    assert {"postgres.log", "pgbouncer.log", "redis.log"} <= {path.name for path in tmp_path.iterdir()}
