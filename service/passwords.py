"""bcrypt off the event loop: a bounded worker pool, admission control, timing equalisation.

bcrypt releases the GIL, so one thread per CPU the container may use hashes in parallel. Threads
beyond that only add queueing, and an unbounded queue turns an overload into timeouts for everyone:
past ``hash_queue_size`` waiting jobs a request is refused at once with 503 + Retry-After.

Timing: every password check costs one verify at the *current* cost per form of the password it
tries, whether the account is unknown (a dummy hash), its hash was made at a lower cost (padded up),
or the stored hash is unusable. Passwords are NFKC-normalised before bcrypt sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import threading
import time
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import bcrypt
from opentelemetry import trace

from service import errors, metrics

T = TypeVar("T")
tracer = trace.get_tracer("service.passwords")
# span attributes (seconds, as the semantic conventions measure durations)
COST, QUEUE_DEPTH = "password.bcrypt.cost", "password.queue.depth"
QUEUE_WAIT, BCRYPT_DURATION = "password.queue.wait_time", "password.bcrypt.duration"
NICENESS = 10  # how much lower than the event loop the bcrypt threads run
MAX_BYTES = 72  # bcrypt ignores everything past 72 bytes; we refuse instead of truncating
MIN_COST = 4  # bcrypt's lowest work factor
CGROUP = Path("/sys/fs/cgroup")


def available_cpus(cgroup: Path = CGROUP) -> int:
    """CPUs this process may use: cgroup v2 ``cpu.max``, then v1 CFS quota, then the affinity mask.

    A pod limited to 2 CPUs on a 64-core node must start 2 hash workers, not 64.
    """
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_v2_quota(cgroup) or _cgroup_v1_quota(cgroup)
    return max(1, min(affinity, math.ceil(quota))) if quota else max(1, affinity)


def _cgroup_v2_quota(root: Path) -> float | None:
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _cgroup_v1_quota(root: Path) -> float | None:
    for folder in (root / "cpu", root / "cpu,cpuacct"):
        try:
            quota = int((folder / "cpu.cfs_quota_us").read_text())
            period = int((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota / period if quota > 0 and period > 0 else None
    return None


def encode(password: str) -> bytes:
    """The bytes bcrypt sees: the NFKC form (NIST SP 800-63B) in UTF-8, refused past 72 bytes.

    NFKC makes a password typed as NFC, NFD or with compatibility characters (full-width digits from an
    input method) one password. The limit applies to these bytes, the ones bcrypt would truncate.
    """
    secret = unicodedata.normalize("NFKC", password).encode("utf-8")
    if len(secret) > MAX_BYTES:
        raise errors.PasswordTooLong()
    return secret


def forms(password: str) -> tuple[bytes, ...]:
    """What a verify tries, in order: the NFKC form, then the raw form if that differs.

    Hashes stored before passwords were normalised were made from the raw bytes, and nothing in a
    hash says which it was. The raw form is tried only when the typed password is not NFKC (and fits
    bcrypt), which depends on the input alone, so the unknown-user path can try exactly as many.
    """
    secret = encode(password)
    raw = password.encode("utf-8")
    return (secret,) if raw == secret or len(raw) > MAX_BYTES else (secret, raw)


def cost_of(stored: str) -> int | None:
    """The work factor of a ``$2b$12$…`` hash, or None if it is not a bcrypt hash."""
    parts = stored.split("$")
    return int(parts[2]) if len(parts) == 4 and parts[2].isdigit() else None


def _yield_to_the_event_loop() -> None:
    """Run this bcrypt thread at a lower priority than the event loop (Linux: niceness is per thread).

    With every core hashing during a login storm, the scheduler would otherwise share the CPU evenly
    between the bcrypt threads and the event loop, and cheap requests (`me`, refresh) would queue behind
    hashes. At nice +10 a runnable event loop gets ~90% of a contended core; idle, the hashes get it all.
    """
    with contextlib.suppress(OSError, AttributeError):  # no per-thread niceness: plain priority, as before
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + NICENESS)


@dataclasses.dataclass(frozen=True)
class Verified:
    ok: bool
    rehash: bool = False  # right password, but the stored hash is at another cost or of the raw form


def _check(tries: tuple[bytes, ...], candidate: bytes, pads: tuple[bytes, ...], dummy: bytes) -> int | None:
    """The index of the first of ``tries`` that matches ``candidate``, or None; runs in a hash worker.

    Each try costs one verify at the current cost: a hash made at a lower cost c is padded by hashing
    at c, c+1, ... current-1 (2^c + 2^c + 2^(c+1) + ... + 2^(current-1) = 2^current), and a hash bcrypt
    refuses is replaced by the dummy. One job, so one admission and one queue slot.
    """
    for index, secret in enumerate(tries):
        try:
            ok = bcrypt.checkpw(secret, candidate)
        except ValueError:  # a corrupt stored hash: a failed check that costs what a real one costs
            bcrypt.checkpw(secret, dummy)
            continue
        for salt in pads:
            bcrypt.hashpw(secret, salt)
        if ok:
            return index
    return None


class Hasher:
    def __init__(self, cost: int, workers: int, queue_size: int, max_wait: float = 1.0) -> None:
        self.cost = cost
        self.workers = workers
        self.queue_size = queue_size
        self.max_wait = max_wait  # refuse work that would wait longer than this for a worker
        self.in_flight = 0  # jobs admitted: running plus waiting (one event loop: no lock needed)
        self.work_in_flight = 0  # the same jobs in hashes at the current cost (a job may hold two)
        self.average_seconds = 0.25  # moving average of one hash at the current cost; measured by start()
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="bcrypt", initializer=_yield_to_the_event_loop
        )
        self._dummy: bytes | None = None
        # salts to pad a verify against a hash made at a lower cost (the result is thrown away)
        self._pads = {cost: bcrypt.gensalt(cost) for cost in range(MIN_COST, self.cost)}
        metrics.HASH_WORKERS.inc(workers)

    @property
    def waiting(self) -> int:
        return max(0, self.in_flight - self.workers)

    async def start(self) -> None:
        # A real hash at the configured cost: verifying against it costs what a real verify costs,
        # and timing it seeds the average that admission control estimates waits with.
        started = time.perf_counter()
        self._dummy = await self._run(bcrypt.hashpw, b"dummy password for unknown users", bcrypt.gensalt(self.cost))
        self.average_seconds = time.perf_counter() - started

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        metrics.HASH_WORKERS.dec(self.workers)

    async def hash(self, password: str) -> str:
        secret = encode(password)
        with tracer.start_as_current_span("password.hash", attributes={COST: self.cost}):
            hashed = await self._run(bcrypt.hashpw, secret, bcrypt.gensalt(self.cost))
        return hashed.decode("ascii")

    async def verify(self, password: str, stored: str | None) -> Verified:
        """Check a password; with ``stored=None`` (unknown user) spend the same time and say no.

        The time depends only on the typed password (one or two forms, see ``forms``) and the current
        cost, never on the account: not on whether it exists, nor on its hash's cost or algorithm.
        A hash made at a *higher* cost than the current one still costs its own, longer, time.
        """
        tries = forms(password)
        dummy = self._dummy
        if dummy is None:
            raise RuntimeError("Hasher.start() was not awaited")
        cost = cost_of(stored) if stored and stored.isascii() else None
        pads: tuple[bytes, ...] = ()
        if stored is None or cost is None or cost < MIN_COST:  # unknown user, or a hash bcrypt cannot read
            stored, cost, candidate = None, self.cost, dummy
        else:  # a hash made at a lower cost is padded up to the current one
            candidate, pads = stored.encode("ascii"), tuple(self._pads[c] for c in range(cost, self.cost))
        with tracer.start_as_current_span("password.verify", attributes={COST: cost}):
            matched = await self._run(_check, tries, candidate, pads, dummy, operation="verify", work=len(tries))
        if stored is None or matched is None:
            return Verified(ok=False)
        return Verified(ok=True, rehash=matched > 0 or self.needs_rehash(stored))

    def needs_rehash(self, stored: str) -> bool:
        return cost_of(stored) != self.cost

    def expected_wait(self) -> float:
        """Seconds a job submitted now would wait for a worker: the work ahead, drained by every worker."""
        ahead = self.work_in_flight + 1 - self.workers
        return max(0, ahead) * self.average_seconds / self.workers

    def admit(self) -> None:
        """Raise Overloaded if a hash job submitted now would be refused.

        Admission: a bounded queue, and no wait longer than max_wait. Beyond either, answer 503 now;
        an unbounded queue turns an overload into timeouts for everyone. Routes call this before their
        database read too, so a refused login costs neither a query nor a connection.
        """
        if self.in_flight >= self.workers + self.queue_size or self.expected_wait() > self.max_wait:
            metrics.ADMISSION_REJECTED.inc()
            raise errors.Overloaded(retry_after=self._retry_after())

    async def _run(self, fn: Callable[..., T], *args: object, operation: str = "hash", work: int = 1) -> T:
        """Run ``fn`` in the pool as one job worth ``work`` hashes at the current cost."""
        self.admit()  # again: the queue may have grown while the caller awaited its query
        span = trace.get_current_span()  # password.hash / password.verify
        span.set_attribute(QUEUE_DEPTH, self.waiting)  # jobs ahead of this one still waiting
        self._count_in_flight(+1)
        self.work_in_flight += work

        def timed() -> tuple[T, float, float]:
            begun = time.perf_counter()
            return fn(*args), begun, time.perf_counter()

        submitted = time.perf_counter()  # one monotonic clock for every thread
        try:
            result, begun, ended = await asyncio.get_running_loop().run_in_executor(self._executor, timed)
        finally:
            self._count_in_flight(-1)
            self.work_in_flight -= work
        self.average_seconds += 0.1 * ((ended - begun) / work - self.average_seconds)
        metrics.HASH_QUEUE_WAIT.labels(operation).observe(begun - submitted)
        metrics.HASH_DURATION.labels(operation).observe(ended - begun)
        span.set_attributes({QUEUE_WAIT: begun - submitted, BCRYPT_DURATION: ended - begun})
        return result

    def _count_in_flight(self, change: int) -> None:
        waiting = self.waiting
        self.in_flight += change
        metrics.HASH_IN_FLIGHT.inc(change)
        metrics.HASH_QUEUE_DEPTH.inc(self.waiting - waiting)

    def _retry_after(self) -> int:
        # time for the work ahead to drain through the workers
        return max(1, math.ceil(self.work_in_flight * self.average_seconds / self.workers))
