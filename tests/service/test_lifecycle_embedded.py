"""`./scripts/serve`'s embedded default: no SMTP, each mail a file whose path is logged, links that open pages."""

from __future__ import annotations

import email
import email.policy
import logging
import re
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from devtools.polling import wait_for
from service.app import create_app
from service.config import Settings
from tests.service.conftest import BASE, PASSWORD, Account, bearer, login, register
from tests.service.mailbox import text_of

pytestmark = pytest.mark.anyio
API = "/api/v1/auth"


def mail_files(settings: Settings) -> list[Path]:
    folder = settings.data_dir / "mail"
    return sorted(folder.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns) if folder.exists() else []


def read(path: Path) -> EmailMessage:
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)  # type: ignore[return-value,unused-ignore]


async def next_mail(settings: Settings, count: int) -> EmailMessage:
    async def written() -> bool:
        return len(mail_files(settings)) >= count

    await wait_for(written, limit=10, interval=0.02)
    return read(mail_files(settings)[count - 1])


def link_in(message: EmailMessage, page: str) -> tuple[str, str]:
    found = re.search(r"(http://127\.0\.0\.1:8000(/account/[a-z-]+)#token=([A-Za-z0-9_-]+))", text_of(message))
    assert found and found.group(2) == page, text_of(message)
    return found.group(2), found.group(3)


async def test_a_person_can_verify_reset_change_and_end_sessions_from_mail_files(
    sqlite_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="service.mail")
    async with LifespanManager(create_app(sqlite_settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            alice = await register(client)
            verification = await next_mail(sqlite_settings, 1)
            assert verification["To"] == alice.email
            page, token = link_in(verification, "/account/verify-email")
            opened = await client.get(page)  # what the browser opens; the token stays in the fragment
            assert opened.status_code == 200 and "text/html" in opened.headers["content-type"]
            assert "default-src 'none'" in opened.headers["content-security-policy"]
            assert (await client.post(f"{API}/verify-email", json={"token": token})).status_code == 204

            assert (await client.post(f"{API}/password-reset", json={"email": alice.email})).status_code == 202
            page, token = link_in(await next_mail(sqlite_settings, 2), "/account/reset-password")
            assert (await client.get(page)).status_code == 200
            reset = {"token": token, "new_password": "reset passphrase"}
            assert (await client.post(f"{API}/password-reset/confirm", json=reset)).status_code == 204

            alice = Account(alice.username, alice.email, "reset passphrase", alice.id)
            mine, other = await login(client, alice), await login(client, alice)
            change = {"current_password": "reset passphrase", "new_password": "changed passphrase"}
            changed = await client.post(f"{API}/password", json=change, headers=bearer(mine["access_token"]))
            assert changed.status_code == 204
            listed = (await client.get(f"{API}/sessions", headers=bearer(mine["access_token"]))).json()["sessions"]
            assert [s["current"] for s in listed] == [True]  # the other one ended with the change
            assert (await client.get(f"{API}/me", headers=bearer(other["access_token"]))).status_code == 401
            ended = await client.delete(f"{API}/sessions/{listed[0]['id']}", headers=bearer(mine["access_token"]))
            assert ended.status_code == 204
            assert (await client.get(f"{API}/me", headers=bearer(mine["access_token"]))).status_code == 401
            old = await client.post(f"{API}/token", data={"username": "alice", "password": PASSWORD})
            assert old.status_code == 401

    paths = [record.getMessage() for record in caplog.records if "mail written to" in record.getMessage()]
    assert [p.split()[-1] for p in paths] == [str(p) for p in mail_files(sqlite_settings)]
    assert token not in caplog.text  # the path is logged, never the link
    assert all(p.stat().st_mode & 0o077 == 0 for p in mail_files(sqlite_settings))  # it holds a live link
