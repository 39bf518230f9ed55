"""Alembic from code: upgrade to head, and tell whether a database is at head.

The service never runs DDL itself, except the embedded SQLite default, which migrates on start so
that `authsvc serve` works on a bare machine.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from service.config import Settings

ROOT = Path(__file__).resolve().parent.parent
INI = ROOT / "alembic.ini"


class SchemaOutOfDate(RuntimeError):
    pass


def config(settings: Settings) -> Config:
    if not INI.exists():
        raise FileNotFoundError(f"{INI} not found: run authsvc from the project folder or its image")
    cfg = Config(str(INI))
    cfg.attributes["settings"] = settings
    return cfg


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Blocking (Alembic's async env runs its own event loop): call from a thread or the CLI."""
    command.upgrade(config(settings), revision)


def downgrade(settings: Settings, revision: str) -> None:
    command.downgrade(config(settings), revision)


def head(settings: Settings) -> str | None:
    return ScriptDirectory.from_config(config(settings)).get_current_head()


async def current(engine: AsyncEngine) -> str | None:
    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(read)


async def check(settings: Settings, engine: AsyncEngine) -> None:
    expected, found = head(settings), await current(engine)
    if found != expected:
        raise SchemaOutOfDate(
            f"database schema is at revision {found or 'none (empty database)'}, this release needs "
            f"{expected}: run `authsvc migrate` (the chart's pre-upgrade hook does) and restart"
        )
