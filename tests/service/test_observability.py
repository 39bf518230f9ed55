"""Traces and logs: where a login spends its time, ids that tie log lines to traces, and no secrets anywhere."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import select, text

from devtools.stack import Stack
from service import logs, telemetry, tokens
from service.app import create_app
from service.config import Settings
from service.db.models import User
from tests.service.conftest import BASE, PASSWORD, Running, bearer, login, make_settings, register

pytestmark = pytest.mark.anyio
TOKEN = "/api/v1/auth/token"


class Recorder(SimpleSpanProcessor):
    """Keeps spans only while a test that asked for them runs: tracing stays on for the process."""

    active = False

    def on_end(self, span: ReadableSpan) -> None:
        if self.active:
            super().on_end(span)


@pytest.fixture(scope="session")
def recorder() -> tuple[Recorder, InMemorySpanExporter]:
    # OpenTelemetry has one global provider per process: whichever is on gets our recorder too
    provider = telemetry.enable(TracerProvider())
    memory = InMemorySpanExporter()
    processor = Recorder(memory)
    provider.add_span_processor(processor)
    return processor, memory


@pytest.fixture
def spans(recorder: tuple[Recorder, InMemorySpanExporter]) -> Iterator[InMemorySpanExporter]:
    """Spans ended during the test; apps started by the test are traced (tracing is on before they start)."""
    processor, memory = recorder
    memory.clear()
    processor.active = True
    try:
        yield memory
    finally:
        processor.active = False
        memory.clear()


@contextlib.contextmanager
def json_logs(level: int = logging.DEBUG) -> Iterator[io.StringIO]:
    """Every record as the service writes it (JSON lines, production's quiet loggers), at ``level``."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    saved = {name: logging.getLogger(name).level for name in logs.QUIET}
    root_level = root.level
    root.addHandler(handler)
    root.setLevel(level)
    for name, quiet in logs.QUIET.items():
        logging.getLogger(name).setLevel(quiet)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(root_level)
        for name, saved_level in saved.items():
            logging.getLogger(name).setLevel(saved_level)


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]  # each one a JSON object


def ancestors(span: ReadableSpan, everything: list[ReadableSpan]) -> list[ReadableSpan]:
    by_id = {s.context.span_id: s for s in everything}
    chain = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        chain.append(span)
    return chain


async def test_a_login_trace_shows_queue_wait_and_bcrypt_time_under_the_request_span(
    spans: InMemorySpanExporter, app: Running
) -> None:
    await register(app.client)
    spans.clear()
    response = await app.client.post(TOKEN, data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200
    finished = list(spans.get_finished_spans())

    [server] = [s for s in finished if s.kind == SpanKind.SERVER]
    assert server.name == f"POST {TOKEN}"  # "{method} {http.route}", the semantic conventions' name
    assert server.attributes is not None
    assert server.attributes["http.route"] == TOKEN
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.response.status_code"] == 200

    [verify] = [s for s in finished if s.name == "password.verify"]
    assert verify.parent is not None and verify.parent.span_id == server.context.span_id
    assert verify.context.trace_id == server.context.trace_id
    attributes = verify.attributes or {}
    assert attributes["password.bcrypt.cost"] == 4
    assert attributes["password.queue.depth"] == 0
    wait, work = attributes["password.queue.wait_time"], attributes["password.bcrypt.duration"]
    assert isinstance(wait, float) and isinstance(work, float)
    assert wait >= 0 and work > 0
    assert verify.start_time is not None and verify.end_time is not None
    assert wait + work <= (verify.end_time - verify.start_time) / 1e9  # both inside the span

    every_query = [s for s in finished if s.kind == SpanKind.CLIENT and (s.attributes or {}).get("db.system.name")]
    assert all(s.parent is not None for s in every_query), "no query lost its context"
    # the registration's mail may be going out meanwhile, in a trace of its own (mail.deliver)
    queries = [s for s in every_query if s.context.trace_id == server.context.trace_id]
    assert queries, "the SQLAlchemy instrumentation records the login's queries"
    for query in queries:
        assert server in ancestors(query, finished)
        assert (query.attributes or {})["db.system.name"] == "postgresql"
        assert "alice" not in str((query.attributes or {}).get("db.query.text"))  # placeholders, no values
    # the read before the hash and the write after it: the connection is not held while hashing
    assert any(q.end_time <= verify.start_time for q in queries if q.end_time and verify.start_time)
    assert any(q.start_time >= verify.end_time for q in queries if q.start_time and verify.end_time)

    [signing] = [s for s in finished if s.name == "token.sign"]
    assert (signing.attributes or {})["token.algorithm"] == "EdDSA"
    assert signing.parent is not None and signing.parent.span_id == server.context.span_id


async def test_the_rate_limit_check_has_its_own_span_before_any_hash(
    spans: InMemorySpanExporter, running_app: Any, stack: Stack, keys_dir: Path
) -> None:
    settings = make_settings(stack, keys_dir, AUTH_RATE_LIMIT_ENABLED="true")
    async with running_app(settings) as app:
        await register(app.client)
        spans.clear()
        await app.client.post(TOKEN, data={"username": "alice", "password": PASSWORD})
    finished = sorted(spans.get_finished_spans(), key=lambda s: s.start_time or 0)
    checks = [s for s in finished if s.name == "ratelimit.check"]
    # token_user twice: the name as typed before the lookup, the account it found after it
    assert [(s.attributes or {})["ratelimit.name"] for s in checks] == ["ip", "token", "token_user", "token_user"]
    assert all((s.attributes or {})["ratelimit.allowed"] is True for s in checks)
    [verify] = [s for s in finished if s.name == "password.verify"]
    assert all((s.end_time or 0) <= (verify.start_time or 0) for s in checks)


async def test_register_traces_password_hash_with_the_configured_cost(
    spans: InMemorySpanExporter, app: Running
) -> None:
    await register(app.client)
    [hashed] = [s for s in spans.get_finished_spans() if s.name == "password.hash"]
    assert (hashed.attributes or {})["password.bcrypt.cost"] == 4
    assert (hashed.attributes or {})["password.bcrypt.duration"] > 0


async def test_a_shed_login_is_a_503_request_span_without_any_hash_span(
    spans: InMemorySpanExporter, running_app: Any, stack: Stack, keys_dir: Path
) -> None:
    async with running_app(make_settings(stack, keys_dir, AUTH_HASH_WORKERS="1", AUTH_HASH_QUEUE_SIZE="0")) as app:
        await register(app.client)
        app.resources.hasher.in_flight = 1  # the only worker is busy
        try:
            shed = await app.client.post(TOKEN, data={"username": "alice", "password": PASSWORD})
        finally:
            app.resources.hasher.in_flight = 0
    assert shed.status_code == 503
    finished = spans.get_finished_spans()
    assert [s for s in finished if s.name == "password.verify"] == []  # shed before any hash work
    [server] = [s for s in finished if s.kind == SpanKind.SERVER and s.name == f"POST {TOKEN}"]
    assert (server.attributes or {})["http.response.status_code"] == 503


async def test_the_access_log_line_carries_the_trace_span_and_request_ids(
    spans: InMemorySpanExporter, app: Running
) -> None:
    with json_logs(logging.INFO) as captured:
        response = await app.client.post(
            TOKEN, data={"username": "nobody", "password": "wrong password"}, headers={"X-Request-ID": "edge-42"}
        )
    assert response.status_code == 401
    assert response.headers["x-request-id"] == "edge-42"  # the ingress's id is kept and echoed
    [server] = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    [access] = [line for line in lines(captured) if line["logger"] == "service.access"]
    assert access["message"] == f"POST {TOKEN} 401"
    assert access["level"] == "INFO"
    assert access["trace_id"] == format(server.context.trace_id, "032x")
    assert access["span_id"] == format(server.context.span_id, "016x")
    assert access["request_id"] == "edge-42"
    assert access["http.route"] == TOKEN
    assert access["http.response.status_code"] == 401
    assert access["duration_ms"] > 0
    assert access["timestamp"].endswith("Z")


async def test_query_string_values_never_reach_the_server_span(spans: InMemorySpanExporter, app: Running) -> None:
    await app.client.get("/", params={"access_token": "leaked-by-a-careless-client", "x": "1"})
    [server] = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert (server.attributes or {})["url.query"] == "access_token=REDACTED&x=REDACTED"
    assert "leaked-by-a-careless-client" not in server.to_json()


async def test_a_request_without_an_id_gets_one_and_a_malformed_one_is_replaced(app: Running) -> None:
    first = (await app.client.get("/")).headers["x-request-id"]
    second = (await app.client.get("/")).headers["x-request-id"]
    assert first != second and len(first) == 32
    forged = (await app.client.get("/", headers={"X-Request-ID": "a\tb{}" * 10})).headers["x-request-id"]
    assert len(forged) == 32 and "{" not in forged


async def test_the_slow_query_log_is_a_json_line_in_the_trace_that_ran_the_query(
    spans: InMemorySpanExporter, running_app: Any, stack: Stack, keys_dir: Path
) -> None:
    from opentelemetry import trace

    async with running_app(make_settings(stack, keys_dir, AUTH_DB_SLOW_QUERY_MS="20")) as app:
        with json_logs(logging.INFO) as captured, trace.get_tracer("test").start_as_current_span("job") as job:
            async with app.resources.sessions() as db:
                await db.execute(text("SELECT pg_sleep(0.03), :secret"), {"secret": "hunter2-digest"})
    [slow] = [line for line in lines(captured) if line["message"] == "slow query"]
    assert slow["logger"] == "service.database" and slow["level"] == "WARNING"
    assert slow["trace_id"] == format(job.get_span_context().trace_id, "032x")
    assert "pg_sleep" in slow["statement"] and slow["duration_ms"] >= 30
    assert "hunter2" not in captured.getvalue()


async def test_an_unhandled_error_is_logged_with_its_trace_and_answered_500(
    spans: InMemorySpanExporter, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.routes import meta

    monkeypatch.setattr(meta.openapi, "LINKS", None)  # the index iterates it: a TypeError, a bug
    async with LifespanManager(create_app(settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)  # as uvicorn: log, go on
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            with json_logs(logging.INFO) as captured:
                response = await client.get("/")
    assert response.status_code == 500
    [server] = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert (server.attributes or {})["http.response.status_code"] == 500
    records = lines(captured)
    [error] = [line for line in records if line["level"] == "ERROR"]
    assert error["trace_id"] == format(server.context.trace_id, "032x")
    assert "TypeError" in error["exception"] and error["request_id"]
    [access] = [line for line in records if line["logger"] == "service.access"]
    assert access["http.response.status_code"] == 500


async def test_no_password_token_or_hash_reaches_a_span_a_log_line_or_a_metric(
    spans: InMemorySpanExporter, running_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # even an operator asking for every header on the spans gets no credential
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", ".*")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", ".*")
    wrong = "wrong horse battery"
    with json_logs(logging.DEBUG) as captured:
        async with running_app() as app:
            client: httpx.AsyncClient = app.client
            account = await register(client)
            pair = await login(client, account)  # full login
            assert (await client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))).status_code == 200
            rotated = (await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})).json()
            form = {"grant_type": "refresh_token", "refresh_token": rotated["refresh_token"]}
            again = (await client.post(TOKEN, data=form)).json()  # the OAuth2 form refresh
            reused = await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
            assert reused.status_code == 401  # reuse detected: logged and counted, without the token
            failed = await client.post(TOKEN, data={"username": account.username, "password": wrong})
            assert failed.status_code == 401
            introspected = await client.post(
                "/api/v1/auth/introspect", data={"token": again["access_token"]},
                auth=("introspect", "introspection-secret"),
            )
            assert introspected.status_code == 200
            await client.post("/api/v1/auth/revoke", data={"token": again["refresh_token"]})
            scraped = (await client.get("/metrics")).text
            async with app.resources.sessions() as db:
                stored_hash = (await db.execute(select(User.password_hash))).scalar_one()
    exported = "\n".join(span.to_json() for span in spans.get_finished_spans())
    logged = captured.getvalue()

    issued = [pair, rotated, again]
    secrets = {
        "password": PASSWORD,
        "wrong password": wrong,
        "password hash": stored_hash,
        "password hash body": stored_hash[7:],
        "introspection secret": "introspection-secret",
    }
    for n, tokens_issued in enumerate(issued):
        access, refresh = tokens_issued["access_token"], tokens_issued["refresh_token"]
        secrets[f"access token {n}"] = access
        secrets[f"access token signature {n}"] = access.rsplit(".", 1)[1]
        secrets[f"refresh token {n}"] = refresh
        secrets[f"refresh digest {n}"] = tokens.digest(refresh).hex()
        secrets[f"refresh digest repr {n}"] = repr(tokens.digest(refresh))[2:-1]
    places = {"spans": exported, "logs": logged, "metrics": scraped}
    leaks = [(what, where) for what, secret in secrets.items() for where, text in places.items() if secret in text]
    assert leaks == []

    # and the scan looked at something real
    assert "password.verify" in exported and '"[REDACTED]"' in exported  # the Authorization header, captured
    assert '"db.system.name": "redis"' in exported and '"db.system.name": "postgresql"' in exported
    assert "auth_refresh_reuse_detected_total" in scraped
    assert all(json.loads(line) for line in logged.splitlines())
    assert "service.access" in logged and "POST /api/v1/auth/refresh 401" in logged


def test_the_formatter_masks_credentials_that_a_careless_message_might_carry() -> None:
    record = logging.makeLogRecord({
        "name": "x", "levelno": logging.INFO, "levelname": "INFO",
        "msg": "header Bearer eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJlc2lnbmF0dXJl and %s",
        "args": ("$2b$12$" + "a" * 53,),
    })
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["message"] == "header Bearer [REDACTED] and [REDACTED]"
    plain = logging.makeLogRecord({"msg": "basic configuration loaded; bearer token missing", "args": ()})
    assert json.loads(logs.JsonFormatter().format(plain))["message"] == plain.msg  # ordinary words kept


def test_tracing_is_chosen_by_the_standard_otel_variables() -> None:
    assert telemetry.exporters({}) == []  # off by default: nothing exported, nothing instrumented
    assert telemetry.exporters({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) == ["otlp"]
    assert telemetry.exporters({"OTEL_TRACES_EXPORTER": "console"}) == ["console"]
    assert telemetry.exporters({"OTEL_TRACES_EXPORTER": "otlp,console"}) == ["otlp", "console"]
    assert telemetry.exporters({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}) == []
    assert telemetry.exporters({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}) == []
    with pytest.raises(telemetry.TelemetryConfigError, match="OTEL_TRACES_EXPORTER"):
        telemetry.exporters({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(telemetry.TelemetryConfigError, match="http/protobuf"):
        telemetry._otlp_exporter({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
