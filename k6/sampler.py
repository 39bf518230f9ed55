"""CPU and memory of the processes a benchmark started, from /proc; and the service's /metrics gauges.

A background thread takes one sample per interval. Processes are watched in named groups (a root process and
all its descendants: PostgreSQL's backends, uvicorn's workers), so a chart can say "postgres 80% of a CPU".
CPU is in percent of one CPU (two busy cores are 200%). The machine's total busy time is sampled too: what is
left after subtracting our groups is other work on the machine, the measure of how noisy a run was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
PROC = Path("/proc")
# /metrics families worth plotting: the hash queue, the database pool, in-flight work
INTERESTING = re.compile(r"queue|in_flight|inflight|waiting|waiters|pool|checked_?out|overflow", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Sample:
    at: float  # time.time()
    cpu: dict[str, float]  # group → percent of one CPU since the previous sample
    rss: dict[str, float]  # group → MiB resident
    processes: dict[str, int]  # group → number of processes
    machine_cpu: float  # every CPU's busy time, percent of one CPU (all processes on the machine)
    metrics: dict[str, float]  # /metrics family → value (summed over label sets)


@dataclasses.dataclass(frozen=True)
class _Process:
    pid: int
    ppid: int
    ticks: int  # user + system CPU since the process started
    rss_pages: int
    started: int  # clock ticks after boot


class Sampler:
    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.samples: list[Sample] = []
        self.metrics_status: str = "not scraped"  # what /metrics answered, for the report
        self._roots: dict[str, int] = {}
        self._metrics_url: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sampler", daemon=True)
        self._previous_ticks: dict[int, int] = {}
        self._previous_machine: tuple[int, int] | None = None
        self._previous_at = 0.0
        self._previous_uptime = 0  # clock ticks after boot, at the previous sample

    def watch(self, group: str, pid: int | None) -> None:
        """Sample `pid` and its descendants as `group` (until `forget`)."""
        if pid is not None:
            with self._lock:
                self._roots[group] = pid

    def forget(self, group: str) -> None:
        with self._lock:
            self._roots.pop(group, None)

    def scrape(self, url: str | None) -> None:
        """Scrape `url` (the service's /metrics) at each sample; None stops scraping."""
        with self._lock:
            self._metrics_url = url

    def start(self) -> None:
        self._take()  # primes the CPU counters: the first real sample covers one interval
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def between(self, start: float, end: float) -> list[Sample]:
        return [sample for sample in self.samples if start <= sample.at <= end]

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            sample = self._take()
            if sample is not None:
                self.samples.append(sample)

    def _take(self) -> Sample | None:
        at = time.time()
        with self._lock:
            roots = dict(self._roots)
            metrics_url = self._metrics_url
        uptime = _uptime_ticks()
        processes = _processes()
        machine = _machine_ticks()
        elapsed_ticks = (at - self._previous_at) * CLOCK_TICKS if self._previous_at else 0.0
        cpu: dict[str, float] = {}
        rss: dict[str, float] = {}
        counts: dict[str, int] = {}
        for group, members in _groups(roots, processes).items():
            used = 0
            for process in members:
                before = self._previous_ticks.get(process.pid)
                if before is None:  # born since the previous sample: all its CPU is new (k6 starting its VUs)
                    before = 0 if self._previous_uptime and process.started >= self._previous_uptime else process.ticks
                used += max(0, process.ticks - before)
            cpu[group] = 100.0 * used / elapsed_ticks if elapsed_ticks else 0.0
            rss[group] = sum(process.rss_pages for process in members) * PAGE_BYTES / 2**20
            counts[group] = len(members)
        machine_cpu = 0.0
        if self._previous_machine is not None and elapsed_ticks:
            busy = machine[0] - self._previous_machine[0]
            machine_cpu = 100.0 * busy / elapsed_ticks
        self._previous_ticks = {process.pid: process.ticks for process in processes.values()}
        self._previous_machine = machine
        self._previous_uptime = uptime
        first = not self._previous_at
        self._previous_at = at
        if first:
            return None
        return Sample(at, cpu, rss, counts, machine_cpu, self._metrics(metrics_url))

    def _metrics(self, url: str | None) -> dict[str, float]:
        if url is None:
            return {}
        try:
            with urllib.request.urlopen(url, timeout=min(0.5, self.interval)) as response:  # noqa: S310 - loopback
                text = response.read().decode()
        except urllib.error.HTTPError as error:
            self.metrics_status = f"/metrics answered {error.code}: not available in this build"
            if error.code == 404:
                self.scrape(None)  # no such route: stop asking
            return {}
        except (OSError, ValueError) as error:
            self.metrics_status = f"/metrics unreachable: {error}"
            return {}
        self.metrics_status = "scraped (one worker per scrape when uvicorn runs several)"
        return parse_metrics(text)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → {name: value summed over label sets}: the gauges INTERESTING names (no counters or
    histogram parts: a level over time is what the chart shows)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_and_labels, _, rest = line.rpartition("}") if "}" in line else line.partition(" ")
        name = name_and_labels.split("{", 1)[0].strip()
        if name.endswith(("_bucket", "_created", "_count", "_sum", "_total")) or not INTERESTING.search(name):
            continue
        with contextlib.suppress(ValueError, IndexError):
            values[name] = values.get(name, 0.0) + float(rest.split()[0])
    return values


def _processes() -> dict[int, _Process]:
    found: dict[int, _Process] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": comm may hold spaces and parens
        # proc(5): state is field 3, so field n is at n - 3: ppid 4, utime 14, stime 15, starttime 22, rss 24
        found[int(entry.name)] = _Process(int(entry.name), int(fields[1]), int(fields[11]) + int(fields[12]),
                                          int(fields[21]), int(fields[19]))
    return found


def _groups(roots: dict[str, int], processes: dict[int, _Process]) -> dict[str, list[_Process]]:
    """Each process in the group of its nearest watched ancestor (itself included)."""
    group_of_root = {pid: group for group, pid in roots.items()}
    members: dict[str, list[_Process]] = {group: [] for group in roots}
    for process in processes.values():
        pid, hops = process.pid, 0
        while pid not in group_of_root and pid in processes and hops < 64:
            pid, hops = processes[pid].ppid, hops + 1
        if pid in group_of_root:
            members[group_of_root[pid]].append(process)
    return members


def _uptime_ticks() -> int:
    return int(float((PROC / "uptime").read_text().split()[0]) * CLOCK_TICKS)


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) ticks of every CPU since boot, from /proc/stat."""
    fields = [int(value) for value in (PROC / "stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total
