"""The audit log: what happened, who did it, to what, from where. docs/admin.md lists the event types.

``record(db, type, actor=..., subject=..., request=..., details=...)`` adds an event to the caller's unit
of work, so it commits with the change it records or not at all. Once committed (never before) it is
also a log line on ``service.audit`` with ``event.*`` fields and a count in ``auth_audit_events_total``.

A failed login changes nothing, so it has no transaction to join: ``Log.write`` hands the event to a
writer task that inserts every event waiting at that moment in one statement (group commit) and answers
each caller once its event is committed. A storm of failed logins costs one INSERT per round trip, not
one per login, and no event is acknowledged before it is stored: if the insert fails, the login is
answered 503 like any other database failure, never 401 without its event.

What a row may hold: ids, the client's address and user agent, the request and trace ids, and small
details. Never a password, token, hash or secret (``details`` keys are checked), nor a username or email
(an erased account leaves only its id): an unknown name that was tried is kept as a keyed hash
(HMAC-SHA-256 under ``AUTH_AUDIT_KEY``), so repeated tries of one name group together without storing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import hmac
import logging
import re
import uuid
from collections.abc import Iterable
from typing import Any

from cryptography.hazmat.primitives import serialization
from opentelemetry import trace
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session
from starlette.requests import Request

from service import logs, metrics, web
from service.config import Settings
from service.db import audit as queries
from service.db import users
from service.keys import KeySet

log = logging.getLogger("service.audit")

# -- event types ------------------------------------------------------------------------------------
LOGIN_SUCCEEDED = "login.succeeded"
LOGIN_FAILED = "login.failed"
REFRESH_REUSE = "refresh.reuse_detected"
LOGOUT = "logout"  # one session ended by its holder (revocation)
LOGOUT_ALL = "logout.all"
SESSION_ENDED = "session.ended"  # by an admin client or the CLI
# event names, not passwords; the lifecycle flows (account routes) record these three and email.verified
PASSWORD_CHANGED = "password.changed"  # noqa: S105
PASSWORD_RESET_REQUESTED = "password.reset_requested"  # noqa: S105
PASSWORD_RESET = "password.reset"  # noqa: S105
EMAIL_VERIFIED = "email.verified"
USER_UPDATED = "user.updated"
USER_DISABLED = "user.disabled"
USER_ENABLED = "user.enabled"
USER_DELETED = "user.deleted"
CLIENT_CREATED = "client.created"
CLIENT_UPDATED = "client.updated"
CLIENT_SECRET_ROTATED = "client.secret_rotated"  # noqa: S105
CLIENT_DISABLED = "client.disabled"
TYPES = (
    LOGIN_SUCCEEDED, LOGIN_FAILED, REFRESH_REUSE, LOGOUT, LOGOUT_ALL, SESSION_ENDED, PASSWORD_CHANGED,
    PASSWORD_RESET_REQUESTED, PASSWORD_RESET, EMAIL_VERIFIED, USER_UPDATED, USER_DISABLED, USER_ENABLED,
    USER_DELETED, CLIENT_CREATED, CLIENT_UPDATED, CLIENT_SECRET_ROTATED, CLIENT_DISABLED,
)
for _type in TYPES:
    metrics.AUDIT_EVENTS.labels(_type)

# details never carry these, whatever a caller passes (a programming error, raised at once)
_SECRET_KEY = re.compile(r"password|secret|token|hash|credential|email|username", re.IGNORECASE)
_ALLOWED_KEYS = frozenset({"name_hash"})  # the keyed hash of an unknown name: no dictionary can undo it
_PENDING = "audit_pending"  # Session.info: events to log once the transaction commits


@dataclasses.dataclass(frozen=True)
class Actor:
    """Who did it: a user (``id`` = user id), a client (client id), ``cli`` or ``anonymous``."""

    type: str
    id: str | None = None

    @classmethod
    def user(cls, user_id: uuid.UUID) -> Actor:
        return cls("user", str(user_id))

    @classmethod
    def client(cls, client_id: str) -> Actor:
        return cls("client", client_id)


CLI = Actor("cli")
ANONYMOUS = Actor("anonymous")


@dataclasses.dataclass(frozen=True)
class Subject:
    """What it was done to: a user, a session or a client."""

    type: str
    id: str

    @classmethod
    def user(cls, user_id: uuid.UUID) -> Subject:
        return cls("user", str(user_id))

    @classmethod
    def session(cls, session_id: uuid.UUID) -> Subject:
        return cls("session", str(session_id))

    @classmethod
    def client(cls, client_id: str) -> Subject:
        return cls("client", client_id)


@dataclasses.dataclass(frozen=True)
class Context:
    """Where it came from: the client's address (trusted-proxy aware), user agent, request and trace ids."""

    client_ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    trace_id: str | None = None


Origin = Request | Context  # a request being answered, or a Context made without one


def context(request: Origin | None) -> Context:
    if isinstance(request, Context):
        return request
    span = trace.get_current_span().get_span_context()
    trace_id = format(span.trace_id, "032x") if span.is_valid else None
    if request is None:  # the CLI: no address, but a trace when tracing is on
        return Context(request_id=logs.REQUEST_ID.get(), trace_id=trace_id)
    settings: Settings = request.state.resources.settings
    agent = request.headers.get("user-agent") or None
    return Context(
        client_ip=web.client_ip(request, settings.trusted_proxies),
        user_agent=agent[:255] if agent else None,
        request_id=logs.REQUEST_ID.get(),
        trace_id=trace_id,
    )


def event(
    type: str, *, actor: Actor, subject: Subject | None = None, request: Origin | None = None,
    details: dict[str, Any] | None = None, user_id: uuid.UUID | None = None, client_id: str | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """An event as a row of ``audit_events``. ``user_id`` and ``client_id`` (what the log is searched by)
    default to the subject's or the actor's (``_client_of``)."""
    if type not in TYPES:
        raise ValueError(f"unknown audit event type {type!r}")
    for key in details or {}:
        if key not in _ALLOWED_KEYS and _SECRET_KEY.search(key):
            raise ValueError(f"audit details may not carry {key!r}")
    if user_id is None:
        user_id = _id_of("user", subject, actor)
    if client_id is None:
        client_id = _client_of(actor, subject)
    where = context(request)
    return {
        "occurred_at": now or dt.datetime.now(dt.UTC),
        "type": type,
        "actor_type": actor.type,
        "actor_id": actor.id,
        "subject_type": subject.type if subject else None,
        "subject_id": subject.id if subject else None,
        "user_id": user_id,
        "client_id": client_id,
        "client_ip": where.client_ip,
        "user_agent": where.user_agent,
        "request_id": where.request_id,
        "trace_id": where.trace_id,
        "details": details or {},
    }


def _id_of(kind: str, subject: Subject | None, actor: Actor) -> uuid.UUID | None:
    found = subject.id if subject and subject.type == kind else actor.id if actor.type == kind else None
    return uuid.UUID(found) if found else None


def _client_of(actor: Actor, subject: Subject | None) -> str | None:
    """An event about a client (client.*) is filed under that client, whoever acted; any other under the
    client that acted (an admin client), or the one the caller names (the app a user logged in through)."""
    if subject is not None and subject.type == "client":
        return subject.id
    return actor.id if actor.type == "client" else None


async def record(
    db: AsyncSession, type: str, *, actor: Actor, subject: Subject | None = None,
    request: Origin | None = None, details: dict[str, Any] | None = None,
    user_id: uuid.UUID | None = None, client_id: str | None = None, now: dt.datetime | None = None,
) -> None:
    """Add an event to ``db``'s transaction: it is stored, logged and counted only if that commits."""
    row = event(type, actor=actor, subject=subject, request=request, details=details, user_id=user_id,
                client_id=client_id, now=now)
    await queries.insert(db, [row])
    db.sync_session.info.setdefault(_PENDING, []).append(row)


@sa_event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    emit(session.info.pop(_PENDING, ()))


@sa_event.listens_for(Session, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(_PENDING, None)  # nothing happened: nothing to log


def emit(rows: Iterable[dict[str, Any]]) -> None:
    """The log line and the count of stored events (the request and trace ids come from the context)."""
    for row in rows:
        metrics.AUDIT_EVENTS.labels(row["type"]).inc()
        fields = {
            f"event.{name}": str(value) if isinstance(value, uuid.UUID) else value
            for name, value in row.items()
            if value is not None and name not in ("occurred_at", "request_id", "trace_id")
        }
        log.info("audit %s", row["type"], extra={**fields, "event.occurred_at": row["occurred_at"].isoformat()})


# -- keys ---------------------------------------------------------------------------------------------


def root_key(settings: Settings, keyset: KeySet) -> bytes:
    """``AUTH_AUDIT_KEY``, else one derived from the signing key (which changes when keys rotate, and with
    it the name hashes and outstanding cursors: set AUTH_AUDIT_KEY to keep them stable)."""
    if settings.audit_key is not None:
        material = str(settings.audit_key).encode()
    else:
        private = keyset.signing.private
        if private is None:  # keys.load refuses a key set without a signer
            raise ValueError(f"key {keyset.signing.kid} has no private part")
        material = private.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    return hmac.new(material, b"authsvc audit v1", hashlib.sha256).digest()


def subkey(root: bytes, purpose: str) -> bytes:
    return hmac.new(root, purpose.encode(), hashlib.sha256).digest()


# -- the log of one process ---------------------------------------------------------------------------


class Log:
    """This process's writer of events that have no transaction of their own (failed logins), and the
    keys of the name hashes and the admin API's cursors. Owned by the lifespan."""

    def __init__(self, sessions: async_sessionmaker[Any], root: bytes, max_batch: int = 500) -> None:
        self.sessions = sessions
        self.names_key = subkey(root, "names")
        self.cursor_key = subkey(root, "cursors")
        self.max_batch = max_batch
        self._waiting: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def name_hash(self, login: str) -> str:
        """The attempted name in its folded form (the way logins compare names), keyed: 128 bits, hex."""
        folded = users.fold(login).encode("utf-8", "surrogatepass")
        return hmac.new(self.names_key, folded, hashlib.sha256).hexdigest()[:32]

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Write what is still waiting, then stop (requests have finished by now)."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                while self._waiting:
                    self._wake.set()
                    await asyncio.sleep(0.01)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def write(self, row: dict[str, Any]) -> None:
        """Store an event in the next group insert; returns once it is committed, raises if that failed."""
        if self._task is None or self._task.done():
            raise RuntimeError("the audit writer is not running")  # a bug: never wait for nobody
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((row, done))
        self._wake.set()
        await asyncio.shield(done)  # a caller that goes away does not take its event with it
        emit([row])

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch:]
                try:
                    # a transaction even for one statement: behind PgBouncer in transaction mode, a statement
                    # outside one may be prepared on one server connection and run on another
                    async with self.sessions.begin() as db:
                        await queries.insert(db, [row for row, _ in batch])
                except Exception as exc:  # the database failed: each caller answers as for any such failure
                    log.warning("audit events not stored: %s", type(exc).__name__, extra={"events": len(batch)})
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
