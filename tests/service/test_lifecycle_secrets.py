"""No reset or verification token, link or new password reaches a span, a log line or a metric."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from devtools.polling import wait_for
from devtools.stack import Stack
from service import mail, metrics, tokens
from tests.service.conftest import PASSWORD, bearer, mail_settings, register
from tests.service.mailbox import Mailbox, token_in
from tests.service.test_observability import json_logs, recorder, spans  # noqa: F401 - fixtures

pytestmark = pytest.mark.anyio
API = "/api/v1/auth"


async def test_no_lifecycle_secret_reaches_a_span_a_log_line_or_a_metric(
    spans: InMemorySpanExporter, running_app: Any, stack: Stack, keys_dir: Path, mailbox: Mailbox  # noqa: F811
) -> None:
    reset_password, changed_password = "reset passphrase one", "changed passphrase two"
    with json_logs(logging.DEBUG) as captured:
        async with running_app(mail_settings(stack, keys_dir, mailbox.url)) as app:
            client: httpx.AsyncClient = app.client
            alice = await register(client)
            [verification] = await mailbox.wait_for(1)
            verify_token = token_in(verification)
            assert (await client.post(f"{API}/verify-email", json={"token": verify_token})).status_code == 204
            mailbox.stop()  # a failed attempt is logged too
            failed = metrics.MAIL_FAILED.labels(mail.RESET)._value.get()
            assert (await client.post(f"{API}/password-reset", json={"email": alice.email})).status_code == 202

            async def attempted() -> bool:
                return bool(metrics.MAIL_FAILED.labels(mail.RESET)._value.get() > failed)

            await wait_for(attempted, limit=10, interval=0.02)
            mailbox.start()
            [reset] = await mailbox.wait_for_subject(alice.email, "Reset", 1)
            reset_token = token_in(reset)
            confirm = {"token": reset_token, "new_password": reset_password}
            assert (await client.post(f"{API}/password-reset/confirm", json=confirm)).status_code == 204
            pair = (await client.post(f"{API}/token", data={"username": "alice", "password": reset_password})).json()
            change = {"current_password": reset_password, "new_password": changed_password}
            changed = await client.post(f"{API}/password", json=change, headers=bearer(pair["access_token"]))
            assert changed.status_code == 204
            scraped = (await client.get("/metrics")).text
    exported = "\n".join(span.to_json() for span in spans.get_finished_spans())
    # the service's lines; "mail.log" is the test's own SMTP server (aiosmtpd), which logs what it receives
    logged = "\n".join(line for line in captured.getvalue().splitlines() if '"logger": "mail.log"' not in line)
    secrets = {"first password": PASSWORD, "reset password": reset_password, "changed password": changed_password}
    for name, token in {"verify": verify_token, "reset": reset_token}.items():
        secrets[f"{name} token"] = token
        secrets[f"{name} digest"] = tokens.digest(token).hex()
    places = {"spans": exported, "logs": logged, "metrics": scraped}
    assert [(what, where) for what, s in secrets.items() for where, text in places.items() if s in text] == []
    # and the scan looked at something real
    assert "mail.deliver" in exported and "mail.send" in exported
    assert "mail attempt 1 failed" in logged and "auth_mail_sent_total" in scraped
