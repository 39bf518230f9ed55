"""Alembic environment: runs migrations on the service's own engine settings (async, PgBouncer-safe)."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from service import database
from service.config import Settings
from service.db.models import Base

config = context.config
target_metadata = Base.metadata


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
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
