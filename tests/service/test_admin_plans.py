"""The admin API's queries use their indexes at realistic sizes: 1M users, and an audit log of millions of
events, generated in the database (generate_series), then ANALYZEd, then EXPLAINed as the code sends them."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from service import audit, cleanup
from service.db import audit as audit_queries
from service.db import users
from tests.service.conftest import Running
from tests.service.test_database import explain
from tests.stack import Stack

pytestmark = pytest.mark.anyio
USERS = 1_000_000
# 10M events took 90-160 s to generate and index here (2 cores, shared with other test runs); 3M take 20-30 s
# and get the same plans (each query is a LIMIT on an index range; checked at 10M too)
EVENTS = 3_000_000


async def test_user_search_and_listing_use_their_indexes_on_1m_users(app: Running, stack: Stack) -> None:
    admin = create_async_engine(stack.admin_url)
    started = time.monotonic()
    try:
        async with admin.begin() as connection:
            # names with varied prefixes (md5), as real ones are: a short prefix matches a few thousand
            await connection.execute(text("""
                INSERT INTO users (id, username, email, password_hash, is_active, created_at, updated_at)
                SELECT gen_random_uuid(), substr(md5(i::text), 1, 8) || i,
                       'u' || i || '@' || substr(md5((i % 997)::text), 1, 6) || '.example.com',
                       'x', i % 50 <> 0, now(), now()
                FROM generate_series(1, CAST(:n AS integer)) AS i"""), {"n": USERS})
            await connection.execute(text("ANALYZE users"))
    finally:
        await admin.dispose()
    print(f"{USERS} users generated and analyzed in {time.monotonic() - started:.1f} s")

    first_page = await explain(app, lambda db: users.search(db, prefix=None, active=None, after=None, limit=50))
    assert "ix_users_username_search" in first_page and "Sort" not in first_page, first_page  # ordered, stops at 50
    next_page = await explain(app, lambda db: users.search(db, prefix=None, active=True, after="c4ca", limit=50))
    assert "ix_users_username_search" in next_page and "Seq Scan" not in next_page, next_page
    by_prefix = await explain(app, lambda db: users.search(db, prefix="C4Ca42", active=None, after=None, limit=50))
    assert "ix_users_username_search" in by_prefix and "ix_users_email_search" in by_prefix, by_prefix
    assert "Seq Scan" not in by_prefix, by_prefix
    by_email = await explain(app, lambda db: users.search(db, prefix="u4242@", active=None, after=None, limit=50))
    assert "ix_users_email_search" in by_email and "Seq Scan" not in by_email, by_email


async def test_audit_queries_and_retention_use_their_indexes_on_millions_of_events(
    app: Running, stack: Stack
) -> None:
    """The table as the migration made it: its indexes are dropped for the load and rebuilt from their own
    definitions (pg_get_indexdef), which is how PostgreSQL loads fastest; then ANALYZE."""
    admin = create_async_engine(stack.admin_url)
    started = time.monotonic()
    try:
        async with admin.begin() as connection:
            definitions = (await connection.execute(text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'audit_events' "
                "AND indexname <> 'pk_audit_events'"
            ))).all()
            assert len(definitions) == 4
            for name, _ in definitions:
                await connection.execute(text(f'DROP INDEX "{name}"'))
            # stored oldest first over 100 days, as an append-only log is; 100 events per user; 20 clients
            await connection.execute(text("""
                INSERT INTO audit_events (occurred_at, type, actor_type, actor_id, subject_type, subject_id,
                                          user_id, client_id, client_ip, user_agent, request_id, details)
                SELECT now() - make_interval(secs => (CAST(:n AS integer) - i) * 8640000.0 / CAST(:n AS integer)),
                       CASE WHEN i % 100000 = 0 THEN 'client.created' ELSE  -- a rare type
                       (ARRAY['login.succeeded','login.succeeded','login.succeeded','login.failed','login.failed',
                              'logout','logout.all','refresh.reuse_detected','session.ended','user.updated',
                              'user.disabled'])[1 + (i::bigint * 7919) % 11] END,
                       'user', NULL, 'user', NULL,
                       md5((i % (CAST(:n AS integer) / 100))::text)::uuid,
                       CASE WHEN i % 5 = 0 THEN 'client' || (i % 20) END,
                       '10.0.' || (i % 250) || '.' || (i % 200), 'k6', md5(i::text), '{}'
                FROM generate_series(1, CAST(:n AS integer)) AS i"""), {"n": EVENTS})
            await connection.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
            for _, definition in definitions:
                await connection.execute(text(definition))
            await connection.execute(text("ANALYZE audit_events"))
    finally:
        await admin.dispose()
    print(f"{EVENTS} audit events generated, indexed and analyzed in {time.monotonic() - started:.1f} s")

    someone = uuid.UUID(bytes=bytes.fromhex("c4ca4238a0b923820dcc509a6f75849b"))  # md5('1')
    cases = {
        "ix_audit_events_user_id": lambda db: audit_queries.page(db, user_id=someone, limit=50),
        "ix_audit_events_client_id": lambda db: audit_queries.page(db, client_id="client5", limit=50),
        "ix_audit_events_type": lambda db: audit_queries.page(db, type=audit.CLIENT_CREATED, limit=50),
        "ix_audit_events_occurred_at": lambda db: audit_queries.page(db, limit=50),
    }
    for index, query in cases.items():
        plan = await explain(app, query)
        assert index in plan and "Seq Scan" not in plan and "Sort" not in plan, (index, plan)
    now = dt.datetime.now(dt.UTC)
    later_page = await explain(app, lambda db: audit_queries.page(
        db, user_id=someone, since=now - dt.timedelta(days=30), before=(now - dt.timedelta(days=3), 123), limit=50))
    assert "ix_audit_events_user_id" in later_page and "Seq Scan" not in later_page, later_page

    (_, model, condition, order), = [s for s in cleanup.sweeps(app.resources.settings, now) if s[0] == "audit_events"]
    statement = cleanup.batch_delete(model, condition, order, 1000)  # what `authsvc cleanup` sends per batch
    retention = await explain(app, lambda db: db.execute(statement))
    assert "ix_audit_events_occurred_at" in retention and "Seq Scan on audit_events" not in retention, retention
