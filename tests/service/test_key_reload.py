"""The service follows its keys folder without a restart, laid out and updated as the kubelet does it.

A mounted Secret is a folder of symlinks ``name -> ..data/name``, where ``..data`` is a symlink to a
timestamped folder holding one version of the Secret; an update writes a new timestamped folder and
renames a ``..data_tmp`` symlink over ``..data`` (Kubernetes' AtomicWriter). ``SecretVolume`` does the
same steps in the same order.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from devtools.stack import Stack
from service import errors, keys, metrics, tokens
from service.config import ConfigError, Settings
from tests.service.conftest import PASSWORD, bearer, wipe
from tests.service.test_observability_metrics import parse
from tests.service.test_observability_serve import CLOSE, serving

NOW = dt.datetime.now(dt.UTC)
CLAIMS = {"user_id": uuid.uuid4(), "username": "alice", "session_id": uuid.uuid4(), "issuer": "i", "audience": "a"}
INTERVAL = 1.0  # AUTH_KEYS_RELOAD_INTERVAL in the served test
_versions = itertools.count()


def private_pem() -> bytes:
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(private: bytes) -> bytes:
    key = serialization.load_pem_private_key(private, password=None)
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


class SecretVolume:
    """A Secret volume as the kubelet writes it (pkg/volume/util/atomic_writer.go), step by step."""

    def __init__(self, path: Path, files: dict[str, bytes]) -> None:
        self.path = path
        path.mkdir()
        self.update(files)

    def update(self, files: dict[str, bytes]) -> None:
        data = self.path / "..data"
        old = os.readlink(data) if data.is_symlink() else None
        stamp = dt.datetime.now(dt.UTC).strftime("..%Y_%m_%d_%H_%M_%S.")
        version = self.path / f"{stamp}{next(_versions)}"  # MkdirTemp's random suffix: unique per update
        version.mkdir()
        for name, content in files.items():
            (version / name).write_bytes(content)
            (version / name).chmod(0o440)  # the chart's defaultMode
        (self.path / "..data_tmp").symlink_to(version.name)
        (self.path / "..data_tmp").rename(data)  # the one atomic step
        for name in files:  # the user-visible names, for entries that are new
            if not (self.path / name).is_symlink():
                (self.path / name).symlink_to(f"..data/{name}")
        if old is not None:
            shutil.rmtree(self.path / old)
        for entry in self.path.iterdir():  # names that are gone
            if not entry.name.startswith("..") and entry.name not in files:
                entry.unlink()


def issue(keyset: keys.KeySet) -> str:
    return tokens.issue_access(keyset, ttl=60, now=NOW, **CLAIMS)  # type: ignore[arg-type]


def verify(keyset: keys.KeySet, token: str) -> tokens.AccessClaims:
    return tokens.verify_access(keyset, token, issuer="i", audience="a", now=NOW)


def kid_of(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


# ---- the Keyring on its own ------------------------------------------------------------------------------


def test_a_rotation_through_atomic_swaps_is_followed_step_by_step(tmp_path: Path) -> None:
    k1, k2 = private_pem(), private_pem()
    volume = SecretVolume(tmp_path / "keys", {"k1.pem": k1})
    ring = keys.Keyring(volume.path, None)
    old_token = issue(ring.current)
    assert ring.refresh() is keys.Reload.UNCHANGED

    volume.update({"k1.pem": k1, "k2.pem": k2, "active-kid": b"k1\n"})  # publish k2
    assert ring.refresh() is keys.Reload.LOADED
    assert set(ring.current.by_kid) == {"k1", "k2"} and ring.current.signing.kid == "k1"

    volume.update({"k1.pem": k1, "k2.pem": k2, "active-kid": b"k2"})  # k2 signs
    assert ring.refresh() is keys.Reload.LOADED
    assert kid_of(issue(ring.current)) == "k2"
    assert verify(ring.current, old_token).username == "alice"

    volume.update({"k1.pub.pem": public_pem(k1), "k2.pem": k2, "active-kid": b"k2"})  # k1 retired
    assert ring.refresh() is keys.Reload.LOADED
    assert ring.current.by_kid["k1"].private is None
    assert verify(ring.current, old_token).username == "alice"

    volume.update({"k2.pem": k2, "active-kid": b"k2"})  # k1 removed
    assert ring.refresh() is keys.Reload.LOADED
    assert set(ring.current.by_kid) == {"k2"} and ring.problem is None
    with pytest.raises(errors.InvalidToken):
        verify(ring.current, old_token)
    assert sorted(p.name for p in volume.path.iterdir() if not p.name.startswith("..")) == ["active-kid", "k2.pem"]


Files = dict[str, bytes]
BAD_PEM = b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"


@pytest.mark.parametrize(
    ("breaking", "problem"),
    [
        (lambda good: {**good, "k1.pem": BAD_PEM}, "k1.pem"),
        (lambda good: {**good, "k3.pem": b""}, "k3.pem"),
        (lambda good: {**good, "k4.pub.pem": b"public"}, "k4.pub.pem"),
        (lambda good: {**good, "active-kid": b"k9"}, "active-kid names k9, but there is no private key k9.pem"),
        (lambda good: {**good, "active-kid": b"  \n"}, "active-kid is empty"),
        (lambda good: {k: v for k, v in good.items() if k != "active-kid"}, "several private keys"),
        (lambda good: {}, "no private key"),
    ],
    ids=["unparseable", "empty", "bad-public", "active-missing", "active-empty", "no-signer", "emptied"],
)
def test_a_broken_update_is_refused_once_and_the_last_good_keys_stay(
    tmp_path: Path, breaking: Callable[[Files], Files], problem: str
) -> None:
    good = {"k1.pem": private_pem(), "k2.pem": private_pem(), "active-kid": b"k1"}
    volume = SecretVolume(tmp_path / "keys", good)
    ring = keys.Keyring(volume.path, None)
    before = ring.current
    volume.update(breaking(good))
    assert ring.refresh() is keys.Reload.REFUSED
    assert ring.current is before
    assert ring.problem is not None and problem in ring.problem
    assert ring.refresh() is keys.Reload.UNCHANGED  # refused once, not on every look
    volume.update(good)
    assert ring.refresh() is keys.Reload.LOADED  # the same keys again: back to good, no longer degraded
    assert ring.problem is None and ring.current.jwks_json() == before.jwks_json()


def test_public_only_active_kid_is_refused(tmp_path: Path) -> None:
    k1, k2 = private_pem(), private_pem()
    volume = SecretVolume(tmp_path / "keys", {"k1.pem": k1, "k2.pem": k2, "active-kid": b"k2"})
    ring = keys.Keyring(volume.path, None)
    volume.update({"k1.pem": k1, "k2.pub.pem": public_pem(k2), "active-kid": b"k2"})
    assert ring.refresh() is keys.Reload.REFUSED
    assert ring.current.signing.kid == "k2" and ring.current.signing.private is not None  # signing goes on
    assert ring.problem is not None and "no private key k2.pem" in ring.problem


def test_active_kid_wins_over_the_signing_key_id_setting(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path / "keys", {"a.pem": private_pem(), "b.pem": private_pem()})
    assert keys.load(volume.path, "a").signing.kid == "a"
    volume.update({"a.pem": (volume.path / "a.pem").read_bytes(), "b.pem": (volume.path / "b.pem").read_bytes(),
                   "active-kid": b"b"})
    assert keys.load(volume.path, "a").signing.kid == "b"


def test_a_folder_that_does_not_load_at_start_still_stops_the_start(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path / "keys", {"k1.pem": private_pem(), "active-kid": b"k2"})
    with pytest.raises(ConfigError, match="active-kid names k2"):
        keys.Keyring(volume.path, None)


def test_a_plain_folder_is_followed_by_inode_mtime_and_size_and_a_rewrite_changes_nothing(tmp_path: Path) -> None:
    keys.generate(tmp_path, kid="a")
    ring = keys.Keyring(tmp_path, None)
    first = ring.current
    (tmp_path / "a.pem").write_bytes((tmp_path / "a.pem").read_bytes() + b"\n")  # touched, same key
    assert ring.refresh() is keys.Reload.UNCHANGED and ring.current is first
    (tmp_path / "b.pub.pem").write_bytes(public_pem(private_pem()))
    assert ring.refresh() is keys.Reload.LOADED and set(ring.current.by_kid) == {"a", "b"}


def test_an_encrypted_key_is_a_readable_error_not_a_traceback(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "k.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    ))
    with pytest.raises(ConfigError, match=r"AUTH_KEYS_DIR: k\.pem"):
        keys.load(tmp_path, None)


@pytest.mark.anyio
async def test_follow_hands_over_each_new_set_and_logs_one_line_per_refused_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    k1 = private_pem()
    volume = SecretVolume(tmp_path / "keys", {"k1.pem": k1})
    ring = keys.Keyring(volume.path, None)
    used: list[keys.KeySet] = []
    refused = metrics.KEYS_RELOADS.labels("refused")
    refused_before = refused._value.get()

    async def until(check: Callable[[], bool]) -> None:
        async with asyncio.timeout(10):
            while not check():  # noqa: ASYNC110 - waits on the follower's own loop
                await asyncio.sleep(0.01)

    following = asyncio.get_running_loop().create_task(keys.follow(ring, 0.02, used.append))
    try:
        volume.update({"k1.pem": k1, "k2.pub.pem": public_pem(private_pem())})
        await until(lambda: len(used) == 1)
        assert set(used[0].by_kid) == {"k1", "k2"}
        with caplog.at_level(logging.INFO, "service.keys"):
            volume.update({"k1.pem": b"garbage"})
            await until(lambda: ring.problem is not None)
            await asyncio.sleep(0.2)  # ten more looks at the unchanged broken folder: still one line
        lines = [r for r in caplog.records if r.name == "service.keys"]
        assert len(lines) == 1 and lines[0].levelno == logging.ERROR
        assert "keeping kids k1, k2 (signing k1)" in lines[0].getMessage() and "k1.pem" in lines[0].getMessage()
        assert refused._value.get() == refused_before + 1 and metrics.KEYS_DEGRADED._value.get() == 1
        assert len(used) == 1
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
    metrics.KEYS_DEGRADED.set(0)


# ---- `authsvc serve --workers 2`, followed through a rotation -------------------------------------------


class ServerLog:
    """The server's JSON log lines, read as they come."""

    def __init__(self, path: Path) -> None:
        self.path, self.records, self._offset = path, list[dict[str, Any]](), 0

    def read(self) -> list[dict[str, Any]]:
        with self.path.open("rb") as stream:
            stream.seek(self._offset)
            data = stream.read()
        complete = data[: data.rfind(b"\n") + 1]  # the last line may still be being written
        self._offset += len(complete)
        self.records.extend(json.loads(line) for line in complete.splitlines() if line.startswith(b"{"))
        return self.records

    def lines(self, logger: str, starting: str) -> list[dict[str, Any]]:
        return [r for r in self.read() if r["logger"] == logger and r["message"].startswith(starting)]

    async def pid_of(self, response: httpx.Response) -> int:
        """Which worker answered: the access log line with the response's request id."""
        request_id = response.headers["x-request-id"]
        async with asyncio.timeout(10):
            while True:
                for record in self.lines("service.access", ""):
                    if record.get("request_id") == request_id:
                        return int(record["process.pid"])
                await asyncio.sleep(0.005)


Send = Callable[[], Awaitable[httpx.Response]]


async def on_each_worker(log: ServerLog, send: Send, workers: int = 2) -> dict[int, httpx.Response]:
    """Send on new connections until each worker has answered; the last answer of each, by pid."""
    answers: dict[int, httpx.Response] = {}
    async with asyncio.timeout(60):  # the kernel hands connections to whichever worker accepts first
        while len(answers) < workers:
            response = await send()
            answers[await log.pid_of(response)] = response
    return answers


@contextlib.asynccontextmanager
async def served(
    settings: Settings, stack: Stack, tmp_path: Path, keys_dir: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, ServerLog]]:
    async with serving(
        settings, stack, tmp_path, "--workers", "2",
        AUTH_KEYS_DIR=str(keys_dir), AUTH_KEYS_RELOAD_INTERVAL=str(INTERVAL),
        AUTH_LOG_LEVEL="DEBUG",  # successful probes are logged at DEBUG: pid_of needs their lines
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    ) as (url, _, err), httpx.AsyncClient(base_url=url, headers=CLOSE) as client:
        yield client, ServerLog(err)


@pytest.mark.anyio
async def test_two_workers_follow_a_whole_rotation_without_a_restart(
    settings: Settings, stack: Stack, tmp_path: Path
) -> None:
    k1, k2 = private_pem(), private_pem()
    volume = SecretVolume(tmp_path / "keys", {"k1.pem": k1})
    try:
        async with served(settings, stack, tmp_path, volume.path) as (client, log):
            await run_rotation(client, log, volume, k1, k2)
    finally:
        await wipe(stack)


async def run_rotation(client: httpx.AsyncClient, log: ServerLog, volume: SecretVolume, k1: bytes, k2: bytes) -> None:
    body = {"username": "carol", "email": "carol@example.com", "password": PASSWORD}
    assert (await client.post("/api/v1/auth/register", json=body)).status_code == 201
    form = {"username": "carol", "password": PASSWORD}

    async def login() -> httpx.Response:
        return await client.post("/api/v1/auth/token", data=form)

    def me(token: str) -> Send:
        return lambda: client.get("/api/v1/auth/me", headers=bearer(token))

    async def jwks_kids() -> dict[int, set[str]]:
        answers = await on_each_worker(log, lambda: client.get("/.well-known/jwks.json"))
        return {pid: {key["kid"] for key in r.json()["keys"]} for pid, r in answers.items()}

    async def swap(files: dict[str, bytes]) -> None:
        """One kubelet update, then wait until both workers have taken it (each logs one line)."""
        seen = len(log.lines("service.keys", ""))
        begun = time.time()
        volume.update(files)
        async with asyncio.timeout(30):
            while len(log.lines("service.keys", "")) < seen + 2:  # noqa: ASYNC110 - the server's own loop
                await asyncio.sleep(0.05)
        taken = log.lines("service.keys", "")[seen:]
        assert {r["process.pid"] for r in taken} == workers  # each worker once, no new process
        for record in taken:
            at = dt.datetime.fromisoformat(record["timestamp"]).timestamp()
            # looked at every INTERVAL (1 s), not the 10 s default; generous for a busy machine
            assert at - begun < INTERVAL + 3, record

    first = await on_each_worker(log, login)
    workers = set(first)
    old_token = next(iter(first.values())).json()["access_token"]
    assert kid_of(old_token) == "k1"
    assert {pid: r.status_code for pid, r in (await on_each_worker(log, me(old_token))).items()} == dict.fromkeys(
        workers, 200
    )  # now in both workers' verified-token caches

    await swap({"k1.pem": k1, "k2.pem": k2, "active-kid": b"k1"})  # publish k2
    assert await jwks_kids() == {pid: {"k1", "k2"} for pid in workers}
    assert {kid_of(r.json()["access_token"]) for r in (await on_each_worker(log, login)).values()} == {"k1"}

    await swap({"k1.pem": k1, "k2.pem": k2, "active-kid": b"k2"})  # k2 signs
    signed = await on_each_worker(log, login)
    assert {kid_of(r.json()["access_token"]) for r in signed.values()} == {"k2"}
    new_token = next(iter(signed.values())).json()["access_token"]
    for token in (old_token, new_token):
        assert {r.status_code for r in (await on_each_worker(log, me(token))).values()} == {200}

    await swap({"k1.pub.pem": public_pem(k1), "k2.pem": k2, "active-kid": b"k2"})  # k1 retired
    assert await jwks_kids() == {pid: {"k1", "k2"} for pid in workers}
    assert {r.status_code for r in (await on_each_worker(log, me(old_token))).values()} == {200}

    # a broken update: refused, the last good keys stay, readiness says degraded (still ready)
    volume.update({"k1.pub.pem": public_pem(k1), "k2.pem": k2, "k3.pem": b"not a key", "active-kid": b"k2"})
    async with asyncio.timeout(30):
        while len(log.lines("service.keys", "AUTH_KEYS_DIR changed but does not load")) < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    ready = await on_each_worker(log, lambda: client.get("/health/readiness"))
    assert {(r.status_code, r.json()["status"], r.json()["checks"]["keys"]) for r in ready.values()} == {
        (200, "ready", "degraded")
    }
    assert await jwks_kids() == {pid: {"k1", "k2"} for pid in workers}
    assert {kid_of(r.json()["access_token"]) for r in (await on_each_worker(log, login)).values()} == {"k2"}
    for token in (old_token, new_token):
        assert {r.status_code for r in (await on_each_worker(log, me(token))).values()} == {200}
    samples = parse((await client.get("/metrics")).text)
    assert samples[("auth_keys_reloads_total", frozenset({("result", "refused")}))] == 2  # one per worker
    assert samples[("auth_keys_degraded", frozenset())] == 1

    await swap({"k2.pem": k2, "active-kid": b"k2"})  # k1 removed (and the broken entry gone)
    assert await jwks_kids() == {pid: {"k2"} for pid in workers}
    refused = await on_each_worker(log, me(old_token))  # it was in both caches: refused all the same
    assert {(r.status_code, r.json()["error"]) for r in refused.values()} == {(401, "invalid_token")}
    assert {r.status_code for r in (await on_each_worker(log, me(new_token))).values()} == {200}
    ready = await on_each_worker(log, lambda: client.get("/health/readiness"))
    assert {r.json()["checks"]["keys"] for r in ready.values()} == {"ok"}

    refusals = log.lines("service.keys", "AUTH_KEYS_DIR changed but does not load")
    assert sorted(r["process.pid"] for r in refusals) == sorted(workers)  # one line per worker, not per look
    answered = {int(r["process.pid"]) for r in log.lines("service.access", "")}
    assert answered == workers  # the same two processes answered from the first request to the last
