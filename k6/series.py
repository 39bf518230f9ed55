"""k6's CSV output → per-request records, percentiles, per-second series and steady-state throughput.

Every figure in the report is computed here from the raw points (not from k6's summary), so percentiles are
exact, split by k6 scenario, request name and status, and measured over the steady window only.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

PERCENTILES = (50, 95, 99)


@dataclasses.dataclass(frozen=True)
class Request:
    at: float  # seconds since the epoch, when the response ended
    scenario: str  # the k6 scenario (a phase: `me`, `storm_reads`…)
    name: str  # the operation (`login`, `me`, `refresh`…)
    status: int  # 0: no response (timeout, connection refused)
    duration: float  # milliseconds
    expected: bool  # an answer the scenario expects (k6's expected_response tag)


@dataclasses.dataclass(frozen=True)
class Point:
    """A custom k6 metric's sample (burst_wins, timeouts…) with its tags."""

    at: float
    metric: str
    value: float
    tags: dict[str, str]
    scenario: str = ""  # the k6 scenario (phase) it was counted in, e.g. for dropped_iterations


@dataclasses.dataclass
class Points:
    requests: list[Request]
    custom: list[Point]


def read(path: Path, custom: Iterable[str] = ()) -> Points:
    """Reads a k6 CSV written with K6_CSV_TIME_FORMAT=unix_milli, keeping requests and the `custom` metrics."""
    wanted = set(custom)
    requests: list[Request] = []
    points: list[Point] = []
    with path.open(newline="") as file:
        for row in csv.DictReader(file):
            metric = row["metric_name"]
            if metric == "http_req_duration":
                requests.append(Request(
                    at=int(row["timestamp"]) / 1000, scenario=row.get("scenario") or "", name=row.get("name") or "",
                    status=int(row.get("status") or 0), duration=float(row["metric_value"]),
                    expected=row.get("expected_response") == "true",
                ))
            elif metric in wanted:
                tags = dict(part.split("=", 1) for part in (row.get("extra_tags") or "").split("&") if "=" in part)
                points.append(Point(int(row["timestamp"]) / 1000, metric, float(row["metric_value"]), tags,
                                    row.get("scenario") or ""))
    return Points(requests, points)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation between closest ranks (numpy's default); NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def window(requests: Sequence[Request], *, warmup: float | None = None) -> tuple[float, float]:
    """The steady part of a phase: without its first seconds (pools filling, VUs starting) and its last second
    (VUs stopping). `warmup` defaults to 10% of the phase, at least one second and at most five."""
    if not requests:
        return (0.0, 0.0)
    first = min(request.at for request in requests)
    last = max(request.at for request in requests)
    skip = min(5.0, max(1.0, 0.1 * (last - first))) if warmup is None else warmup
    start, end = first + skip, last - 1.0
    if end - start < 1.0:  # too short to trim (smoke runs): keep it all
        return (first, max(last, first + 1e-3))
    return (start, end)


def stats(requests: Sequence[Request], span: tuple[float, float], success: int | None = None) -> dict[str, object]:
    """Counts, throughput and latency percentiles of `requests` inside `span`.

    Throughput and percentiles are over expected answers, or over answers with status `success` when given
    (overload expects 503s too, but only its 200s are logins done); errors are the unexpected answers.
    """
    inside = [request for request in requests if span[0] <= request.at <= span[1]]
    good = [r.duration for r in inside if (r.status == success if success is not None else r.expected)]
    errors = sum(1 for request in inside if not request.expected)
    seconds = max(span[1] - span[0], 1e-9)
    statuses = Counter(str(request.status) for request in inside)
    result: dict[str, object] = {
        "requests": len(inside),
        "ok": len(good),
        "errors": errors,
        "error_rate": errors / len(inside) if inside else 0.0,
        "statuses": dict(sorted(statuses.items())),
        "seconds": round(seconds, 3),
        "throughput": len(good) / seconds,  # expected answers per second
    }
    for q in PERCENTILES:
        result[f"p{q}_ms"] = percentile(good, q)
    result["max_ms"] = max(good) if good else math.nan
    return result


def by_status(requests: Sequence[Request], span: tuple[float, float], status: int) -> dict[str, float]:
    durations = [r.duration for r in requests if r.status == status and span[0] <= r.at <= span[1]]
    return {"count": len(durations), "p50_ms": percentile(durations, 50), "p99_ms": percentile(durations, 99),
            "max_ms": max(durations) if durations else math.nan}


def per_second(requests: Sequence[Request], origin: float) -> dict[str, list[tuple[float, float]]]:
    """Series over time (seconds since `origin`): p50/p95/p99 latency of expected answers, ok/s and errors/s."""
    buckets: dict[int, list[Request]] = defaultdict(list)
    for request in requests:
        buckets[math.floor(request.at - origin)].append(request)
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for second in sorted(buckets):
        bucket = buckets[second]
        good = [request.duration for request in bucket if request.expected]
        t = second + 0.5
        series["ok/s"].append((t, float(len(good))))
        series["errors/s"].append((t, float(len(bucket) - len(good))))
        if good:
            for q in PERCENTILES:
                series[f"p{q}"].append((t, percentile(good, q)))
    return dict(series)
