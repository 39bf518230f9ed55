"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives, and helpers to read links."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import threading
import urllib.parse
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from devtools.stack import free_port

LINK = re.compile(r"https?://\S+?token=([A-Za-z0-9_%-]+)")


class Mailbox:
    """``start()`` / ``stop()`` may be called again: the server comes back on the same port."""

    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.credentials = credentials  # require SMTP AUTH with these
        self.port = free_port()
        self.messages: list[EmailMessage] = []
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._lock:
            self.messages.append(parsed)  # type: ignore[arg-type,unused-ignore]
        return "250 OK"

    def start(self) -> None:
        extra: dict[str, Any] = {}
        if self.credentials is not None:  # loopback only: AUTH without TLS is fine for the test
            extra = {"authenticator": self._authenticate, "auth_required": True, "auth_require_tls": False}
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, **extra)
        self._controller.start()

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == self.credentials
        return AuthResult(success=ok, handled=False)

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def received(self, to: str | None = None) -> list[EmailMessage]:
        with self._lock:
            return [m for m in self.messages if to is None or to.lower() in str(m["To"]).lower()]

    async def wait_for(self, count: int, to: str | None = None, limit: float = 10.0) -> list[EmailMessage]:
        async with asyncio.timeout(limit):
            while len(self.received(to)) < count:  # noqa: ASYNC110 - the sender runs in the app under test
                await asyncio.sleep(0.01)
        return self.received(to)

    async def wait_for_subject(self, to: str, subject: str, count: int, limit: float = 10.0) -> list[EmailMessage]:
        def matching() -> list[EmailMessage]:
            return [m for m in self.received(to) if subject in str(m["Subject"])]

        async with asyncio.timeout(limit):
            while len(matching()) < count:  # noqa: ASYNC110 - the sender runs in the app under test
                await asyncio.sleep(0.01)
        return matching()


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def html_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def token_in(message: EmailMessage) -> str:
    """The token of the link in the mail's plain-text part (the HTML part carries the same)."""
    found = LINK.search(text_of(message))
    assert found, text_of(message)
    token = urllib.parse.unquote(found.group(1))
    assert token in html_of(message)
    return token
