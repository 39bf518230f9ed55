"""``authsvc check-config``: every problem with the settings at once, one line each, and nothing written.

It reports each refused value (the others are still checked, with the refused one's default standing in),
each ``AUTH_*`` variable that no setting reads (with the closest known name), and the keys folder and signing
kid as ``serve`` would load them (service/keys.py). With ``--connect`` it also reaches the database, reads its
schema revision and pings Redis, as ``serve`` does before uvicorn starts (service/startup.py), one line each.

Read-only, the embedded default included: where ``serve`` would create the data folder, the SQLite database
or the signing key, this says that it will, and creates nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from service import database, keys, migrations, startup
from service.config import ConfigError, Settings, unknown


@dataclasses.dataclass
class Report:
    passed: list[str] = dataclasses.field(default_factory=list)  # for stdout
    settings: list[str] = dataclasses.field(default_factory=list)  # configuration problems, for stderr
    connections: list[str] = dataclasses.field(default_factory=list)  # what --connect could not reach

    @property
    def status(self) -> int:
        """The exit status: 2 for bad settings (as every command), 1 for an unreachable or outdated service."""
        return 2 if self.settings else 1 if self.connections else 0


async def check(environ: Mapping[str, str], connect: bool) -> Report:
    report = Report()
    refused: frozenset[str] = frozenset()
    try:
        settings = Settings.from_environ(environ)
    except ConfigError as exc:
        if exc.partial is None:
            raise
        settings, refused = exc.partial, exc.refused
        report.settings += exc.problems
    report.settings += unknown(environ)
    signing = check_keys(settings, report)
    if not report.settings:
        report.passed.append(f"configuration ok: {startup.where(settings.database_url)}, {signing}")
    if connect:
        # a refused URL's default is not what was meant: connecting to it would say nothing
        if not refused & {"AUTH_DATABASE_URL", "AUTH_DATABASE_READ_URL", "AUTH_DATA_DIR"}:
            if settings.embedded:
                check_sqlite(settings, report)
            else:
                await check_postgresql(settings, report)
        if "AUTH_REDIS_URL" not in refused:
            await check_redis(settings, report)
    report.settings = [f"configuration error: {problem}" for problem in report.settings]
    return report


def check_keys(settings: Settings, report: Report) -> str:
    """What signs, for the summary line; a problem goes into ``report``. ``keys.load`` only reads."""
    folder = settings.keys_dir
    if settings.embedded and not (folder.is_dir() and any(folder.glob("*.pem"))):
        if settings.signing_key_id not in (None, "local"):  # keys.ensure generates local.pem
            report.settings.append(
                f"AUTH_SIGNING_KEY_ID: no private key {settings.signing_key_id}.pem in {folder}, "
                "and the embedded default creates only local.pem there"
            )
        return f"no signing key yet: serve creates {folder / 'local.pem'}"
    if not folder.exists():
        report.settings.append(
            f"AUTH_KEYS_DIR: {folder} does not exist; create a key in it with `authsvc keys generate --dir {folder}`"
        )
        return ""
    try:
        keyset = keys.load(folder, settings.signing_key_id)
    except ConfigError as exc:
        report.settings += exc.problems
        return ""
    return f"signing key {keyset.signing.kid} ({keyset.signing.algorithm}), keys {' '.join(sorted(keyset.by_kid))}"


async def check_postgresql(settings: Settings, report: Report) -> None:
    engine = database.create_engine(settings, settings.database_url, pool=False)
    try:
        async with startup.reaching(settings, settings.database_url):
            found = await migrations.current(engine)  # reads alembic_version; creates nothing
    except Exception as exc:
        report.connections.append(startup.explain(exc, settings))
        return  # nothing more to learn about the schema
    finally:
        await engine.dispose()
    report.passed.append(f"database ok: {startup.where(settings.database_url)}")
    try:
        migrations.compare(settings, found)
    except migrations.SchemaOutOfDate as exc:
        report.connections.append(str(exc))
    else:
        report.passed.append(f"schema ok: at head {found}")
    if settings.database_read_url:
        replica = database.create_engine(settings, settings.database_read_url, pool=False)
        try:
            async with startup.reaching(settings, settings.database_read_url), replica.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as exc:
            report.connections.append(startup.explain(exc, settings))
        else:
            report.passed.append(f"read replica ok: {startup.where(settings.database_read_url)}")
        finally:
            await replica.dispose()


def check_sqlite(settings: Settings, report: Report) -> None:
    """The embedded database, opened read-only; ``serve`` creates and migrates it, so behind is fine."""
    path = Path(make_url(settings.database_url).database or "")
    head = migrations.head(settings)
    if not path.exists():
        parent = next(folder for folder in path.absolute().parents if folder.exists())
        if not (parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)):
            report.connections.append(
                f"cannot create the database {path}: {parent} is not a folder this user may "
                f"write; check AUTH_DATA_DIR ({settings.data_dir})"
            )
            return
        report.passed += [f"database ok: SQLite {path} (serve creates it)", f"schema ok: serve migrates it to {head}"]
        return
    try:
        found = sqlite_revision(path)
    except sqlite3.Error as exc:
        report.connections.append(
            f"cannot open the database {path}: {str(exc).lower()}; check that AUTH_DATA_DIR "
            f"({settings.data_dir}) is a folder this user may write"
        )
        return
    report.passed.append(f"database ok: SQLite {path}")
    try:
        migrations.refuse_unknown(settings, found)
    except migrations.SchemaOutOfDate as exc:
        report.connections.append(str(exc))
        return
    report.passed.append(
        f"schema ok: at head {head}"
        if found == head
        else f"schema ok: at {found or 'none'}, serve migrates it to {head}"
    )


def sqlite_revision(path: Path) -> str | None:
    # The database is in WAL mode: even a read-only connection creates its -wal and -shm files, unless told the
    # file is immutable, which is true when no -wal file holds changes not yet in it (no server has it open).
    pending = path.with_name(f"{path.name}-wal").exists()
    uri = f"{path.absolute().as_uri()}?{'mode=ro' if pending else 'immutable=1'}"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
        if connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'").fetchone() is None:
            return None
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    return None if row is None else str(row[0])


async def check_redis(settings: Settings, report: Report) -> None:
    if settings.redis_url is None:
        report.passed.append("redis ok: none set (rate limits and cache in-process)")
        return
    where = startup.redis_where(settings.redis_url)
    problem = await startup.redis_problem(settings, settings.redis_url)
    if problem is None:
        report.passed.append(f"redis ok: {where}")
    else:
        report.connections.append(
            f"cannot reach {where} (AUTH_REDIS_URL): {problem}; serve would start without it "
            "(in-process rate limits, no cache, revocations checked in the database)"
        )
