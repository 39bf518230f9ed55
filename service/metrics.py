"""Every Prometheus series the service exports, and ``GET /metrics``.

prometheus-client rather than OpenTelemetry's Prometheus exporter: it has a multiprocess mode, so
``authsvc serve --workers N`` answers one scrape with the sum over its N processes. ``serve`` turns
it on for N > 1 by pointing ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before uvicorn
starts its workers; each process then writes its values to memory-mapped files there and
whichever worker answers the scrape adds them up. With one worker (the default in
Kubernetes, where pods are the unit of scale) the normal in-memory registry is used, which also
exports the process and GC collectors that multiprocess mode cannot. (prometheus-client picks its
mode when it is first imported, which is why ``cli.serve`` prepares the directory without importing
this module.)

Labels are bounded by construction: route templates (never raw paths), a fixed set of methods,
limit and operation names from the code. No label ever carries a username, address or token.
"""

from __future__ import annotations

import atexit
import os
import time
from typing import cast

import anyio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, Pool, PoolProxiedConnection
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: half the output, and Prometheus does not need them

# -- HTTP: the OpenTelemetry semantic-convention metric, in Prometheus' naming -------------------------
# http.server.request.duration (s) with http.request.method, http.route, http.response.status_code
HTTP_DURATION = Histogram(
    "http_server_request_duration_seconds",
    "Duration of HTTP server requests, by route template, method and status.",
    ["http_request_method", "http_route", "http_response_status_code"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0),
)

# -- passwords: the bounded bcrypt pool -----------------------------------------------------------------
_HASH_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0, 5.0)
HASH_DURATION = Histogram(
    "auth_password_hash_duration_seconds",
    "Time bcrypt ran in a worker thread, by operation (hash, verify).",
    ["operation"],
    buckets=_HASH_BUCKETS,
)
HASH_QUEUE_WAIT = Histogram(
    "auth_password_queue_wait_seconds",
    "Time a hash job waited for a free worker thread, by operation.",
    ["operation"],
    buckets=(0.0005, *_HASH_BUCKETS),
)
HASH_QUEUE_DEPTH = Gauge(
    "auth_password_queue_depth", "Hash jobs waiting for a worker thread.", multiprocess_mode="livesum"
)
HASH_IN_FLIGHT = Gauge(
    "auth_password_in_flight", "Hash jobs admitted: running plus waiting.", multiprocess_mode="livesum"
)
HASH_WORKERS = Gauge("auth_password_workers", "bcrypt worker threads.", multiprocess_mode="livesum")
ADMISSION_REJECTED = Counter(
    "auth_password_admission_rejected",
    "Requests refused with 503 because the hash queue was full (admission control).",
)

# -- rejections and security events ---------------------------------------------------------------------
RATE_LIMITED = Counter(
    "auth_rate_limited", "Requests refused with 429, by the limit that refused them.", ["limit"]
)
REFRESH_REUSE = Counter(
    "auth_refresh_reuse_detected", "Refresh tokens presented again after rotation; each revoked its session."
)

# -- Redis: cache and fallbacks -----------------------------------------------------------------------
USER_CACHE = Counter(
    "auth_user_cache_requests", "Lookups of the session cache behind `me` and introspection, by result.", ["result"]
)
for _result in ("hit", "miss"):
    USER_CACHE.labels(_result)
REDIS_FALLBACK = Counter(
    "auth_redis_fallback",
    "Operations answered without Redis (memory limits, cache bypassed, database asked), by operation.",
    ["operation"],
)

# -- database pools -------------------------------------------------------------------------------------
POOL_SIZE = Gauge("auth_db_pool_size", "Configured pool size.", ["pool"], multiprocess_mode="livesum")
POOL_CHECKED_OUT = Gauge(
    "auth_db_pool_checked_out", "Connections in use by requests.", ["pool"], multiprocess_mode="livesum"
)
POOL_IDLE = Gauge("auth_db_pool_idle", "Connections open and idle in the pool.", ["pool"], multiprocess_mode="livesum")
POOL_OVERFLOW = Gauge(
    "auth_db_pool_overflow", "Connections open beyond the pool size (max_overflow).", ["pool"],
    multiprocess_mode="livesum",
)
POOL_WAITING = Gauge(
    "auth_db_pool_waiting", "Checkouts waiting for a connection.", ["pool"], multiprocess_mode="livesum"
)
POOL_ACQUIRE = Histogram(
    "auth_db_pool_acquire_seconds",
    "Time to get a connection from the pool, including opening a new one.",
    ["pool"],
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
POOL_TIMEOUTS = Counter(
    "auth_db_pool_timeouts", "Checkouts that gave up after AUTH_DB_POOL_TIMEOUT (answered 503).", ["pool"]
)

# -- mail: the outbox and its sender (service/mail.py) -------------------------------------------------
MAIL_QUEUED = Counter("auth_mail_queued", "Mails committed to the outbox, by kind.", ["kind"])
MAIL_SENT = Counter("auth_mail_sent", "Mails handed to the SMTP server (or written to a file), by kind.", ["kind"])
MAIL_FAILED = Counter("auth_mail_failed", "Failed send attempts (each is retried until the last), by kind.", ["kind"])
MAIL_DEAD = Counter("auth_mail_dead", "Mails given up after AUTH_MAIL_MAX_ATTEMPTS attempts, by kind.", ["kind"])
MAIL_SEND_DURATION = Histogram(
    "auth_mail_send_duration_seconds",
    "Time one send attempt took (connect, TLS, login, transfer), failures included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)

# -- signing keys: AUTH_KEYS_DIR followed without a restart (service/keys.py) --------------------------
KEYS_RELOADS = Counter(
    "auth_keys_reloads",
    "Changes of AUTH_KEYS_DIR seen, by result: loaded, or refused (it did not load; the last good keys stay).",
    ["result"],
)
for _result in ("loaded", "refused"):
    KEYS_RELOADS.labels(_result)
KEYS_DEGRADED = Gauge(
    "auth_keys_degraded",
    "1 while AUTH_KEYS_DIR holds a state that did not load and the last good keys are in use.",
    multiprocess_mode="livemax",
)

# -- audit log (docs/admin.md): admin requests are http_server_request_duration_seconds{http_route=~"/admin/.*"} --
AUDIT_EVENTS = Counter("auth_audit_events", "Audit events stored, by type.", ["type"])

# -- housekeeping ---------------------------------------------------------------------------------------
CLEANUP_DELETED = Counter("auth_cleanup_rows_deleted", "Rows deleted by `authsvc cleanup`, by table.", ["table"])


def render() -> bytes:
    if os.environ.get(MULTIPROC_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # every worker's files
        return generate_latest(registry)
    return generate_latest(REGISTRY)


async def endpoint(request: Request) -> Response:
    # a thread: in multiprocess mode rendering reads one file per metric type and process
    return Response(await anyio.to_thread.run_sync(render), media_type=CONTENT_TYPE_LATEST)


ROUTE = Route("/metrics", endpoint, methods=["GET"], include_in_schema=False)


if os.environ.get(MULTIPROC_DIR):
    # A worker that exits cleanly takes its live gauges with it (a killed one leaves them until the
    # next start wipes the directory).
    atexit.register(multiprocess.mark_process_dead, os.getpid())


class TimedPool(AsyncAdaptedQueuePool):
    """The async engine's queue pool, timing each checkout for ``auth_db_pool_acquire_seconds``."""

    label = "primary"
    # SQLAlchemy names a pool's logger after its class: keep ours with SQLAlchemy's (quiet) loggers
    _sqla_logger_namespace = "sqlalchemy.pool.impl.AsyncAdaptedQueuePool"

    def connect(self) -> PoolProxiedConnection:
        waiting = POOL_WAITING.labels(self.label)
        waiting.inc()
        begun = time.perf_counter()
        try:
            return super().connect()
        except sa_exc.TimeoutError:
            POOL_TIMEOUTS.labels(self.label).inc()
            raise
        finally:
            waiting.dec()
            POOL_ACQUIRE.labels(self.label).observe(time.perf_counter() - begun)
            publish_pool(self)

    def _return_conn(self, record: ConnectionPoolEntry) -> None:
        # the "checkin" event fires before the connection is back: read the pool after it is
        super()._return_conn(record)
        publish_pool(self)


_pool_classes: dict[str, type[TimedPool]] = {}


def pool_class(label: str) -> type[TimedPool]:
    """The pool class for ``create_async_engine(poolclass=...)``, labelled ``pool=label``.

    A subclass per label rather than an attribute: ``engine.dispose()`` recreates the pool from its
    class, and the label must survive that.
    """
    if label not in _pool_classes:
        _pool_classes[label] = cast(type[TimedPool], type(f"TimedPool_{label}", (TimedPool,), {"label": label}))
    return _pool_classes[label]


def publish_pool(pool: Pool) -> None:
    if isinstance(pool, TimedPool):
        POOL_SIZE.labels(pool.label).set(pool.size())
        POOL_CHECKED_OUT.labels(pool.label).set(pool.checkedout())
        POOL_IDLE.labels(pool.label).set(pool.checkedin())
        POOL_OVERFLOW.labels(pool.label).set(max(0, pool.overflow()))


def watch_pool(engine: AsyncEngine) -> None:
    """The pool gauges from the start; ``TimedPool`` then sets them on every checkout and return."""
    publish_pool(engine.sync_engine.pool)
