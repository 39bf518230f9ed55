"""`authsvc` that cannot start or run: one line on stderr naming what is wrong and what to do, a non-zero
exit, no traceback unless asked for, and nothing written to the current folder."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest

from devtools.stack import Stack
from service.config import Settings
from tests.service.conftest import scratch_database

pytestmark = pytest.mark.anyio


async def authsvc(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``authsvc ARGS`` in ``cwd`` with only ``env`` set (and PATH)."""
    with anyio.fail_after(90):
        result = await anyio.run_process(
            [sys.executable, "-m", "service.cli", *args], cwd=cwd, env={"PATH": os.environ["PATH"], **env},
            check=False,
        )
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(), result.stderr.decode())


def one_line(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    """The failure's only stderr line, after checking the exit code and that it names what it should."""
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith("authsvc: ")
    for part in expected:
        assert part in line, line
    return line


def contents(folder: Path) -> list[str]:
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*"))


COMMANDS = [["serve", "--port", "0"], ["migrate"], ["cleanup"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
async def test_a_bad_setting_is_one_line_naming_the_variable_and_nothing_is_written(
    cwd: Path, command: list[str]
) -> None:
    result = await authsvc(cwd, {"AUTH_BCRYPT_COST": "99"}, *command)
    one_line(result, "AUTH_BCRYPT_COST", "from 4 to 31")
    assert result.returncode == 2
    assert contents(cwd) == []  # no .authsvc, no key


async def test_missing_keys_name_the_folder_and_the_command_that_makes_one(
    cwd: Path, tmp_path: Path, stack: Stack, settings: Settings
) -> None:
    missing = tmp_path / "no-keys"
    env = {"AUTH_DATABASE_URL": stack.database_url, "AUTH_KEYS_DIR": str(missing)}
    one_line(await authsvc(cwd, env, "serve", "--port", "0"),
             "AUTH_KEYS_DIR", str(missing), f"authsvc keys generate --dir {missing}")
    assert not missing.exists()
    assert contents(cwd) == []


async def test_an_unreadable_key_names_the_file(cwd: Path, key_folder: Path, stack: Stack, settings: Settings) -> None:
    (key_folder / "broken.pem").mkdir()  # a *.pem that cannot be read as a file
    env = {"AUTH_DATABASE_URL": stack.database_url, "AUTH_KEYS_DIR": str(key_folder)}
    one_line(await authsvc(cwd, env, "serve", "--port", "0"), "AUTH_KEYS_DIR", "cannot read", "broken.pem")
    assert contents(cwd) == []


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
async def test_an_unreachable_database_is_one_line_with_where_and_what_to_check(
    cwd: Path, key_folder: Path, closed_port: int, command: list[str]
) -> None:
    env = {"AUTH_DATABASE_URL": f"postgresql://auth:hunter2@127.0.0.1:{closed_port}/auth",
           "AUTH_KEYS_DIR": str(key_folder)}
    result = await authsvc(cwd, env, *command)
    one_line(result, "AUTH_DATABASE_URL", f"127.0.0.1:{closed_port}/auth", "connection refused")
    assert "hunter2" not in result.stderr + result.stdout
    assert contents(cwd) == []


async def test_an_empty_database_asks_for_authsvc_migrate(cwd: Path, key_folder: Path, stack: Stack) -> None:
    async with scratch_database(stack) as url:
        env = {"AUTH_DATABASE_URL": url, "AUTH_KEYS_DIR": str(key_folder)}
        result = await authsvc(cwd, env, "serve", "--port", "0")
    one_line(result, "none (empty database)", "run `authsvc migrate`")
    assert contents(cwd) == []


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["migrate"]], ids=lambda c: c[0])
async def test_a_schema_from_a_newer_release_is_refused_in_one_line(
    cwd: Path, key_folder: Path, stack: Stack, command: list[str]
) -> None:
    async with scratch_database(stack, revision="9999") as url:
        result = await authsvc(cwd, {"AUTH_DATABASE_URL": url, "AUTH_KEYS_DIR": str(key_folder)}, *command)
    one_line(result, "revision 9999", "does not know", "newer authsvc")


async def test_a_port_in_use_is_one_line_before_anything_starts(
    cwd: Path, key_folder: Path, stack: Stack, settings: Settings
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"AUTH_DATABASE_URL": stack.database_url, "AUTH_KEYS_DIR": str(key_folder)}
        one_line(await authsvc(cwd, env, "serve", "--port", str(port)), f"127.0.0.1:{port} is in use", "--port")


async def test_the_embedded_default_that_cannot_create_its_database_writes_no_key(cwd: Path) -> None:
    (cwd / ".authsvc" / "auth.db").mkdir(parents=True)  # a folder where the database file should go
    result = await authsvc(cwd, {}, "serve", "--port", "0")
    one_line(result, "cannot open the database", "AUTH_DATA_DIR")
    assert contents(cwd) == [".authsvc", ".authsvc/auth.db"]


@pytest.mark.parametrize(("flags", "extra"), [(["--debug"], {}), ([], {"AUTH_LOG_LEVEL": "DEBUG"})],
                         ids=["--debug", "AUTH_LOG_LEVEL"])
async def test_debug_adds_the_traceback_before_the_line(
    cwd: Path, closed_port: int, flags: list[str], extra: dict[str, str]
) -> None:
    env = {"AUTH_DATABASE_URL": f"postgresql://auth@127.0.0.1:{closed_port}/auth", **extra}
    result = await authsvc(cwd, env, "migrate", *flags)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("authsvc: cannot reach the database")


async def test_a_redis_that_does_not_answer_at_start_degrades_with_one_warning(
    tmp_path: Path, cwd: Path, stack: Stack, settings: Settings, closed_port: int
) -> None:
    """Redis down is an outage the service rides out (docs/rate-limits.md), at start as later: it serves."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"PATH": os.environ["PATH"], "AUTH_DATABASE_URL": stack.pgbouncer_url, "AUTH_DB_STATEMENT_CACHE_SIZE": "0",
           "AUTH_KEYS_DIR": str(settings.keys_dir), "AUTH_REDIS_URL": f"redis://127.0.0.1:{closed_port}/0",
           "AUTH_BCRYPT_COST": "4"}
    err = tmp_path / "stderr"
    with err.open("wb") as stderr:
        process = await anyio.open_process(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port)], cwd=cwd, env=env,
            stdout=subprocess.DEVNULL, stderr=stderr,
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            with anyio.fail_after(60):
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get("/health/startup")).status_code == 200:
                            break
                    assert process.returncode is None, err.read_text()
                    await anyio.sleep(0.1)
            ready = await client.get("/health/readiness")
        assert ready.json()["checks"] == {"database": "ok", "redis": "degraded", "keys": "ok"}
    finally:
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            await process.wait()
    records = [json.loads(line) for line in err.read_text().splitlines()]
    warnings = [r["message"] for r in records if r["level"] == "WARNING" and r["logger"] == "service.startup"]
    assert len(warnings) == 1 and "AUTH_REDIS_URL" in warnings[0] and f"127.0.0.1:{closed_port}" in warnings[0]
    (summary,) = [r["message"] for r in records if r["logger"] == "service.cli"]
    assert f"Redis 127.0.0.1:{closed_port}/0 (unreachable)" in summary
