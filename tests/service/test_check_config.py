"""``authsvc check-config``: every problem at once, one line each, names the variable (or suggests the one
meant), checks the keys, and with ``--connect`` the database, its schema and Redis; it never writes anything."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devtools.stack import Stack
from service import config, migrations
from service.config import ConfigError, Settings
from tests.service.conftest import scratch_database
from tests.service.test_startup import authsvc, contents

pytestmark = pytest.mark.anyio


def problems(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The stderr lines, after checking that it failed without a traceback and that each is one problem."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert all(line.startswith("authsvc: ") for line in lines), result.stderr
    return lines


def passed(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    return result.stdout.splitlines()


def test_every_bad_value_is_reported_with_the_defaults_standing_in() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ(
            {
                "AUTH_BCRYPT_COST": "99",
                "AUTH_REDIS_URL": "http://x",
                "AUTH_ISSUER": "ftp://x",
                "AUTH_ACCESS_TOKEN_TTL": "600",
            }
        )
    assert [problem.split(":")[0] for problem in caught.value.problems] == [
        "AUTH_REDIS_URL",
        "AUTH_BCRYPT_COST",
        "AUTH_ISSUER",
    ]
    assert caught.value.refused == {"AUTH_REDIS_URL", "AUTH_BCRYPT_COST", "AUTH_ISSUER"}
    partial = caught.value.partial
    assert partial is not None and (partial.bcrypt_cost, partial.redis_url, partial.access_token_ttl) == (12, None, 600)
    assert str(caught.value).count("; ") == 2  # one line for `serve` and the operator's status


def test_a_rule_across_settings_is_not_judged_against_a_refused_values_default() -> None:
    """AUTH_LOGIN_BACKOFF_BASE refused: its default (1) says nothing about the cap of 0.5 that was meant."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ({"AUTH_LOGIN_BACKOFF_BASE": "soon", "AUTH_LOGIN_BACKOFF_CAP": "0.5"})
    assert caught.value.problems == ["AUTH_LOGIN_BACKOFF_BASE: expected a number from 0 to 60"]


def test_a_rule_across_settings_is_reported_beside_a_bad_value() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ({"AUTH_BCRYPT_COST": "3", "AUTH_SMTP_PASSWORD_FILE": "/run/secrets/smtp"})
    assert [problem.split(":")[0] for problem in caught.value.problems] == [
        "AUTH_BCRYPT_COST",
        "AUTH_SMTP_PASSWORD_FILE needs AUTH_SMTP_USERNAME",
    ]


def test_an_unknown_variable_gets_the_closest_known_name() -> None:
    assert config.unknown(
        {
            "AUTH_BCRPYT_COST": "12",
            "AUTH_BCRYPT_COST": "12",
            "auth_log_level": "INFO",
            "AUTH_FLUX_CAPACITOR": "on",
            "HOME": "/root",
        }
    ) == [
        "AUTH_BCRPYT_COST is not a setting: did you mean AUTH_BCRYPT_COST?",
        "AUTH_FLUX_CAPACITOR is not a setting: docs/configuration.md lists them",
        "auth_log_level is not a setting: did you mean AUTH_LOG_LEVEL?",
    ]


def test_known_names_include_those_read_only_when_another_is_unset() -> None:
    """AUTH_JWT_ISSUER (deprecated) is looked up only when AUTH_ISSUER is empty: set beside it, it is still known."""
    assert config.unknown({"AUTH_ISSUER": "https://a.example", "AUTH_JWT_ISSUER": "https://b.example"}) == []


def test_kubernetes_service_links_are_not_taken_for_typos() -> None:
    """A Service named auth-platform in the namespace gives every pod AUTH_PLATFORM_SERVICE_HOST and friends."""
    links = {
        "AUTH_PLATFORM_SERVICE_HOST": "10.0.0.7",
        "AUTH_PLATFORM_SERVICE_PORT": "80",
        "AUTH_PLATFORM_SERVICE_PORT_HTTP": "80",
        "AUTH_PLATFORM_PORT": "tcp://10.0.0.7:80",
        "AUTH_PLATFORM_PORT_80_TCP": "tcp://10.0.0.7:80",
        "AUTH_PLATFORM_PORT_80_TCP_ADDR": "10.0.0.7",
    }
    assert config.unknown(links) == []
    # without its X_SERVICE_HOST a name of that shape is no link: a typo of a setting ending in _PORT stays flagged
    assert config.unknown({"AUTH_SMPT_PORT": "25"}) == [
        "AUTH_SMPT_PORT is not a setting: docs/configuration.md lists them"
    ]


async def test_three_bad_values_are_three_lines_naming_the_three_variables(cwd: Path) -> None:
    env = {"AUTH_BCRYPT_COST": "99", "AUTH_DB_POOL_SIZE": "0", "AUTH_LOG_LEVEL": "LOUD"}
    result = await authsvc(cwd, env, "check-config")
    lines = problems(result)
    assert len(lines) == 3, result.stderr
    for variable, line in zip(sorted(env), sorted(lines), strict=True):
        assert line.startswith(f"authsvc: configuration error: {variable}: expected"), line
    assert result.returncode == 2 and result.stdout == ""
    assert contents(cwd) == []


async def test_a_typo_in_a_name_is_reported_with_the_name_meant(cwd: Path) -> None:
    result = await authsvc(cwd, {"AUTH_BCRPYT_COST": "4"}, "check-config")
    assert problems(result) == [
        "authsvc: configuration error: AUTH_BCRPYT_COST is not a setting: did you mean AUTH_BCRYPT_COST?"
    ]
    assert result.returncode == 2


async def test_a_missing_keys_folder_is_reported_beside_a_bad_value(cwd: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-keys"
    env = {"AUTH_DATABASE_URL": "postgresql://auth@db/auth", "AUTH_KEYS_DIR": str(missing), "AUTH_BCRYPT_COST": "3"}
    lines = problems(await authsvc(cwd, env, "check-config"))
    assert len(lines) == 2
    assert "AUTH_BCRYPT_COST" in lines[0]
    assert "AUTH_KEYS_DIR" in lines[1] and f"{missing} does not exist" in lines[1]
    assert f"authsvc keys generate --dir {missing}" in lines[1]
    assert not missing.exists() and contents(cwd) == []


async def test_an_unknown_signing_kid_is_reported(cwd: Path, key_folder: Path) -> None:
    env = {
        "AUTH_DATABASE_URL": "postgresql://auth@db/auth",
        "AUTH_KEYS_DIR": str(key_folder),
        "AUTH_SIGNING_KEY_ID": "k2",
    }
    assert problems(await authsvc(cwd, env, "check-config")) == [
        f"authsvc: configuration error: AUTH_SIGNING_KEY_ID: no private key k2.pem in {key_folder}"
    ]
    assert contents(key_folder) == ["k1.pem"]


async def test_good_settings_say_what_they_run_on(cwd: Path, key_folder: Path) -> None:
    env = {"AUTH_DATABASE_URL": "postgresql://auth:hunter2@db:6432/auth", "AUTH_KEYS_DIR": str(key_folder)}
    result = await authsvc(cwd, env, "check-config")
    assert passed(result) == ["configuration ok: PostgreSQL db:6432/auth, signing key k1 (EdDSA), keys k1"]


async def test_connect_says_ok_for_the_database_the_schema_and_redis(
    cwd: Path, key_folder: Path, stack: Stack, settings: Settings
) -> None:
    env = {**stack.environ(), "AUTH_KEYS_DIR": str(key_folder)}
    lines = passed(await authsvc(cwd, env, "check-config", "--connect"))
    pgbouncer = stack.pgbouncer_url.split("@", 1)[1]
    assert lines == [
        f"configuration ok: PostgreSQL {pgbouncer}, signing key k1 (EdDSA), keys k1",
        f"database ok: PostgreSQL {pgbouncer}",
        f"schema ok: at head {migrations.head(settings)}",
        f"redis ok: Redis {stack.redis_url.split('://', 1)[1]}",
    ]
    assert contents(cwd) == []


async def test_connect_to_an_unreachable_database_says_so_in_one_line(
    cwd: Path, key_folder: Path, stack: Stack, closed_port: int
) -> None:
    env = {
        "AUTH_DATABASE_URL": f"postgresql://auth:hunter2@127.0.0.1:{closed_port}/auth",
        "AUTH_KEYS_DIR": str(key_folder),
        "AUTH_REDIS_URL": stack.redis_url,
    }
    result = await authsvc(cwd, env, "check-config", "--connect")
    (line,) = problems(result)
    assert f"cannot reach the database at 127.0.0.1:{closed_port}/auth (AUTH_DATABASE_URL)" in line
    assert "connection refused" in line
    assert result.returncode == 1
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == ["configuration ok", "redis ok"]
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("revision", "expected"), [(None, "run `authsvc migrate`"), ("9999", "newer authsvc")], ids=["behind", "ahead"]
)
async def test_connect_names_a_schema_behind_or_ahead_and_what_to_do(
    cwd: Path, key_folder: Path, stack: Stack, revision: str | None, expected: str
) -> None:
    async with scratch_database(stack, revision=revision) as url:
        env = {"AUTH_DATABASE_URL": url, "AUTH_KEYS_DIR": str(key_folder)}
        result = await authsvc(cwd, env, "check-config", "--connect")
    (line,) = problems(result)
    assert line.startswith("authsvc: database schema is at revision") and expected in line
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == [
        "configuration ok",
        "database ok",
        "redis ok",
    ]


async def test_connect_to_an_unreachable_redis_says_so_in_one_line(
    cwd: Path, key_folder: Path, stack: Stack, settings: Settings, closed_port: int
) -> None:
    env = {**stack.environ(), "AUTH_KEYS_DIR": str(key_folder), "AUTH_REDIS_URL": f"redis://127.0.0.1:{closed_port}/0"}
    result = await authsvc(cwd, env, "check-config", "--connect")
    (line,) = problems(result)
    assert f"cannot reach Redis 127.0.0.1:{closed_port}/0 (AUTH_REDIS_URL): connection refused" in line
    assert result.returncode == 1


async def test_the_embedded_default_is_checked_without_writing_anything(cwd: Path) -> None:
    lines = passed(await authsvc(cwd, {}, "check-config", "--connect"))
    assert (
        lines[0] == "configuration ok: SQLite .authsvc/auth.db, no signing key yet: serve creates "
        ".authsvc/keys/local.pem"
    )
    assert lines[1:] == [
        "database ok: SQLite .authsvc/auth.db (serve creates it)",
        f"schema ok: serve migrates it to {migrations.head(Settings.from_environ({}))}",
        "redis ok: none set (rate limits and cache in-process)",
    ]
    assert contents(cwd) == []  # no data folder, no database, no key


async def test_an_existing_embedded_database_is_read_without_being_changed(cwd: Path) -> None:
    migrated = await authsvc(cwd, {}, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    database = cwd / ".authsvc" / "auth.db"
    before = (contents(cwd), database.read_bytes(), database.stat().st_mtime_ns)
    lines = passed(await authsvc(cwd, {}, "check-config", "--connect"))
    assert f"schema ok: at head {migrations.head(Settings.from_environ({}))}" in lines
    assert (contents(cwd), database.read_bytes(), database.stat().st_mtime_ns) == before
