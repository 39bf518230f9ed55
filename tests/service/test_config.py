"""Settings: defaults, clear errors naming the variable, and docs that list every variable."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from service.config import ConfigError, Settings

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_the_embedded_sqlite_service() -> None:
    s = Settings.from_environ({})
    assert s.embedded and s.database_url.startswith("sqlite+aiosqlite:///")
    assert (s.bcrypt_cost, s.access_token_ttl, s.refresh_token_ttl, s.refresh_reuse_grace) == (12, 900, 604800, 0)
    assert s.redis_url is None and s.introspection_secret is None


def test_postgres_urls_are_routed_to_asyncpg() -> None:
    s = Settings.from_environ({"AUTH_DATABASE_URL": "postgresql://u:p@db:5432/auth"})
    assert s.database_url == "postgresql+asyncpg://u:p@db:5432/auth" and not s.embedded


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("AUTH_BCRYPT_COST", "3", "from 4 to 31, got 3"),
        ("AUTH_BCRYPT_COST", "twelve", "whole number"),
        ("AUTH_DB_POOL_SIZE", "0", "from 1 to 1000"),
        ("AUTH_DATABASE_URL", "mysql://x", "postgresql://"),
        ("AUTH_REDIS_URL", "http://x", "redis://"),
        ("AUTH_RATE_LIMIT_ENABLED", "maybe", "true or false"),
        ("AUTH_RATE_LIMIT_TOKEN", "fast", "10/minute"),
        ("AUTH_TRUSTED_PROXIES", "10.0.0.0/33", "CIDR"),
        ("AUTH_LOG_LEVEL", "LOUD", "one of"),
        ("AUTH_LOGIN_BACKOFF_CAP", "0.5", "AUTH_LOGIN_BACKOFF_BASE"),
        ("AUTH_AUDIT_RETENTION", "60", "from 3600"),
        ("AUTH_AUDIT_KEY", "short", "at least 32 characters"),
    ],
)
def test_a_bad_value_names_the_variable_and_what_is_allowed(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ({name: value})
    assert name in str(caught.value) and message in str(caught.value)


def test_a_secret_value_never_appears_in_the_error() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ({"AUTH_DATABASE_URL": "mysql://user:hunter2@db/x"})
    assert "hunter2" not in str(caught.value)


def test_every_variable_is_documented_and_every_documented_variable_exists() -> None:
    source = (ROOT / "service" / "config.py").read_text()
    read = {"AUTH_" + name for name in re.findall(r'env\.get\("([A-Z_]+)"', source)}
    documented = set(re.findall(r"^\| `(AUTH_[A-Z_]+)`", (ROOT / "docs" / "configuration.md").read_text(), re.M))
    assert read == documented


def test_the_cli_stops_on_a_bad_value_with_a_readable_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "check-config"], env={"AUTH_BCRYPT_COST": "99", "PATH": ""},
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "authsvc: configuration error: AUTH_BCRYPT_COST: expected a whole number " \
        "from 4 to 31, got 99"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        [], ["serve"], ["migrate"], ["cleanup"], ["keys", "generate"], ["check-config"],
        ["clients"], ["clients", "create"], ["clients", "list"], ["clients", "disable"], ["clients", "rotate-secret"],
        ["users"], ["users", "list"], ["users", "show"], ["users", "disable"], ["users", "enable"],
        ["users", "delete"], ["audit"], ["audit", "tail"],
    ],
)
def test_every_command_explains_itself(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", *command, "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "usage: authsvc" in result.stdout
