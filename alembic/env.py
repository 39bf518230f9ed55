"""Alembic environment: runs migrations on the service's own engine settings (async, PgBouncer-safe).

``authsvc migrate`` (service/migrations.py) hands over its Settings in ``config.attributes``; the ``alembic``
command run from the repository (alembic.ini) reads them from the AUTH_* variables, as the service does.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from service import database
from service.config import Settings
from service.db.models import Base

config = context.config
target_metadata = Base.metadata
log = logging.getLogger("service.migrations")


def applied(*, step: Any, **_: Any) -> None:
    # One line per migration, at INFO: Alembic's own loggers stay at WARNING unless AUTH_LOG_LEVEL=DEBUG.
    log.info("migration %s %s: %s", step.up_revision_id, "applied" if step.is_upgrade else "reverted",
             step.up_revision.doc)


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
        on_version_apply=applied,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async(settings: Settings) -> None:
    engine = database.create_engine(settings, settings.database_url, pool=False)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run)
            await connection.commit()
    finally:
        await engine.dispose()


def main() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # called from code that already holds a connection
        run(connection)
        return
    settings = config.attributes.get("settings") or Settings.from_environ(os.environ)
    asyncio.run(run_async(settings))


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) mode is not supported; run `authsvc migrate`")
main()
