"""The application: routes, middleware, the lifespan that owns every resource, errors → HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator
from typing import cast

import anyio
from opentelemetry import trace
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from service import (
    audit,
    database,
    errors,
    keys,
    mail,
    metrics,
    migrations,
    policy,
    routes,
    startup,
    store,
    telemetry,
    web,
)
from service.cache import Cache
from service.config import Settings
from service.passwords import Hasher
from service.ratelimit import Limiter
from service.resources import Resources, State

log = logging.getLogger("service")


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        if settings.embedded:  # the laptop default sets itself up; production never runs DDL here
            await anyio.to_thread.run_sync(migrations.upgrade, settings)
            keys.ensure(settings.keys_dir)  # after the database: a failed start leaves no key behind
        keyring = keys.Keyring(settings.keys_dir, settings.signing_key_id)  # a folder that does not load stops here
        engine = database.create_engine(settings, settings.database_url)
        read_engine = (
            database.create_engine(settings, settings.database_read_url) if settings.database_read_url else None
        )
        hasher = Hasher(
            settings.bcrypt_cost,
            startup.hash_threads(settings, settings.processes),  # the workers share the container's CPUs
            settings.hash_queue_size,
            settings.hash_max_wait,
        )
        shared = store.create(settings.redis_url, settings.redis_timeout)
        cache = Cache(shared, settings.user_cache_ttl, settings.access_token_ttl)
        templates = mail.Templates(settings.mail_templates_dir)
        breach = policy.BreachCheck(settings)
        # the sender's own small pool (pool="mail" in the metrics): it never takes a connection a request is
        # waiting for, and a batch's marks never wait for one past the pool timeout
        mail_engine = database.create_engine(
            dataclasses.replace(settings, db_pool_size=2, db_max_overflow=mail.BATCH), settings.database_url,
            label="mail",
        )
        sender = mail.Sender(settings, database.sessionmaker(mail_engine), mail.transport(settings), templates)
        following: asyncio.Task[None] | None = None
        sessions = database.sessionmaker(engine)
        audit_log = audit.Log(sessions, audit.root_key(settings, keyring.current))
        try:
            await migrations.check(settings, engine)
            await hasher.start()
            await audit_log.start()
            res = Resources(
                settings=settings,
                engine=engine,
                sessions=sessions,
                reads=database.sessionmaker(read_engine) if read_engine else sessions,
                hasher=hasher,
                keyring=keyring,
                store=shared,
                limiter=Limiter(settings, shared),
                cache=cache,
                sender=sender,
                templates=templates,
                breach=breach,
                audit=audit_log,
            )
            # each worker process follows the keys folder on its own (a Secret the kubelet updates)
            following = asyncio.get_running_loop().create_task(
                keys.follow(keyring, settings.keys_reload_interval, res.use_keys)
            )
            # every replica sends: SKIP LOCKED leases keep them off each other's rows (docs/accounts.md)
            sender.start()
            yield {"resources": res}
        except migrations.SchemaOutOfDate as exc:
            log.error("%s", exc)
            raise
        finally:  # close in reverse order of creation
            if following is not None:
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await following
            await sender.stop()  # a round cut short leaves its rows leased; another sender takes them later
            await mail_engine.dispose()
            await breach.close()
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
            Middleware(web.BodyTimeout, timeout=settings.request_body_timeout),
            Middleware(web.LastResort, handler=_unexpected),  # what no handler below took
        ],
        exception_handlers={
            errors.ServiceError: _service_error,
            HTTPException: _http_error,
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


async def _unexpected(request: Request, exc: Exception) -> Response:
    """An outage of the database is a 503 to retry; anything else is a bug: a 500, logged once with its
    traceback and recorded on the request's span."""
    if database.unavailable(exc):
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, database.reason(exc))
        return web.error_response(errors.DatabaseUnavailable())
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    trace.get_current_span().record_exception(exc)
    return web.error_response(errors.InternalError())


def main() -> Starlette:
    """uvicorn factory: ``uvicorn --factory service.app:main``."""
    return create_app(Settings.from_environ(os.environ))
