"""Kubernetes probes. Readiness really asks the database (the old app's probes never did)."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.resources import resources
from service.store import RedisStore, StoreDown

CHECK_TIMEOUT = 2.0


async def liveness(request: Request) -> JSONResponse:
    # The event loop answered: that is what liveness asks. Dependencies belong to readiness,
    # or a database blip would restart every pod at once.
    return JSONResponse({"status": "alive"})


async def startup(request: Request) -> JSONResponse:
    # The lifespan refuses to finish on an out-of-date schema, so answering at all means started.
    return JSONResponse({"status": "started"})


async def readiness(request: Request) -> JSONResponse:
    res = resources(request)
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(CHECK_TIMEOUT), res.sessions() as db:
            await db.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:  # any failure means "not ready", reported by name
        checks["database"] = "failed"
    if isinstance(res.store, RedisStore):
        # Redis trouble degrades (in-process limits, no cache) but never fails readiness:
        # pods must not all go unready on a Redis blip.
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                await res.store.ping()
            checks["redis"] = "ok"
        except (StoreDown, TimeoutError):
            checks["redis"] = "degraded"
    # a keys folder whose last change did not load: the last good keys still sign and verify
    checks["keys"] = "degraded" if res.keyring.problem else "ok"
    ready = all(value != "failed" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503
    )


ROUTES = [
    Route("/health/liveness", liveness, methods=["GET"]),
    Route("/health/readiness", readiness, methods=["GET"]),
    Route("/health/startup", startup, methods=["GET"]),
]
