"""`authsvc users …` and `authsvc audit tail` on the database directly (break-glass), as an operator runs them:
the same actions as the admin API, the same audit rows with the actor `cli`, and the cache told at once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from typing import Any

import pytest

from service.config import Settings
from tests.service.conftest import PASSWORD, Running, environ, login, register
from tests.service.test_oauth_serve import authsvc
from tests.service.test_revocation import me, warm
from tests.stack import Stack

pytestmark = pytest.mark.anyio


async def test_users_are_found_disabled_enabled_and_deleted_from_the_command_line(
    app: Running, settings: Settings, stack: Stack
) -> None:
    alice = await register(app.client)
    await register(app.client, "bob")
    pair = await login(app.client, alice)
    await warm(app, pair)

    status, out, err = await authsvc(stack, settings, "users", "list", "--q", "ALI")
    assert status == 0, err
    assert [user["username"] for user in json.loads(out)] == ["alice"]
    status, out, _ = await authsvc(stack, settings, "users", "list", "--active", "true")
    assert [user["username"] for user in json.loads(out)] == ["alice", "bob"]
    status, out, _ = await authsvc(stack, settings, "users", "show", "ALICE")
    shown = json.loads(out)
    assert (shown["id"], len(shown["sessions"])) == (alice.id, 1)

    status, out, err = await authsvc(stack, settings, "users", "disable", "alice")
    assert status == 0 and json.loads(out)["is_active"] is False, err
    assert "warning" not in err
    assert await me(app, pair) == 401  # the running service refuses at once: the CLI wrote the marks
    refused = await app.client.post("/api/v1/auth/token", data={"username": "alice", "password": PASSWORD})
    assert refused.status_code == 401
    status, out, _ = await authsvc(stack, settings, "users", "enable", alice.id)
    assert status == 0 and json.loads(out)["is_active"] is True
    await login(app.client, alice)

    status, _, err = await authsvc(stack, settings, "users", "delete", "alice")
    assert status == 2 and "--yes" in err
    status, _, err = await authsvc(stack, settings, "users", "delete", "alice@example.com", "--yes")
    assert status == 0, err
    await register(app.client)  # the name is free again
    status, _, err = await authsvc(stack, settings, "users", "show", "nobody")
    assert (status, err.strip()) == (1, "authsvc: no user nobody")

    status, out, err = await authsvc(stack, settings, "audit", "tail", "-n", "4")
    assert status == 0, err
    tail = [json.loads(line) for line in out.splitlines()]
    # ... login.succeeded, user.disabled (cli), then:
    assert [event["type"] for event in tail] == ["login.failed", "user.enabled", "login.succeeded", "user.deleted"]
    cli = [event for event in tail if event["actor"]["type"] == "cli"]
    assert {event["type"] for event in cli} == {"user.enabled", "user.deleted"}
    assert all(event["user_id"] == alice.id and event["client_ip"] is None for event in cli)
    status, out, _ = await authsvc(stack, settings, "audit", "tail", "--user-id", alice.id, "--type", "user.disabled")
    (disabled,) = [json.loads(line) for line in out.splitlines()]
    assert disabled["actor"] == {"type": "cli", "id": None} and disabled["details"] == {"sessions_ended": 1}
    status, _, err = await authsvc(stack, settings, "audit", "tail", "--type", "user.teleported")
    assert status == 2 and "--type must be one of" in err


async def test_audit_tail_follows_new_events(app: Running, settings: Settings, stack: Stack) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROMETHEUS_", "AUTH_"))}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", "audit", "tail", "--follow", "--type", "login.succeeded",
        env={**base, **environ(stack, settings.keys_dir), "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        alice = await register(app.client)
        await login(app.client, alice)  # before the tail has looked, or after: shown either way
        async with asyncio.timeout(30):
            line = await process.stdout.readline()
        event: dict[str, Any] = json.loads(line)
        assert (event["type"], event["user_id"]) == ("login.succeeded", alice.id)
        bad = await app.client.post("/api/v1/auth/token", data={"username": "alice", "password": "wrong!!!"})
        assert bad.status_code == 401  # filtered out by --type
        await login(app.client, alice)
        async with asyncio.timeout(30):
            second = json.loads(await process.stdout.readline())
        assert second["type"] == "login.succeeded" and second["id"] > event["id"]
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await process.wait() == 0
