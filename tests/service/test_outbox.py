"""The mail outbox against real PostgreSQL (through PgBouncer) and a real SMTP server that we stop and start."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from devtools.polling import wait_for
from devtools.stack import Stack
from service import database, mail, metrics
from service.config import Settings
from service.db import mails
from service.db.models import AccountToken, Mail
from tests.service.conftest import mail_settings, register
from tests.service.mailbox import Mailbox, token_in

pytestmark = pytest.mark.anyio
API = "/api/v1/auth"


async def rows(settings: Settings) -> list[Mail]:
    engine = database.create_engine(settings, settings.database_url, pool=False)
    try:
        async with database.sessionmaker(engine)() as db:
            return list((await db.execute(select(Mail).order_by(Mail.created_at))).scalars())
    finally:
        await engine.dispose()


async def test_a_reset_requested_while_smtp_is_down_is_accepted_and_mailed_once_when_it_is_back(
    running_app: Any, stack: Stack, keys_dir: Path, mailbox: Mailbox
) -> None:
    settings = mail_settings(stack, keys_dir, mailbox.url)
    async with running_app(settings) as app:
        alice = await register(app.client)
        await mailbox.wait_for(1, alice.email)  # the verification mail, while SMTP was up
        mailbox.stop()
        failed_before = metrics.MAIL_FAILED.labels(mail.RESET)._value.get()
        response = await app.client.post(f"{API}/password-reset", json={"email": alice.email})
        assert response.status_code == 202

        async def retried() -> bool:  # attempts failed against the stopped server, and are due again
            return bool(metrics.MAIL_FAILED.labels(mail.RESET)._value.get() >= failed_before + 2)

        await wait_for(retried, limit=10, interval=0.02)
        [pending] = [row for row in await rows(settings) if row.kind == mail.RESET]
        assert pending.status == "queued" and pending.attempts >= 2 and pending.last_error
        mailbox.start()
        [reset] = await mailbox.wait_for_subject(alice.email, "Reset", 1)

        async def marked() -> bool:
            return [row.status for row in await rows(settings) if row.kind == mail.RESET] == ["sent"]

        await wait_for(marked, limit=10, interval=0.02)  # sent and marked: no later round sends it again
        assert len(mailbox.received(alice.email)) == 2
        [sent] = [row for row in await rows(settings) if row.kind == mail.RESET]
        assert sent.text is None and sent.html is None  # the link left the database with the mail
        assert reset["Message-ID"] == sent.message_id
        confirm = {"token": token_in(reset), "new_password": "a brand new passphrase"}
        assert (await app.client.post(f"{API}/password-reset/confirm", json=confirm)).status_code == 204


async def enqueue_many(settings: Settings, count: int) -> None:
    engine = database.create_engine(settings, settings.database_url, pool=False)
    now = dt.datetime.now(dt.UTC)
    try:
        async with database.sessionmaker(engine).begin() as db:
            for n in range(count):
                body = mails.Body(f"mail {n}", f"text {n}", f"<p>html {n}</p>")
                mails.enqueue(
                    db, kind=mail.VERIFY, recipient=f"user{n}@example.com", user_id=None, body=body,
                    domain="example.com", now=now,
                )
    finally:
        await engine.dispose()


async def test_two_sender_loops_on_one_database_send_each_mail_exactly_once(
    settings: Settings, stack: Stack, keys_dir: Path, mailbox: Mailbox, running_app: Any
) -> None:
    s = mail_settings(stack, keys_dir, mailbox.url)
    await enqueue_many(s, 60)
    engines = [database.create_engine(s, s.database_url) for _ in range(2)]  # two replicas, two pools
    senders = [
        mail.Sender(s, database.sessionmaker(engine), mail.transport(s), mail.Templates(None)) for engine in engines
    ]
    try:
        for sender in senders:
            sender.start()
        await mailbox.wait_for(60, limit=30)

        async def all_sent() -> bool:
            return {row.status for row in await rows(s)} == {"sent"}

        await wait_for(all_sent, limit=10, interval=0.02)
    finally:
        for sender in senders:
            await sender.stop()
        for engine in engines:
            await engine.dispose()
    ids = Counter(str(m["Message-ID"]) for m in mailbox.received())
    assert len(ids) == 60 and set(ids.values()) == {1}
    assert {row.attempts for row in await rows(s)} == {1}
    async with running_app(s):
        pass  # the fixture's wipe afterwards


async def test_a_mail_whose_sender_died_after_sending_is_sent_again_with_the_same_message_id(
    stack: Stack, keys_dir: Path, mailbox: Mailbox, running_app: Any
) -> None:
    """The documented bound: at least once; a crash between send and mark costs one duplicate with one id."""
    s = mail_settings(stack, keys_dir, mailbox.url)
    await enqueue_many(s, 1)
    engine = database.create_engine(s, s.database_url)
    sessions = database.sessionmaker(engine)
    sender = mail.Sender(s, sessions, mail.transport(s), mail.Templates(None))
    try:
        async with sessions.begin() as db:  # a sender claims the row, sends it, and dies before the mark
            [claimed] = await mails.claim(db, now=dt.datetime.now(dt.UTC), lease=sender.lease, limit=10)
        await mail.transport(s).send(mail.message(s, claimed, claimed.body), claimed.id)  # type: ignore[arg-type]
        assert not await sender.run_once()  # the lease holds: nobody sends it meanwhile
        assert len(mailbox.received()) == 1
        later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=sender.lease + 1)
        await sender.run_once(now=later)  # the lease is over: another sender takes it
        first, second = await mailbox.wait_for(2)
        assert first["Message-ID"] == second["Message-ID"] == claimed.message_id
        [row] = await rows(s)
        assert (row.status, row.attempts) == ("sent", 2)
        async with sessions.begin() as db:  # the dead sender's late mark is fenced off
            assert not await mails.mark_sent(db, claimed, now=dt.datetime.now(dt.UTC))
    finally:
        await engine.dispose()
    async with running_app(s):
        pass


async def test_a_mail_is_dead_after_the_last_attempt_and_its_link_is_gone(
    running_app: Any, stack: Stack, keys_dir: Path, mailbox: Mailbox
) -> None:
    mailbox.stop()
    s = mail_settings(stack, keys_dir, mailbox.url, AUTH_MAIL_MAX_ATTEMPTS="3")
    dead_before = metrics.MAIL_DEAD.labels(mail.VERIFY)._value.get()
    async with running_app(s) as app:
        await register(app.client)

        async def dead() -> bool:
            return [row.status for row in await rows(s)] == ["dead"]

        await wait_for(dead, limit=10, interval=0.02)
        [row] = await rows(s)
        assert row.attempts == 3 and row.text is None and row.html is None and row.last_error
        assert metrics.MAIL_DEAD.labels(mail.VERIFY)._value.get() == dead_before + 1
        mailbox.start()
        assert not await app.resources.sender.run_once()  # a dead row is never claimed again
        assert mailbox.received() == []


async def test_a_mail_rolled_back_with_its_transaction_is_never_sent(
    running_app: Any, stack: Stack, keys_dir: Path, mailbox: Mailbox
) -> None:
    s = mail_settings(stack, keys_dir, mailbox.url)
    async with running_app(s) as app:
        with pytest.raises(RuntimeError):
            async with app.resources.sessions.begin() as db:
                mails.enqueue(
                    db, kind=mail.VERIFY, recipient="a@example.com", user_id=None,
                    body=mails.Body("s", "t", "h"), domain="example.com", now=dt.datetime.now(dt.UTC),
                )
                await db.flush()  # the row is written inside the transaction
                raise RuntimeError("the request failed after writing its mail")
        assert not await app.resources.sender.run_once()
        assert await rows(s) == [] and mailbox.received() == []


async def test_cleanup_deletes_old_sent_and_dead_mails_and_expired_tokens_but_never_queued_mail(
    running_app: Any, stack: Stack, keys_dir: Path, mailbox: Mailbox
) -> None:
    from service import cleanup

    s = mail_settings(stack, keys_dir, mailbox.url)
    async with running_app(s) as app:
        await register(app.client)
        await mailbox.wait_for(1)
        await enqueue_many(s, 1)
        await app.resources.sender.stop()  # the new row stays queued
        engine = database.create_engine(s, s.database_url, pool=False)
        try:
            async with database.sessionmaker(engine).begin() as db:  # time passes: the old rows are past retention
                old = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=s.cleanup_retention + 60)
                await db.execute(update(Mail).where(Mail.status == "sent").values(created_at=old))
                await db.execute(update(Mail).where(Mail.status == "queued").values(created_at=old))
                await db.execute(update(AccountToken).values(expires_at=old))
        finally:
            await engine.dispose()
        counts = await cleanup.run_once(app.resources.sessions, s, dt.datetime.now(dt.UTC))
        assert (counts.mails, counts.account_tokens) == (1, 1)
        assert [row.status for row in await rows(s)] == ["queued"]


# aiosmtpd warns, in its server thread, about AUTH without TLS (on purpose here, on loopback) and about
# its own deprecated attribute that its authenticator path still reads
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
@pytest.mark.filterwarnings("ignore:Session.login_data is deprecated:DeprecationWarning")
async def test_smtp_login_reads_the_password_file_on_each_send_so_a_rotation_needs_no_restart(
    running_app: Any, stack: Stack, keys_dir: Path, tmp_path: Path
) -> None:
    box = Mailbox(credentials=("mailer", "right secret"))
    box.start()
    password_file = tmp_path / "smtp-password"
    password_file.write_text("old secret\n")
    try:
        s = mail_settings(
            stack, keys_dir, box.url, AUTH_SMTP_USERNAME="mailer", AUTH_SMTP_PASSWORD_FILE=str(password_file)
        )
        failed_before = metrics.MAIL_FAILED.labels(mail.VERIFY)._value.get()
        async with running_app(s) as app:
            await register(app.client)

            async def refused() -> bool:  # the server refused the login
                return bool(metrics.MAIL_FAILED.labels(mail.VERIFY)._value.get() > failed_before)

            await wait_for(refused, limit=10, interval=0.02)
            [row] = await rows(s)
            assert row.status == "queued" and "535" in (row.last_error or "")
            password_file.write_text("right secret\n")  # the Secret was rotated
            [received] = await box.wait_for(1)
            assert received["Subject"] == "Confirm your email address"
    finally:
        box.stop()


async def test_starttls_required_but_not_offered_is_a_failed_attempt_never_a_plain_send(
    running_app: Any, stack: Stack, keys_dir: Path, mailbox: Mailbox
) -> None:
    s = mail_settings(stack, keys_dir, mailbox.url, AUTH_SMTP_STARTTLS="true")  # the test server has no TLS
    failed_before = metrics.MAIL_FAILED.labels(mail.VERIFY)._value.get()
    async with running_app(s) as app:
        await register(app.client)

        async def failed() -> bool:
            return bool(metrics.MAIL_FAILED.labels(mail.VERIFY)._value.get() > failed_before)

        await wait_for(failed, limit=10, interval=0.02)
        [row] = await rows(s)
        assert row.status == "queued" and "STARTTLS" in (row.last_error or "").upper()
    assert mailbox.received() == []
