"""JSON lines on stderr: one object per record, with the trace, span and request ids of the moment.

    {"timestamp": "2026-06-01T12:00:00.123Z", "level": "INFO", "logger": "service.access",
     "message": "POST /api/v1/auth/token 200", "trace_id": "…", "span_id": "…", "request_id": "…", …}

Fields passed with ``extra=`` (the slow-query log's ``duration_ms`` and ``statement``, the access
log's ``http.*``) become fields of the object. The ids are read when the record is formatted, which
for the stream handler here is when it is logged, in the request's context.

Nothing secret is logged on purpose; as a second line of defence the formatter masks anything
shaped like a bearer credential, a JWT or a bcrypt hash. And SQLAlchemy's loggers are pinned at
WARNING: at INFO/DEBUG they print statements and result rows, and a row can hold a password hash.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import logging.config
import re
from typing import Any

from opentelemetry import trace

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# Loggers that print data at INFO/DEBUG: kept at WARNING whatever AUTH_LOG_LEVEL says.
QUIET = {"sqlalchemy": "WARNING", "asyncpg": "WARNING", "multipart": "WARNING", "python_multipart": "WARNING"}
# Loggers that chatter at INFO (Alembic: a line per plugin and per dialect setting): WARNING unless DEBUG.
# The migrations log what they apply themselves (alembic/env.py).
CHATTY = {"alembic": "WARNING"}

_SECRET = re.compile(
    r"(?P<scheme>\bbearer\s+)[A-Za-z0-9._~+/=-]{16,}"  # Authorization header values
    r"|(?P<basic>\bbasic\s+)[A-Za-z0-9+/]{16,}={0,2}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"  # JWTs
    r"|\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}",  # bcrypt hashes
    re.IGNORECASE,
)
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName", "color_message"}


def redact(text: str) -> str:
    return _SECRET.sub(lambda m: (m.group("scheme") or m.group("basic") or "") + "[REDACTED]", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "process.pid": record.process,  # which uvicorn worker
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"] = format(context.trace_id, "032x")
            entry["span_id"] = format(context.span_id, "016x")
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def config(level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` document: for ``setup`` and for uvicorn's ``log_config``
    (uvicorn applies it in every worker process)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            **{name: {"level": quiet} for name, quiet in QUIET.items()},
            **{name: {"level": quiet} for name, quiet in CHATTY.items() if level != "DEBUG"},
            # uvicorn's own handlers would print plain text; its records go to the root as JSON
            "uvicorn": {"handlers": [], "propagate": True, "level": level},
            "uvicorn.error": {"handlers": [], "propagate": True, "level": level},
            # service.access replaces uvicorn's access log: it has the route, duration and ids
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "WARNING"},
        },
    }


def setup(level: str) -> None:
    logging.config.dictConfig(config(level))
