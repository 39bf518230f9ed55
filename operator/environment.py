"""The operator's own environment variables, read when the handler modules are imported (``kopf run -m``)."""

from __future__ import annotations

import os


def seconds(name: str, default: float) -> float:
    """A positive number of seconds; a bad value stops the operator at start, naming the variable."""
    raw = os.environ.get(name, "")
    try:
        value = float(raw) if raw.strip() else default
    except ValueError:
        raise SystemExit(f"{name}: expected a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise SystemExit(f"{name}: expected a positive number of seconds, got {raw!r}")
    return value


def text(name: str) -> str | None:
    return os.environ.get(name, "").strip() or None
