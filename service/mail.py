"""Mail: the texts, the transports (SMTP, or files for the embedded default) and the outbox's sender loop.

Delivery is a transactional outbox. A request writes its mail as a row of ``mails`` in the same
transaction as the token the mail carries, so a committed request never loses its mail and a rolled
back one never sends it. Every replica runs a ``Sender`` in its lifespan: it claims due rows with
``FOR UPDATE SKIP LOCKED`` under a lease (``db/mails.py``), sends them, and marks them sent; a failed
send is retried with exponential backoff (``AUTH_MAIL_RETRY_BASE`` doubling, at most an hour apart)
and after ``AUTH_MAIL_MAX_ATTEMPTS`` the row is dead, logged and counted. A sender that dies between
the send and the mark leaves the row leased: another sender sends it again once the lease is over,
with the same Message-ID, so a crash costs at most one duplicate that receivers can drop.

The link, and so the token, is in the row's body until the row is sent or dead; it is never logged
or put on a span (logs name the mail's id and kind, never its recipient or body).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import email.utils
import html
import logging
import math
import os
import string
import time
import urllib.parse
import uuid
from collections.abc import Mapping
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Protocol

import aiosmtplib
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from sqlalchemy.ext.asyncio import async_sessionmaker

from service import database, metrics
from service.config import Settings
from service.db import account_tokens, mails, users

log = logging.getLogger("service.mail")
tracer = trace.get_tracer("service.mail")
BATCH = 10  # mails claimed per round, sent concurrently
RETRY_CAP = 3600.0  # seconds: the longest wait between two attempts
RESET, VERIFY, ACCOUNT_EXISTS, USERNAME_TAKEN = "password_reset", "verify_email", "account_exists", "username_taken"

# -- the texts -------------------------------------------------------------------------------------------
# string.Template ($name): an override file can use the same names and nothing else (no attribute access).
DEFAULTS: dict[str, tuple[str, str, str]] = {
    RESET: (
        "Reset your password",
        "Hello $username,\n\nsomeone asked to reset the password of your account. To choose a new one, open\n\n"
        "  $link\n\nThe link works once, for $valid_for. If you did not ask, ignore this mail: your password "
        "stays as it is.\n",
        "<p>Hello $username,</p><p>someone asked to reset the password of your account.</p>"
        '<p><a href="$link">Choose a new password</a></p><p>The link works once, for $valid_for. If you did '
        "not ask, ignore this mail: your password stays as it is.</p>",
    ),
    VERIFY: (
        "Confirm your email address",
        "Hello $username,\n\nplease confirm that this is your address by opening\n\n  $link\n\n"
        "The link works once, for $valid_for. If you did not create an account, ignore this mail.\n",
        "<p>Hello $username,</p><p>please confirm that this is your address:</p>"
        '<p><a href="$link">Confirm my address</a></p><p>The link works once, for $valid_for. If you did not '
        "create an account, ignore this mail.</p>",
    ),
    ACCOUNT_EXISTS: (
        "You already have an account",
        "Hello $username,\n\nsomeone tried to register a new account with this address, which already has "
        "one (username $username). If it was you, log in, or reset your password if you forgot it. "
        "If it was not, you need not do anything.\n",
        "<p>Hello $username,</p><p>someone tried to register a new account with this address, which already "
        "has one (username $username). If it was you, log in, or reset your password if you forgot it. If it "
        "was not, you need not do anything.</p>",
    ),
    USERNAME_TAKEN: (
        "That username is taken",
        "Hello,\n\nsomeone tried to register the username $username with this address, but the name is "
        "taken. If it was you, register again with another name. If it was not, ignore this mail.\n",
        "<p>Hello,</p><p>someone tried to register the username $username with this address, but the name "
        "is taken. If it was you, register again with another name. If it was not, ignore this mail.</p>",
    ),
}


for _kind in DEFAULTS:  # every series from the start, so rates and alerts see zeros rather than nothing
    for _counter in (metrics.MAIL_QUEUED, metrics.MAIL_SENT, metrics.MAIL_FAILED, metrics.MAIL_DEAD):
        _counter.labels(_kind)


class Templates:
    """The default texts, each part overridable by a file ``<kind>.subject``, ``<kind>.txt``, ``<kind>.html``
    in ``AUTH_MAIL_TEMPLATES_DIR``. Read once at start, so a missing or unreadable file fails the start."""

    def __init__(self, folder: Path | None) -> None:
        self.parts: dict[str, tuple[string.Template, string.Template, string.Template]] = {}
        for kind, defaults in DEFAULTS.items():
            chosen = [
                (folder / f"{kind}.{suffix}").read_text("utf-8")
                if folder is not None and (folder / f"{kind}.{suffix}").is_file() else default
                for suffix, default in zip(("subject", "txt", "html"), defaults, strict=True)
            ]
            self.parts[kind] = (
                string.Template(" ".join(chosen[0].split())),  # one line: no header injection
                string.Template(chosen[1]),
                string.Template(chosen[2]),
            )

    def render(self, kind: str, values: Mapping[str, str]) -> mails.Body:
        subject, text, markup = self.parts[kind]
        escaped = {key: html.escape(value) for key, value in values.items()}
        return mails.Body(
            " ".join(subject.safe_substitute(values).split()),
            text.safe_substitute(values),
            markup.safe_substitute(escaped),
        )


def link(template: str, token: str) -> str:
    return template.replace("{token}", urllib.parse.quote(token, safe=""))


def valid_for(seconds: int) -> str:
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return f"{hours} hour{'s' if hours != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def domain_of(address: str) -> str:
    """The From address's domain: the right-hand side of every Message-ID we make."""
    return email.utils.parseaddr(address)[1].rpartition("@")[2] or "localhost"


# -- the transports ----------------------------------------------------------------------------------------
class Transport(Protocol):
    async def send(self, message: EmailMessage, mail_id: uuid.UUID) -> None: ...


class SmtpTransport:
    """aiosmtplib, one connection per mail: smtp:// (optionally STARTTLS) or smtps:// (TLS from the start)."""

    def __init__(self, settings: Settings) -> None:
        assert settings.smtp_url is not None  # noqa: S101 - chosen by transport()
        parsed = urllib.parse.urlsplit(settings.smtp_url)
        self.implicit_tls = parsed.scheme == "smtps"
        self.hostname = parsed.hostname or "localhost"
        self.port = parsed.port or (465 if self.implicit_tls else 587 if settings.smtp_starttls else 25)
        self.starttls = settings.smtp_starttls
        self.username = settings.smtp_username
        self.password_file = settings.smtp_password_file
        self.timeout = settings.smtp_timeout

    async def send(self, message: EmailMessage, mail_id: uuid.UUID) -> None:
        password = None
        if self.password_file is not None:  # read per send: a rotated Secret applies without a restart
            password = self.password_file.read_text("utf-8").strip()
        await aiosmtplib.send(
            message, hostname=self.hostname, port=self.port, use_tls=self.implicit_tls,
            start_tls=True if self.starttls else False if not self.implicit_tls else None,
            username=self.username, password=password, timeout=self.timeout,
        )


class FileTransport:
    """Without SMTP: each mail is a file ``<data dir>/mail/<mail id>.eml``, and its path is logged.

    Named by the mail's id, so a send repeated after a crash rewrites the same file.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def send(self, message: EmailMessage, mail_id: uuid.UUID) -> None:
        path = self.folder / f"{mail_id}.eml"
        await asyncio.to_thread(self._write, path, bytes(message))
        log.info("mail written to %s", path, extra={"mail_id": str(mail_id), "path": str(path)})

    def _write(self, path: Path, data: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = path.with_suffix(".part")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds a live link
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        partial.replace(path)  # whole or not at all


def transport(settings: Settings) -> Transport:
    if settings.smtp_url:
        return SmtpTransport(settings)
    return FileTransport(settings.data_dir / "mail")


def message(settings: Settings, mail: mails.Claimed, body: mails.Body) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = settings.mail_from
    msg["To"] = mail.recipient
    msg["Subject"] = body.subject
    msg["Message-ID"] = mail.message_id  # the same on every attempt: receivers drop a repeated send
    msg["Date"] = email.utils.format_datetime(mail.created_at)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    # 7bit where it fits (ASCII, lines within RFC 5322's 998): the link stays readable in a file or a
    # raw view, unbroken by quoted-printable's soft line breaks; other texts are quoted-printable
    msg.set_content(body.text, cte=_encoding(body.text))
    msg.add_alternative(body.html, subtype="html", cte=_encoding(body.html))
    return msg


def _encoding(text: str) -> str:
    return "7bit" if text.isascii() and all(len(line) <= 998 for line in text.splitlines()) else "quoted-printable"


# -- the sender loop ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Round:
    sent: int = 0
    failed: int = 0
    dead: int = 0
    dropped: int = 0


class Sender:
    """Claims due mails and sends them; one per process, started by the lifespan.

    ``wake()`` (called after a request committed a mail) runs a round at once; otherwise a round runs
    every ``AUTH_MAIL_POLL_INTERVAL`` seconds, which is how a mail queued by another replica, or due
    for a retry, is found.
    """

    def __init__(
        self, settings: Settings, sessions: async_sessionmaker[Any], transport: Transport, templates: Templates
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.transport = transport
        self.templates = templates
        self.lease = 2 * settings.smtp_timeout + 10  # past any send's timeout: a live sender marks first
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="mail-sender")

    async def stop(self) -> None:
        """Let the round in progress finish (cancelling a query midway breaks its connection), then stop;
        past the send timeout, cancel: the rows it held stay leased and another sender takes them later."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=self.settings.smtp_timeout + 5)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                busy = await self.run_once()
            except Exception as exc:
                if database.unavailable(exc):  # an outage, not a bug: one line; queued rows wait for the next round
                    log.warning("mail sender round failed: database unavailable (%s)", database.reason(exc))
                else:
                    log.exception("mail sender round failed")
                busy = False
            if busy or self._stopping:
                continue  # a full batch: there may be more due
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.mail_poll_interval):
                    await self._wake.wait()
            self._wake.clear()

    async def run_once(self, now: dt.datetime | None = None) -> bool:
        """One round: claim a batch, send it. True when the batch was full (more may be due)."""
        with suppress_instrumentation():  # the poll, mostly empty, every few seconds: not worth a trace
            async with self.sessions.begin() as db:
                claimed = await mails.claim(db, now=now or _utcnow(), lease=self.lease, limit=BATCH)
        tally = Round()
        for outcome in await asyncio.gather(*(self._deliver(m, tally) for m in claimed), return_exceptions=True):
            if isinstance(outcome, Exception) and database.unavailable(outcome):
                # the database went away mid-round: the lease runs out and the mail is tried again
                log.warning("mail delivery interrupted: database unavailable (%s)", database.reason(outcome))
            elif isinstance(outcome, BaseException):
                log.error("mail delivery failed: %s", type(outcome).__name__, exc_info=outcome)
        return len(claimed) == BATCH

    async def _deliver(self, mail: mails.Claimed, tally: Round) -> None:
        # a trace of its own (the request that queued it ended long ago); ids and kind, never the body
        with tracer.start_as_current_span("mail.deliver", attributes={"mail.kind": mail.kind, "mail.id": str(mail.id)}):
            await self._deliver_traced(mail, tally)

    async def _deliver_traced(self, mail: mails.Claimed, tally: Round) -> None:
        body = mail.body
        if body is None:
            try:
                prepared = await self._prepare(mail)
            except _LeaseLost:
                return
            if prepared is None:
                tally.dropped += 1
                return
            mail, body = prepared
        with tracer.start_as_current_span("mail.send", attributes={"mail.attempt": mail.attempts}):
            begun = time.perf_counter()
            try:
                async with asyncio.timeout(self.settings.smtp_timeout):
                    await self.transport.send(message(self.settings, mail, body), mail.id)
            except (aiosmtplib.SMTPException, OSError, TimeoutError, ValueError) as exc:
                await self._failed(mail, exc, tally)
                return
            finally:
                metrics.MAIL_SEND_DURATION.observe(time.perf_counter() - begun)
        async with self.sessions.begin() as db:
            await mails.mark_sent(db, mail, now=_utcnow())
        metrics.MAIL_SENT.labels(mail.kind).inc()
        tally.sent += 1

    async def _failed(self, mail: mails.Claimed, exc: BaseException, tally: Round) -> None:
        error = f"{type(exc).__name__}: {exc}"[:255]  # the server's answer: never the message itself
        dead = mail.attempts >= self.settings.mail_max_attempts
        wait = min(RETRY_CAP, self.settings.mail_retry_base * 2 ** (mail.attempts - 1))
        async with self.sessions.begin() as db:
            await mails.mark_failed(
                db, mail, error=error, retry_at=None if dead else _utcnow() + dt.timedelta(seconds=wait)
            )
        metrics.MAIL_FAILED.labels(mail.kind).inc()
        tally.failed += 1
        if dead:
            metrics.MAIL_DEAD.labels(mail.kind).inc()
            tally.dead += 1
            log.error(
                "mail dead after %d attempts: %s", mail.attempts, error,
                extra={"mail_id": str(mail.id), "mail_kind": mail.kind},
            )
        else:
            log.warning(
                "mail attempt %d failed, next in %.1fs: %s", mail.attempts, wait, error,
                extra={"mail_id": str(mail.id), "mail_kind": mail.kind},
            )

    async def _prepare(self, mail: mails.Claimed) -> tuple[mails.Claimed, mails.Body] | None:
        """A password-reset request: the token and the text, made here so the request did the same work
        for every address. Dropped when the address has no active account, or a newer request exists."""
        settings, now = self.settings, _utcnow()
        async with self.sessions.begin() as db:
            user = await users.by_email(db, mail.recipient, for_update=True)  # serialises one user's resets
            if user is None or not user.is_active or await mails.newer_request(db, mail):
                await mails.drop(db, mail)
                return None
            token = await account_tokens.issue(
                db, user_id=user.id, purpose=account_tokens.RESET, email=user.email,
                ttl=settings.password_reset_ttl, now=now,
            )
            body = self.templates.render(
                RESET, {"username": user.username, "link": link(settings.password_reset_url, token),
                        "valid_for": valid_for(settings.password_reset_ttl)},
            )
            if not await mails.fill(db, mail, user_id=user.id, body=body):
                raise _LeaseLost()  # another sender holds the row now: roll the token back too
        return dataclasses.replace(mail, recipient=user.email, user_id=user.id, body=body), body


class _LeaseLost(Exception):
    pass


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
