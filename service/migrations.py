"""Alembic from code: upgrade to head, and tell whether a database is at head.

The service never runs DDL itself, except the embedded SQLite default, which migrates on start so
that `authsvc serve` works on a bare machine.

The migrations are the repository's ``alembic/`` folder, installed as ``authsvc_migrations`` (pyproject.toml
maps it; it has no ``__init__.py`` so that it never shadows the Alembic library in a checkout). The Alembic
configuration is built here, so an installed wheel needs no ``alembic.ini``: that file is only for running
the ``alembic`` command from the repository.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from service.config import Settings

PACKAGE = "authsvc_migrations"
CHECKOUT = Path(__file__).resolve().parent.parent / "alembic"  # run from a source tree, not installed


class SchemaOutOfDate(RuntimeError):
    pass


class MigrationsMissing(RuntimeError):
    pass


def folder() -> Path:
    """The folder holding env.py and versions/: the installed package, else the checkout's."""
    spec = importlib.util.find_spec(PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / "env.py").is_file():
            return Path(location)
    if (CHECKOUT / "env.py").is_file():
        return CHECKOUT
    raise MigrationsMissing(f"the migrations ({PACKAGE}) are not installed: reinstall authsvc from its wheel")


def config(settings: Settings) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(folder()).replace("%", "%%"))  # ConfigParser interpolates
    cfg.attributes["settings"] = settings  # env.py connects with these, not with alembic.ini
    return cfg


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Blocking (Alembic's async env runs its own event loop): call from a thread or the CLI."""
    command.upgrade(config(settings), revision)


def downgrade(settings: Settings, revision: str) -> None:
    command.downgrade(config(settings), revision)


def head(settings: Settings) -> str | None:
    return ScriptDirectory.from_config(config(settings)).get_current_head()


def known(settings: Settings) -> set[str]:
    return {script.revision for script in ScriptDirectory.from_config(config(settings)).walk_revisions()}


async def current(engine: AsyncEngine) -> str | None:
    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(read)


def refuse_unknown(settings: Settings, found: str | None) -> None:
    """A revision this release has no script for: the database is ahead of it (or from elsewhere)."""
    if found is not None and found not in known(settings):
        raise SchemaOutOfDate(
            f"database schema is at revision {found}, which this release does not know (its newest is "
            f"{head(settings)}): a newer authsvc migrated it; run that release, or restore a backup"
        )


async def check(settings: Settings, engine: AsyncEngine) -> None:
    compare(settings, await current(engine))


def compare(settings: Settings, found: str | None) -> None:
    """``SchemaOutOfDate`` unless ``found`` is this release's head: saying what to do when behind or ahead."""
    expected = head(settings)
    refuse_unknown(settings, found)
    if found != expected:
        raise SchemaOutOfDate(
            f"database schema is at revision {found or 'none (empty database)'}, this release needs "
            f"{expected}: run `authsvc migrate` (the chart's pre-upgrade hook does) and restart"
        )
