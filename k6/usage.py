"""What the sampled CPU and memory say about a phase: averages per process group, CPU per request, memory growth
over a soak, and how much CPU processes that are not ours took (the noise of a run)."""

from __future__ import annotations

from typing import Any

from k6 import sampler, series

NOISY = 15.0  # % of one CPU taken by other processes, on average, above which a run's ratios are depressed


def cpu(samples: list[sampler.Sample]) -> dict[str, float]:
    """Average CPU (% of one CPU) per group, and of the whole machine as `machine`."""
    if not samples:
        return {}
    groups = {group for s in samples for group in s.cpu}
    averages = {group: sum(s.cpu.get(group, 0.0) for s in samples) / len(samples) for group in groups}
    averages["machine"] = sum(s.machine_cpu for s in samples) / len(samples)
    return averages


def rss(samples: list[sampler.Sample]) -> dict[str, float]:
    """The largest resident memory (MiB) per group."""
    groups = {group for s in samples for group in s.rss}
    return {group: max(s.rss.get(group, 0.0) for s in samples) for group in groups}


def metrics(samples: list[sampler.Sample]) -> dict[str, float]:
    """The largest value of each /metrics gauge."""
    names = {name for s in samples for name in s.metrics}
    return {name: max(s.metrics.get(name, 0.0) for s in samples) for name in names}


def cpu_cost(cpu: dict[str, float], throughput: float, bcrypt: dict[str, Any] | None,
             kind: str | None) -> dict[str, float | None]:
    """CPU milliseconds per answered request: these do not depend on how much CPU other processes took.

    For hashing phases also `hash_share`: the part of the service's CPU that went to bcrypt (hashes done x
    CPU per hash ÷ CPU used); 1.0 would mean everything else (HTTP, JSON, database, tokens) were free.
    """
    server = cpu.get("service", cpu.get("bare"))
    if not throughput or server is None:
        return {"cpu_ms_per_request": None, "stack_cpu_ms_per_request": None, "hash_share": None}
    stack = server + sum(cpu.get(group, 0.0) for group in ("postgres", "pgbouncer", "redis"))
    cost = 10 * server / throughput  # % of one CPU → CPU ms per second, per answer per second
    share = None
    if kind == "bcrypt" and bcrypt and server:
        share = throughput * bcrypt["cpu_ms_per_hash"] / (10 * server)
    return {"cpu_ms_per_request": cost, "stack_cpu_ms_per_request": 10 * stack / throughput, "hash_share": share}


def rss_growth(samples: list[sampler.Sample], group: str = "service") -> dict[str, float] | None:
    """Resident memory after warm-up against the end of the run; None when the run is too short to tell."""
    points = [(s.at, s.rss[group]) for s in samples if s.rss.get(group)]
    if len(points) < 6:
        return None
    start, end = points[0][0], points[-1][0]
    warm = start + max(10.0, 0.2 * (end - start))  # after warm-up: caches, pools and allocator arenas filled
    tail = max(5.0, 0.1 * (end - start))
    if end - warm < 2 * tail:
        return None  # too short to say anything about growth (smoke runs)
    after = [rss for at, rss in points if warm <= at <= warm + tail] or [points[len(points) // 2][1]]
    final = [rss for at, rss in points if at >= end - tail]
    baseline, last = series.percentile(after, 50), series.percentile(final, 50)
    return {"baseline_mib": baseline, "final_mib": last, "growth": last / baseline - 1 if baseline else 0.0,
            "seconds": end - warm, "max_mib": max(rss for _, rss in points)}


def noise(results: dict[str, Any], samples: list[sampler.Sample]) -> dict[str, Any]:
    """CPU used on the machine by processes that are not ours, during the measured phases."""
    spans = [(run["origin"] + figures["window"][0], run["origin"] + figures["window"][1])
             for run in results["runs"].values() for figures in run["phases"].values()]
    inside = [s for s in samples if any(start <= s.at <= end for start, end in spans)]
    foreign = [max(0.0, s.machine_cpu - sum(s.cpu.values())) for s in inside]
    average = sum(foreign) / len(foreign) if foreign else 0.0
    peak = max(foreign, default=0.0)
    noisy = average > NOISY
    return {"foreign_cpu_avg": average, "foreign_cpu_max": peak, "samples": len(foreign), "noisy": noisy,
            "verdict": (f"other processes used {average:.0f}% of a CPU on average (peak {peak:.0f}%) during the "
                        "measured phases" + ("; figures are depressed by that noise" if noisy else ": quiet"))}
