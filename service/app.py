"""The application: routes, middleware, the lifespan that owns every resource, errors → HTTP."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import cast

import anyio
from sqlalchemy import exc as sa_exc
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from service import audit, database, errors, keys, metrics, migrations, routes, store, telemetry, tokens, web
from service.cache import Cache
from service.config import Settings
from service.passwords import Hasher, available_cpus
from service.ratelimit import Limiter
from service.resources import Resources, State

log = logging.getLogger("service")


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        if settings.embedded:  # the laptop default sets itself up; production never runs DDL here
            keys.ensure(settings.keys_dir)
            await anyio.to_thread.run_sync(migrations.upgrade, settings)
        keyset = keys.load(settings.keys_dir, settings.signing_key_id)
        engine = database.create_engine(settings, settings.database_url)
        read_engine = (
            database.create_engine(settings, settings.database_read_url) if settings.database_read_url else None
        )
        hasher = Hasher(
            settings.bcrypt_cost,
            # the container's CPUs are shared by every uvicorn worker process
            settings.hash_workers or max(1, available_cpus() // settings.processes),
            settings.hash_queue_size,
            settings.hash_max_wait,
        )
        shared = store.create(settings.redis_url, settings.redis_timeout)
        cache = Cache(shared, settings.user_cache_ttl, settings.access_token_ttl)
        sessions = database.sessionmaker(engine)
        audit_log = audit.Log(sessions, audit.root_key(settings, keyset))
        try:
            await migrations.check(settings, engine)
            await hasher.start()
            await audit_log.start()
            yield {
                "resources": Resources(
                    settings=settings,
                    engine=engine,
                    sessions=sessions,
                    reads=database.sessionmaker(read_engine) if read_engine else sessions,
                    hasher=hasher,
                    keys=keyset,
                    verifier=tokens.Verifier(keyset, settings.issuer, settings.jwt_audience),
                    jwks=keyset.jwks_json(),
                    store=shared,
                    limiter=Limiter(settings, shared),
                    cache=cache,
                    audit=audit_log,
                )
            }
        except migrations.SchemaOutOfDate as exc:
            log.error("%s", exc)
            raise
        finally:  # close in reverse order of creation
            await audit_log.close()  # events of requests that finished are written before the engine goes
            await cache.close()  # a last try at revocations still waiting for Redis
            if isinstance(shared, store.RedisStore):
                await shared.close()
            hasher.close()
            if read_engine is not None:
                await read_engine.dispose()
            await engine.dispose()

    app = Starlette(
        routes=[*routes.ALL, metrics.ROUTE],
        lifespan=lifespan,
        middleware=[
            *web.cors(settings.cors_origins),  # outermost: preflights are answered before routing
            Middleware(web.NoStore),
            Middleware(web.BodyLimit, limit=settings.max_body_bytes),
        ],
        exception_handlers={
            errors.ServiceError: _service_error,
            HTTPException: _http_error,
            sa_exc.TimeoutError: _database_unavailable,  # pool exhausted past AUTH_DB_POOL_TIMEOUT
            sa_exc.OperationalError: _database_unavailable,
            sa_exc.InterfaceError: _database_unavailable,
            OSError: _database_unavailable,  # connection refused / reset
            Exception: _internal_error,
        },
    )
    telemetry.instrument(app)  # request ids, access log, latency histogram; OTel server spans when on
    return app


async def _service_error(request: Request, exc: Exception) -> Response:
    return web.error_response(cast(errors.ServiceError, exc), oauth=request.url.path.startswith(web.OAUTH_PREFIX))


async def _http_error(request: Request, exc: Exception) -> Response:
    exc = cast(HTTPException, exc)
    mapped: errors.ServiceError
    if exc.status_code == 404:
        mapped = errors.NotFound()
    elif exc.status_code == 405:
        mapped = errors.MethodNotAllowed()
    else:
        mapped = errors.ServiceError(str(exc.detail))
        mapped.status_code = exc.status_code
    response = web.error_response(mapped)
    response.headers.update(exc.headers or {})
    return response


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("database unavailable: %s", type(exc).__name__)
    return web.error_response(errors.DatabaseUnavailable())


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return web.error_response(errors.InternalError())


def main() -> Starlette:
    """uvicorn factory: ``uvicorn --factory service.app:main``."""
    return create_app(Settings.from_environ(os.environ))
