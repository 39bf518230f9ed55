"""One k6 run's raw points → figures per phase (throughput, percentiles, CPU and memory while it ran, the ratio
to its ceiling) and the extras a scenario's targets need (burst winners, admitted vs shed, memory growth)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from k6 import sampler, scripts, series, usage

# each script's phases (k6 scenarios) → the request name that phase measures
PHASES: dict[str, dict[str, str]] = {
    "register": {"register": "register"},
    "login": {"login": "login"},
    "me": {"me": "me"},
    "ceiling": {"ceiling": "me"},
    "refresh": {"chains": "refresh", "burst": "burst"},
    "mixed": {"reads_alone": "me", "storm_reads": "me", "storm_logins": "login", "naive_reads": "me",
              "naive_logins": "login"},
    "overload": {"overload": "login"},
    "storm": {"storm": "login"},
    "concurrent": {"registrations": "register", "logins": "login"},
    "soak": {"soak_logins": "login", "soak_reads": "me", "soak_refresh": "refresh"},
    "latency": {"probe_logins": "login", "probe_reads": "me"},
}
# phases whose throughput counts one status only: there a 503 (admission control) is an expected answer, which a
# client backs off from, but it is not a login or registration done
SUCCESS = {"overload": 200, "login": 200, "register": 201, "storm_logins": 200, "naive_logins": 200, "storm": 200,
           "registrations": 201, "logins": 200}
# phases that are one burst of simultaneous requests: measured whole, there is no steady part to trim to
BURSTS = {"burst", "registrations", "logins"}
# which ceiling a phase's throughput is a fraction of: bcrypt (hashes/s) or reads (bare Starlette requests/s)
CEILING_OF = {
    "register": "bcrypt", "login": "bcrypt", "storm_logins": "bcrypt", "naive_logins": "bcrypt", "overload": "bcrypt",
    "storm": "bcrypt", "soak_logins": "bcrypt",
    "me": "reads", "reads_alone": "reads", "storm_reads": "reads", "naive_reads": "reads", "chains": "reads",
    "soak_reads": "reads", "soak_refresh": "reads",
}
CUSTOM_METRICS = ("burst_wins", "burst_unexpected", "rotations", "timeouts", "server_errors", "unexpected_status",
                  "dropped_iterations", "shed", "missing_retry_after")
ADMITTED_BOUND_MS = 2000.0  # an admitted login or registration answers within this (issue 16), else it is refused


def analyse(script: str, label: str, params: dict[str, str], raw: Path, summary: Path, begun: float, ended: float,
            code: int, watcher: sampler.Sampler, ceilings: dict[str, Any]) -> dict[str, Any]:
    points = series.read(raw, CUSTOM_METRICS) if raw.exists() else series.Points([], [])
    run: dict[str, Any] = {"script": f"k6/scenarios/{script}.js", "label": label, "params": params,
                           "begun": begun, "ended": ended, "exit_code": code, "thresholds": scripts.thresholds(summary),
                           "phases": {}, "series": {}}
    measured = [request for request in points.requests if request.name != "setup_login"]
    origin = min((request.at for request in measured), default=begun)
    run["origin"] = origin
    for phase, name in PHASES[script].items():
        requests = [r for r in measured if r.scenario == phase and r.name == name]
        if not requests:
            continue
        span = series.window(requests) if phase not in BURSTS else (requests[0].at - 1, requests[-1].at + 1)
        figures = series.stats(requests, span, success=SUCCESS.get(phase))
        samples = watcher.between(*span)
        figures.update(window=[span[0] - origin, span[1] - origin], cpu=usage.cpu(samples), rss=usage.rss(samples),
                       metrics=usage.metrics(samples))
        kind = CEILING_OF.get(phase)
        ceiling = ceilings.get(kind or "", {}).get("rate") if kind else None
        throughput = float(figures["throughput"])  # type: ignore[arg-type]
        figures["ceiling_ratio"] = throughput / ceiling if ceiling else None
        figures.update(usage.cpu_cost(figures["cpu"], throughput, ceilings.get("bcrypt"), kind))  # type: ignore[arg-type]
        run["phases"][phase] = figures
        run["series"][phase] = series.per_second(requests, origin)
    run["extra"] = extra(script, points, measured, run, watcher)
    return run


def extra(script: str, points: series.Points, measured: list[series.Request], run: dict[str, Any],
          watcher: sampler.Sampler) -> dict[str, Any]:
    custom: Counter[str] = Counter()
    by_phase: dict[str, Counter[str]] = {}  # metric → phase → count
    for point in points.custom:
        custom[point.metric] += int(point.value)
        by_phase.setdefault(point.metric, Counter())[point.scenario] += int(point.value)
    found: dict[str, Any] = {"counters": dict(custom)}
    phases = run["phases"]
    if script == "refresh":
        rounds = int(run["params"].get("BURSTS", "5"))
        wins = Counter(point.tags.get("round", "?") for point in points.custom if point.metric == "burst_wins")
        found["burst_rounds"] = {str(r): wins.get(str(r), 0) for r in range(rounds)}
        found["double_rotations"] = sum(1 for count in wins.values() if count > 1)
        found["rounds_without_winner"] = sum(1 for r in range(rounds) if wins.get(str(r), 0) == 0)
        found["burst_vus"] = int(run["params"].get("BURST_VUS", "20"))
    if script in ("overload", "storm") and script in phases:
        # the whole phase, its start included: clients see the first seconds too
        requests = [r for r in measured if r.scenario == script]
        span = (min(r.at for r in requests), max(r.at for r in requests))
        found["admitted"] = series.by_status(requests, span, 200)
        found["shed"] = series.by_status(requests, span, 503)
        found["timeouts"] = sum(1 for r in requests if r.status == 0)
        found["other_5xx"] = sum(1 for r in requests if r.status >= 500 and r.status != 503)
        found["missing_retry_after"] = custom.get("missing_retry_after", 0)
        if script == "overload":
            found["offered_rate"] = float(run["params"].get("RATE", "0"))
        else:
            found["clients"] = int(run["params"].get("VUS", "200"))
    if script == "mixed":
        found["dropped"] = {phase: by_phase.get("dropped_iterations", Counter()).get(phase, 0)
                            for phase in ("reads_alone", "storm_reads", "naive_reads")}
        for storm in ("storm", "naive"):
            if {"reads_alone", f"{storm}_reads"} <= phases.keys():
                alone, during = phases["reads_alone"]["p99_ms"], phases[f"{storm}_reads"]["p99_ms"]
                found[f"{storm}_p99_ratio"] = during / alone if alone else None
    if script == "concurrent":
        found["bursts"] = {
            phase: burst_answers([r for r in measured if r.scenario == phase], SUCCESS[phase],
                          int(run["params"].get(offered, default)),
                          by_phase.get("missing_retry_after", Counter()).get(phase, 0))
            for phase, offered, default in (("registrations", "REGISTRATIONS", "100"), ("logins", "LOGINS", "1000"))
        }
    if script == "soak":
        found["rss_growth"] = usage.rss_growth(watcher.between(run["begun"], run["ended"]))
    return found


def burst_answers(requests: list[series.Request], success: int, offered: int,
                  missing_retry_after: int) -> dict[str, Any]:
    """How each of `offered` simultaneous requests was answered: admitted within the bound, admitted late,
    refused with 503 (+ Retry-After unless counted missing), timed out, something else, or not at all."""
    span = (-math.inf, math.inf)
    admitted = series.by_status(requests, span, success)
    within = sum(1 for r in requests if r.status == success and r.duration <= ADMITTED_BOUND_MS)
    refused = series.by_status(requests, span, 503)
    timeouts = sum(1 for r in requests if r.status == 0)
    other = len(requests) - int(admitted["count"]) - int(refused["count"]) - timeouts
    return {"offered": offered, "admitted": admitted, "within_bound": within, "late": int(admitted["count"]) - within,
            "refused": refused, "missing_retry_after": missing_retry_after, "timeouts": timeouts, "other": other,
            "unanswered": max(0, offered - len(requests))}
