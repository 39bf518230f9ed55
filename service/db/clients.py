"""Queries on registered clients. Every function takes the AsyncSession of the caller's unit of work."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import Client, Session


async def create(
    db: AsyncSession, *, client_id: str, name: str, confidential: bool, secret_hash: bytes | None,
    grant_types: list[str], scopes: list[str], audiences: list[str], access_token_ttl: int | None,
    now: dt.datetime,
) -> Client:
    client = Client(
        id=client_id, name=name, confidential=confidential, secret_hash=secret_hash,
        grant_types=grant_types, scopes=scopes, audiences=audiences, access_token_ttl=access_token_ttl,
        created_at=now,
    )
    db.add(client)
    await db.flush()
    return client


async def by_id(db: AsyncSession, client_id: str) -> Client | None:
    return await db.get(Client, client_id)


async def every(db: AsyncSession) -> list[Client]:
    return list((await db.execute(select(Client).order_by(Client.created_at, Client.id))).scalars())


async def page(db: AsyncSession, *, after: tuple[dt.datetime, str] | None, limit: int) -> list[Client]:
    """Oldest first, the order ``every`` lists them in; ``after`` is the last of the previous page."""
    query = select(Client)
    if after is not None:
        query = query.where(tuple_(Client.created_at, Client.id) > tuple_(*after))
    return list((await db.execute(query.order_by(Client.created_at, Client.id).limit(limit))).scalars())


async def update_client(db: AsyncSession, client_id: str, values: dict[str, object]) -> bool:
    """Change an enabled client's registration (name, grants, scopes, audiences, token lifetime)."""
    result = await db.execute(
        update(Client).where(Client.id == client_id, Client.disabled_at.is_(None)).values(**values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def disable(db: AsyncSession, client_id: str, now: dt.datetime) -> bool:
    """Disable the client and end every session granted to it; False when there is no such client."""
    if (await db.execute(select(Client.id).where(Client.id == client_id))).scalar_one_or_none() is None:
        return False
    await db.execute(
        update(Client).where(Client.id == client_id, Client.disabled_at.is_(None)).values(disabled_at=now)
    )
    await db.execute(
        update(Session)
        .where(Session.client_id == client_id, Session.revoked_at.is_(None))
        .values(revoked_at=now, revoke_reason="client-disabled")
    )
    return True


async def rotate_secret(
    db: AsyncSession, client_id: str, new_hash: bytes, previous_valid_until: dt.datetime
) -> bool:
    """The new secret becomes current; the current one stays valid until ``previous_valid_until``
    (one statement: the right-hand side reads the row as it was)."""
    result = await db.execute(
        update(Client)
        .where(Client.id == client_id, Client.confidential.is_(True), Client.disabled_at.is_(None))
        .values(
            secret_hash=new_hash,
            previous_secret_hash=Client.secret_hash,
            previous_secret_expires_at=previous_valid_until,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
