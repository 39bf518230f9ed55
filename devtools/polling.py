"""Waiting for a condition with a deadline, never for a fixed time."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


async def wait_for(condition: Callable[[], bool | Awaitable[bool]], limit: float = 5.0,
                   interval: float = 0.005) -> None:
    """Returns once `condition()` is true (awaited when it returns an awaitable), checking every `interval`
    seconds; raises TimeoutError after `limit` seconds."""
    async with asyncio.timeout(limit):
        while True:
            result = condition()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await asyncio.sleep(interval)
