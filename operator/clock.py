"""The operator's clock. The handlers call ``clock.now()`` and nothing else for the time, so the rotation
e2e tests can move time forward by replacing this one function (everything below it takes ``now``)."""

from __future__ import annotations

import datetime as dt


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
