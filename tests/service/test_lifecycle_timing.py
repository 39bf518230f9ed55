"""No account enumeration by timing: medians of interleaved requests, in random order within each pair.

Robust on a busy 2-core machine: the two kinds of request alternate (so load drifts hit both alike),
each pair runs in a random order, and medians are compared, not means.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from devtools.polling import wait_for
from devtools.stack import Stack
from tests.service.conftest import PASSWORD, mail_settings, register
from tests.service.mailbox import Mailbox

pytestmark = pytest.mark.anyio
API = "/api/v1/auth"


async def timed(client: httpx.AsyncClient, path: str, **kwargs: Any) -> tuple[float, httpx.Response]:
    begun = time.perf_counter()
    response = await client.post(path, **kwargs)
    return time.perf_counter() - begun, response


async def settled(app: Any) -> None:
    """Wait until the sender has nothing left to do: its work after an answer must not slow the next sample."""
    async def idle() -> bool:
        async with app.resources.sessions() as db:
            return not (await db.execute(text("SELECT 1 FROM mails WHERE status = 'queued' LIMIT 1"))).first()

    await wait_for(idle, limit=10, interval=0.02)


async def paired(
    app: Any, rounds: int, first: dict[str, Any], second: dict[str, Any], path: str
) -> tuple[list[float], list[float], set[tuple[int, str]], set[tuple[int, str]]]:
    times: tuple[list[float], list[float]] = ([], [])
    answers: tuple[set[tuple[int, str]], set[tuple[int, str]]] = (set(), set())
    rng = random.Random(13)
    for _ in range(rounds):
        order = [0, 1]
        rng.shuffle(order)
        for which in order:
            await settled(app)
            elapsed, response = await timed(app.client, path, **(first, second)[which])
            times[which].append(elapsed)
            answers[which].add((response.status_code, response.text))
    return times[0], times[1], answers[0], answers[1]


async def test_a_reset_request_for_a_known_address_takes_as_long_as_for_an_unknown_one(
    running_app: Any, stack: Stack, keys_dir: Path, mailbox: Mailbox
) -> None:
    async with running_app(mail_settings(stack, keys_dir, mailbox.url)) as app:
        alice = await register(app.client)
        await timed(app.client, f"{API}/password-reset", json={"email": "warm@example.com"})  # warm up
        known, unknown, known_answers, unknown_answers = await paired(
            app, 50, {"json": {"email": alice.email}}, {"json": {"email": "nobody@example.com"}},
            f"{API}/password-reset",
        )
    assert known_answers == unknown_answers and len(known_answers) == 1  # one body, one status: 202
    difference = abs(statistics.median(known) - statistics.median(unknown))
    # by construction the same statements and rows; looking the user up and writing the token in the request
    # made the known side ~17 ms slower on the test machine
    margin = 0.0015 + 0.15 * statistics.median(unknown)
    assert difference < margin, (statistics.median(known), statistics.median(unknown))


async def test_an_unverified_login_takes_as_long_as_a_wrong_password(
    running_app: Any, stack: Stack, keys_dir: Path, mailbox: Mailbox
) -> None:
    # cost 8 (~15 ms): refusing an unverified user before bcrypt would be plainly faster
    settings = mail_settings(stack, keys_dir, mailbox.url, AUTH_REQUIRE_VERIFIED_EMAIL="true", AUTH_BCRYPT_COST="8")
    async with running_app(settings) as app:
        await register(app.client)
        unverified, wrong, unverified_answers, wrong_answers = await paired(
            app, 40, {"data": {"username": "alice", "password": PASSWORD}},
            {"data": {"username": "alice", "password": "not the password"}}, f"{API}/token",
        )
        hash_time = app.resources.hasher.average_seconds
    assert {status for status, _ in unverified_answers} == {403}
    assert {status for status, _ in wrong_answers} == {401}
    difference = abs(statistics.median(unverified) - statistics.median(wrong))
    # refusing before bcrypt would make the difference a whole hash
    assert difference < 0.4 * hash_time, (statistics.median(unverified), statistics.median(wrong), hash_time)
