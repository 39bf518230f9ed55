"""Seeded users: bench0 … bench{N-1}, all with one password, loaded by COPY.

One bcrypt hash at the configured cost is computed once and shared by every row: logins then cost exactly
what a real login costs, and a million users load in seconds instead of days of hashing.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid

import asyncpg
import bcrypt

PASSWORD = "bench-password"  # noqa: S105 - the known password of throwaway bench users
PREFIX = "bench"
COLUMNS = ("id", "username", "email", "password_hash", "is_active", "created_at", "updated_at")


def password_hash(cost: int) -> str:
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(cost)).decode()


async def users(database_url: str, start: int, stop: int, hashed: str) -> float:
    """COPYs users number `start` to `stop - 1` straight into PostgreSQL; returns the seconds it took."""
    begun = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        rows = (
            (uuid.uuid4(), f"{PREFIX}{i}", f"{PREFIX}{i}@example.com", hashed, True, now, now)
            for i in range(start, stop)
        )
        await connection.copy_records_to_table("users", records=rows, columns=COLUMNS)
        await connection.execute("ANALYZE users")  # plans as in production: the login index, not a seq scan
    finally:
        await connection.close()
    return time.perf_counter() - begun
