"""bcrypt off the event loop: a bounded worker pool, admission control, timing equalisation.

bcrypt releases the GIL, so one thread per CPU the container may use hashes in parallel. Threads
beyond that only add queueing, and an unbounded queue turns an overload into timeouts for everyone:
past ``hash_queue_size`` waiting jobs a request is refused at once with 503 + Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
import time
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
    secret = password.encode("utf-8")
    if len(secret) > MAX_BYTES:
        raise errors.PasswordTooLong()
    return secret


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


class Hasher:
    def __init__(self, cost: int, workers: int, queue_size: int, max_wait: float = 1.0) -> None:
        self.cost = cost
        self.workers = workers
        self.queue_size = queue_size
        self.max_wait = max_wait  # refuse work that would wait longer than this for a worker
        self.in_flight = 0  # jobs admitted: running plus waiting (one event loop: no lock needed)
        self.average_seconds = 0.25  # moving average of one hash; measured by start()
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="bcrypt", initializer=_yield_to_the_event_loop
        )
        self._dummy: bytes | None = None
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

    async def verify(self, password: str, stored: str | None) -> bool:
        """Check a password; with ``stored=None`` (unknown user) spend the same time and say no."""
        secret = encode(password)
        if self._dummy is None:
            raise RuntimeError("Hasher.start() was not awaited")
        candidate = stored.encode("ascii") if stored else self._dummy
        cost = cost_of(stored) if stored else self.cost
        with tracer.start_as_current_span("password.verify", attributes={COST: cost} if cost else None):
            try:
                ok = await self._run(bcrypt.checkpw, secret, candidate, operation="verify")
            except ValueError:  # a corrupt stored hash: a failed check, not a 500
                return False
        return ok and stored is not None

    def needs_rehash(self, stored: str) -> bool:
        return cost_of(stored) != self.cost

    def expected_wait(self) -> float:
        """Seconds a job submitted now would wait for a worker: the jobs ahead, drained by every worker."""
        ahead = self.in_flight + 1 - self.workers
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

    async def _run(self, fn: Callable[..., T], *args: object, operation: str = "hash") -> T:
        self.admit()  # again: the queue may have grown while the caller awaited its query
        span = trace.get_current_span()  # password.hash / password.verify
        span.set_attribute(QUEUE_DEPTH, self.waiting)  # jobs ahead of this one still waiting
        self._count_in_flight(+1)

        def timed() -> tuple[T, float, float]:
            begun = time.perf_counter()
            return fn(*args), begun, time.perf_counter()

        submitted = time.perf_counter()  # one monotonic clock for every thread
        try:
            result, begun, ended = await asyncio.get_running_loop().run_in_executor(self._executor, timed)
        finally:
            self._count_in_flight(-1)
        self.average_seconds += 0.1 * ((ended - begun) - self.average_seconds)
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
        # time for the jobs ahead to drain through the workers
        return max(1, math.ceil(self.in_flight * self.average_seconds / self.workers))
