"""The issue's targets: each measured against its ceiling in the same run, with MET/MISSED (None: not measured)."""

from __future__ import annotations

import math
from typing import Any


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and whether it was met (None: not measured)."""
    runs, ceilings_ = results["runs"], results["ceilings"]
    rows: list[dict[str, Any]] = []

    def add(target: str, measured: str, met: bool | None) -> None:
        rows.append({"target": target, "measured": measured, "met": met})

    def phase(run: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = runs.get(run, {}).get("phases", {}).get(name, {})
        return found

    bcrypt = ceilings_.get("bcrypt", {}).get("rate")
    reads = ceilings_.get("reads", {}).get("rate")
    for name in ("login", "register"):
        figures = phase(name, name)
        if figures and bcrypt:
            ratio = figures["throughput"] / bcrypt
            share = figures.get("hash_share")
            add(f"{name} throughput at saturation ≥ 90% of raw bcrypt",
                f"{figures['throughput']:.2f}/s of {bcrypt:.2f}/s = {ratio:.0%}"
                + (f"; bcrypt was {share:.0%} of the service's CPU" if share else ""), ratio >= 0.9)
    figures = phase("me", "me")
    if figures and reads:
        ratio = figures["throughput"] / reads
        bare = phase("ceiling", "ceiling").get("cpu_ms_per_request")
        own = figures.get("cpu_ms_per_request")
        add("me (warm cache) ≥ 60% of bare Starlette", f"{figures['throughput']:.0f}/s of {reads:.0f}/s = {ratio:.0%}"
            + (f"; CPU per request {own:.2f} ms vs {bare:.2f} ms bare = {bare / own:.0%}" if bare and own else ""),
            ratio >= 0.6)
    profiled = results.get("profile")
    if profiled and profiled["scenario"] == "me":
        shares = dict(profiled["concerns"])
        jwt = next((share for concern, share in shares.items() if concern.startswith("JWT")), 0.0)
        top_concern, top_share = max(shares.items(), key=lambda item: item[1]) if shares else ("?", 0.0)
        add("JWT verification does not dominate the me profile",
            f"JWT {jwt:.0%} of samples; largest: {top_concern.split(' (')[0]} {top_share:.0%}",
            jwt < 0.25 and not top_concern.startswith("JWT"))
    alone, storm = phase("mixed", "reads_alone"), phase("mixed", "storm_reads")
    if alone and storm:
        ratio = storm["p99_ms"] / alone["p99_ms"] if alone["p99_ms"] else math.inf
        errors = storm["errors"] + alone["errors"]
        dropped = runs["mixed"]["extra"].get("counters", {}).get("dropped_iterations", 0)
        add("reads' p99 during a login storm ≤ 2x without, no errors",
            f"p99 {storm['p99_ms']:.1f} ms vs {alone['p99_ms']:.1f} ms = {ratio:.1f}x, {errors} errors"
            + (f", {dropped} reads not sent (k6 ran out of VUs: the real p99 is worse)" if dropped else ""),
            ratio <= 2 and errors == 0 and not dropped)
    overload = runs.get("overload", {}).get("extra", {})
    if overload.get("admitted"):
        admitted, shed = overload["admitted"], overload["shed"]
        add("overload: admitted logins p99 < 2 s", f"p99 {admitted['p99_ms']:.0f} ms over {admitted['count']} logins",
            bool(admitted["p99_ms"] < 2000))
        add("overload: the rest answered 503 within 50 ms",
            f"{shed['count']} x 503, p99 {ms(shed['p99_ms'])}, max {ms(shed['max_ms'])}",
            bool(shed["count"] and shed["p99_ms"] < 50) if shed["count"] else None)
        add("overload: no timeouts, no 5xx besides 503",
            f"{overload['timeouts']} timeouts, {overload['other_5xx']} other 5xx",
            overload["timeouts"] == 0 and overload["other_5xx"] == 0)
    chains = phase("refresh", "chains")
    refresh = runs.get("refresh", {}).get("extra", {})
    if chains:
        add("refresh under load: zero errors, zero double rotations, throughput stated",
            f"{chains['throughput']:.0f} rotations/s, {chains['errors']} errors, "
            f"{refresh.get('double_rotations', '?')} double rotations in {len(refresh.get('burst_rounds', {}))} "
            f"bursts of {refresh.get('burst_vus', '?')}",
            chains["errors"] == 0 and refresh.get("double_rotations") == 0
            and refresh.get("rounds_without_winner") == 0)
    scale, users = results["meta"].get("scale_users"), results["meta"].get("users")
    if scale:
        for name, probe in (("login", "probe_logins"), ("me", "probe_reads")):
            small, large = phase(f"latency@{users}", probe), phase(f"latency@{scale}", probe)
            if small and large:
                change = large["p50_ms"] / small["p50_ms"] - 1
                cpu = (f"; CPU per request {small['stack_cpu_ms_per_request']:.2f} → "
                       f"{large['stack_cpu_ms_per_request']:.2f} ms" if small.get("stack_cpu_ms_per_request")
                       and large.get("stack_cpu_ms_per_request") else "")
                add(f"{name} p50 from {users:,} to {scale:,} users changes < 20% (light load)",
                    f"{small['p50_ms']:.1f} → {large['p50_ms']:.1f} ms ({change:+.0%}){cpu}", abs(change) < 0.2)
    growth = runs.get("soak", {}).get("extra", {}).get("rss_growth")
    if growth:
        add("soak: service RSS grows < 10% after warm-up",
            f"{growth['baseline_mib']:.0f} → {growth['final_mib']:.0f} MiB ({growth['growth']:+.1%}) over "
            f"{growth['seconds']:.0f}s", growth["growth"] < 0.1)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    if rows:
        print("\ntargets:")
    for row in rows:
        verdict = {True: "met   ", False: "MISSED", None: "n/a   "}[row["met"]]
        print(f"  {verdict} {row['target']}: {row['measured']}")


def ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"
