"""Traces from the standard ``OTEL_*`` variables, and the middleware every request passes through.

Tracing is on when ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``) or, left
unset, when an OTLP endpoint is configured; ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``
turn it off. Off means no SDK provider and no instrumentation installed: a request then costs one
small middleware (request id, access log, latency histogram) and the ``password.*`` spans are the
API's no-op spans. Sampling, resource attributes, endpoint, headers and batching are the SDK's own
``OTEL_*`` variables; ``docs/observability.md`` lists them.

Process-wide and idempotent: OpenTelemetry allows one global tracer provider, so the first
``setup()``/``enable()`` decides and later calls (several apps in one test process) reuse it.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.semconv.attributes.http_attributes import HTTP_ROUTE
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import __version__, logs, metrics

# Headers never recorded, whatever OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_* asks for.
SECRET_HEADERS = ["authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"]
# Kubernetes probes and Prometheus scrapes: a span every few seconds that answers no question.
DEFAULT_EXCLUDED_URLS = "/health/,/metrics$"
# Stable HTTP and database semantic conventions (http.request.method, db.query.text, ...), unless
# the operator chose otherwise with the same variable.
SEMCONV_OPT_IN = "http,database"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
QUIET_PATHS = ("/health/", "/metrics")  # successful ones are logged at DEBUG: one every few seconds

access_log = logging.getLogger("service.access")
_provider: TracerProvider | None = None
_configured = False


class TelemetryConfigError(ValueError):
    """An ``OTEL_*`` value this service cannot honour; the message names the variable."""


def exporters(environ: Mapping[str, str]) -> list[str]:
    """The trace exporters the ``OTEL_*`` variables ask for; empty means tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not names:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        return ["otlp"] if endpoint else []
    chosen = [name.strip() for name in names.split(",") if name.strip() and name.strip() != "none"]
    for name in chosen:
        if name not in ("otlp", "console"):
            raise TelemetryConfigError(f"OTEL_TRACES_EXPORTER: {name!r} is not one of otlp, console, none")
    return chosen


def setup(environ: Mapping[str, str] = os.environ) -> TracerProvider | None:
    """Once per process: a tracer provider from the ``OTEL_*`` variables, or None when tracing is off."""
    global _configured
    if not _configured:
        _configured = True
        chosen = exporters(environ)
        if chosen:
            provider = TracerProvider(resource=_resource())
            for name in chosen:
                if name == "console":  # the developer's terminal: each span as it ends
                    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
                else:
                    provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(environ)))
            enable(provider)
    return _provider


def enable(provider: TracerProvider) -> TracerProvider:
    """Turn tracing on for this process; returns the provider in use (the first one enabled)."""
    global _provider, _configured
    _configured = True
    if _provider is None:
        os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", SEMCONV_OPT_IN)  # read by the instrumentations
        trace.set_tracer_provider(provider)
        current = trace.get_tracer_provider()  # someone else's (opentelemetry-instrument) wins
        _provider = current if isinstance(current, TracerProvider) else provider
        _instrument_redis(_provider)
    return _provider


def instrument(app: Starlette) -> None:
    """Wrap the whole middleware stack, Starlette's error handler included, so a 500 is measured,
    logged and traced like any other answer (the way opentelemetry-instrumentation-starlette does)."""
    provider = setup()
    build = app.build_middleware_stack

    def build_observed() -> ASGIApp:
        observed: ASGIApp = RequestTelemetry(build())
        if provider is not None:
            from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
            from opentelemetry.util.http import get_custom_headers

            excluded = os.environ.get("OTEL_PYTHON_ASGI_EXCLUDED_URLS", os.environ.get("OTEL_PYTHON_EXCLUDED_URLS"))
            sanitize = get_custom_headers("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS")
            observed = OpenTelemetryMiddleware(
                observed,
                excluded_urls=DEFAULT_EXCLUDED_URLS if excluded is None else excluded,
                tracer_provider=provider,
                exclude_spans=["receive", "send"],  # one span per ASGI message is noise here
                http_capture_headers_sanitize_fields=[*sanitize, *SECRET_HEADERS],
                server_request_hook=_redact_query,
            )
        return observed

    app.build_middleware_stack = build_observed  # type: ignore[method-assign]


def trace_engine(engine: AsyncEngine) -> None:
    """Database spans for this engine (the maintained SQLAlchemy instrumentation), when tracing is on.

    Statement text only: the instrumentation records no parameters, and the engine hides them
    from its own errors and logs (``hide_parameters=True``).
    """
    provider = setup()
    if provider is None:
        return
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.instrumentation.sqlalchemy.version import __version__ as sqlalchemy_instrumentation
    from opentelemetry.metrics import get_meter

    # EngineTracer is what SQLAlchemyInstrumentor().instrument(engine=...) builds; built directly
    # because the instrumentor instruments once per process and every app here has its own engine.
    tracer = trace.get_tracer("opentelemetry.instrumentation.sqlalchemy", sqlalchemy_instrumentation, provider)
    usage = get_meter("opentelemetry.instrumentation.sqlalchemy").create_up_down_counter(
        "db.client.connections.usage"
    )
    EngineTracer(tracer, engine.sync_engine, usage)  # type: ignore[no-untyped-call]


def _instrument_redis(provider: TracerProvider) -> None:
    try:
        from opentelemetry.instrumentation.redis import RedisInstrumentor
    except ImportError:  # redis (or its instrumentation) not installed: nothing to trace
        return
    instrumentor = RedisInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        # every client, sync and asyncio; commands are recorded as "SET ? ?", never their arguments
        instrumentor.instrument(tracer_provider=provider)


def _resource() -> Resource:
    resource = Resource.create({SERVICE_VERSION: __version__})  # plus OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "authsvc"}))
    return resource


def _otlp_exporter(environ: Mapping[str, str]) -> SpanExporter:
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    protocol = protocol or "http/protobuf"
    if protocol.strip() != "http/protobuf":
        raise TelemetryConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported; use http/protobuf "
            "(the collector's OTLP/HTTP port, usually 4318)"
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, timeout, compression: OTEL_EXPORTER_OTLP_*


def _redact_query(span: trace.Span, scope: dict[str, Any]) -> None:
    # The API takes no query parameters; a client that puts a token in the URL still must not
    # get it recorded. Names are kept, values dropped.
    query = scope.get("query_string", b"")
    if query and span.is_recording():
        names = [part.split(b"=", 1)[0].decode("latin-1") for part in query.split(b"&") if part]
        span.set_attribute("url.query", "&".join(f"{name}=REDACTED" for name in names))


class RequestTelemetry:
    """Per request: a request id, the latency histogram, the server span's route, an access-log line.

    Sits inside the OpenTelemetry middleware (its span is current here, so the access line carries
    its trace id) and outside Starlette's error handling (a 500 is seen with its status).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        token = logs.REQUEST_ID.set(request_id)
        server_span = trace.get_current_span()  # the OpenTelemetry middleware's, when tracing is on
        method = scope["method"] if scope["method"] in KNOWN_METHODS else "_OTHER"
        status = 500  # unless the app answers: an exception escaped past every handler

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                if server_span.is_recording():  # before the body: the span ends with the last chunk
                    _name_span(server_span, method, scope)
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            elapsed = time.perf_counter() - started
            route = _route(scope)
            metrics.HTTP_DURATION.labels(method, route or "unmatched", str(status)).observe(elapsed)
            quiet = status < 400 and scope["path"].startswith(QUIET_PATHS)  # probes and scrapes
            access_log.log(
                logging.DEBUG if quiet else logging.INFO,
                "%s %s %d",
                method,
                scope["path"],
                status,
                extra={
                    "http.request.method": method,
                    "url.path": scope["path"],
                    "http.route": route,
                    "http.response.status_code": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "client.address": scope["client"][0] if scope.get("client") else None,
                },
            )
            logs.REQUEST_ID.reset(token)


def _route(scope: Scope) -> str | None:
    return getattr(scope.get("route"), "path", None)  # the template Starlette's router matched


def _name_span(span: trace.Span, method: str, scope: Scope) -> None:
    route = _route(scope)
    span.update_name(f"{method} {route}" if route else method)  # semantic conventions' server span name
    if route:
        span.set_attribute(HTTP_ROUTE, route)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = str(value.decode("latin-1"))
            if REQUEST_ID.fullmatch(candidate):
                return candidate  # the ingress's id: one id from the edge to our log lines
            break
    return uuid.uuid4().hex
