"""The performance targets, each measured against its ceiling in the same run: met, MISSED, or n/a (not measured).

Ids follow issue 16's numbering (``0.goodput`` is part of its target 0); ``r1.…`` are the first round's targets that
still hold. Each target is one figure against one bound, so several runs (``k6/run --runs 3``) combine per target:
the median of the runs, or the worst run for targets stated "in every run" and for counts that must stay zero,
judged again against the bound.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from k6 import analysis, series

REFRESH_BASELINE = 219.0  # rotations/s through PgBouncer 1.18 in the first round's headline run (docs/capacity.md)


@dataclasses.dataclass(frozen=True)
class Measured:
    value: float | None  # None: not measured, `text` says why
    text: str


class View:
    """One run of the suite (one of --runs), as the measuring functions read it."""

    def __init__(self, results: dict[str, Any]) -> None:
        self.runs: dict[str, Any] = results["runs"]
        self.ceilings: dict[str, Any] = results["ceilings"]
        self.meta: dict[str, Any] = results["meta"]
        self.profile: dict[str, Any] | None = results.get("profile")

    def phase(self, run: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.runs.get(run, {}).get("phases", {}).get(name, {})
        return found

    def extras(self, run: str) -> dict[str, Any]:
        found: dict[str, Any] = self.runs.get(run, {}).get("extra", {})
        return found

    def param(self, run: str, name: str, default: str) -> str:
        return str(self.runs.get(run, {}).get("params", {}).get(name, default))

    @property
    def bcrypt(self) -> float | None:
        rate: float | None = self.ceilings.get("bcrypt", {}).get("rate")
        return rate

    @property
    def reads(self) -> float | None:
        rate: float | None = self.ceilings.get("reads", {}).get("rate")
        return rate if rate is not None and math.isfinite(rate) else None


Measure = Callable[[View], Measured | None]  # None: the row does not apply to this run (e.g. no --profile)


@dataclasses.dataclass(frozen=True)
class Target:
    id: str
    text: str
    script: str  # the k6 script whose run measures it: no row when it did not run
    bound: float
    higher: bool  # met when the value is ≥ bound (else ≤ bound)
    unit: str  # how the value reads: "%" a ratio, "x" a multiple, "ms", "" a count
    measure: Measure
    worst: bool = False  # several runs: judged on the worst run, not the median

    def met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return value >= self.bound if self.higher else value <= self.bound

    def show(self, value: float) -> str:
        if self.unit == "%":
            return f"{value:.1%}"
        if self.unit == "x":
            return f"{value:.2f}x"
        if self.unit == "ms":
            return ms(value)
        return f"{value:g}"


NOT_MEASURED = Measured(None, "not measured (the phase has no requests: see the run's log)")


# target 0: goodput under a retry storm (k6/scenarios/storm.js)

def storm_goodput(v: View) -> Measured:
    figures, extra = v.phase("storm", "storm"), v.extras("storm")
    if not figures or not v.bcrypt:
        return NOT_MEASURED
    ratio = figures["throughput"] / v.bcrypt
    answers = extra["admitted"]["count"] + extra["shed"]["count"]
    return Measured(ratio, f"{figures['throughput']:.2f} logins/s of {v.bcrypt:.2f}/s = {ratio:.0%}, "
                           f"{extra['clients']} clients ignoring Retry-After; {extra['shed']['count']:.0f} of "
                           f"{answers:.0f} answers were 503")


def storm_admitted(v: View) -> Measured:
    admitted = v.extras("storm").get("admitted")
    if not admitted:
        return NOT_MEASURED
    if not admitted["count"]:
        return Measured(None, "no login was admitted")
    return Measured(admitted["p99_ms"], f"p99 {ms(admitted['p99_ms'])} over {admitted['count']:.0f} logins "
                                        f"(max {ms(admitted['max_ms'])})")


def storm_refused(v: View) -> Measured:
    return _refusals(v.extras("storm"))


def storm_answered(v: View) -> Measured:
    return _answered(v.extras("storm"))


# target 1: `me` near the bare Starlette endpoint (k6/scenarios/me.js against k6/scenarios/ceiling.js)

def me_throughput(v: View) -> Measured:
    figures = v.phase("me", "me")
    if not figures or not v.reads:
        return NOT_MEASURED
    ratio = figures["throughput"] / v.reads
    return Measured(ratio, f"{figures['throughput']:.0f}/s of {v.reads:.0f}/s = {ratio:.0%}")


def me_cpu(v: View) -> Measured:
    own = v.phase("me", "me").get("cpu_ms_per_request")
    bare = v.phase("ceiling", "ceiling").get("cpu_ms_per_request")
    if not own or not bare:
        return Measured(None, "not measured (no CPU samples in the window)")
    return Measured(own / bare, f"{own:.3f} ms of service CPU per request vs {bare:.3f} ms bare = {own / bare:.2f}x")


def me_jwt(v: View) -> Measured | None:
    if not v.profile or v.profile["scenario"] != "me":
        return None  # only with --profile me
    shares = dict(v.profile["concerns"])
    jwt = next((share for concern, share in shares.items() if concern.startswith("JWT")), 0.0)
    top_concern, top_share = max(shares.items(), key=lambda item: item[1]) if shares else ("?", 0.0)
    return Measured(jwt, f"JWT {jwt:.0%} of samples; largest: {top_concern.split(' (')[0]} {top_share:.0%}")


# target 2: reads during a login storm (k6/scenarios/mixed.js)

def storm_reads_p99(storm: str) -> Measure:
    def measure(v: View) -> Measured:
        alone, during = v.phase("mixed", "reads_alone"), v.phase("mixed", f"{storm}_reads")
        if not alone or not during:
            return NOT_MEASURED
        ratio = during["p99_ms"] / alone["p99_ms"] if alone["p99_ms"] else math.inf
        return Measured(ratio, f"p99 {ms(during['p99_ms'])} vs {ms(alone['p99_ms'])} alone = {ratio:.1f}x at "
                               f"{v.param('mixed', 'READ_RATE', '100')} reads/s")
    return measure


def storm_reads_clean(storm: str) -> Measure:
    def measure(v: View) -> Measured:
        alone, during = v.phase("mixed", "reads_alone"), v.phase("mixed", f"{storm}_reads")
        if not alone or not during:
            return NOT_MEASURED
        dropped = v.extras("mixed").get("dropped", {})
        errors, lost = during["errors"], dropped.get(f"{storm}_reads", 0)
        return Measured(errors + lost, f"{errors} errors, {lost} reads not sent (k6 out of VUs: the real p99 would "
                                       f"be worse); alone: {alone['errors']} errors, "
                                       f"{dropped.get('reads_alone', 0)} not sent")
    return measure


def storm_logins(storm: str) -> Measure:
    def measure(v: View) -> Measured:
        figures = v.phase("mixed", f"{storm}_logins")
        if not figures or not v.bcrypt:
            return NOT_MEASURED
        ratio = figures["throughput"] / v.bcrypt
        clients = v.param("mixed", "STORM_VUS" if storm == "storm" else "NAIVE_VUS", "?")
        return Measured(ratio, f"{figures['throughput']:.2f} logins/s of {v.bcrypt:.2f}/s = {ratio:.0%} "
                               f"({clients} clients)")
    return measure


# target 3: login and register throughput (k6/scenarios/login.js, register.js)

def saturation(name: str) -> Measure:
    def measure(v: View) -> Measured:
        figures = v.phase(name, name)
        if not figures or not v.bcrypt:
            return NOT_MEASURED
        ratio = figures["throughput"] / v.bcrypt
        share = figures.get("hash_share")
        return Measured(ratio, f"{figures['throughput']:.2f}/s of {v.bcrypt:.2f}/s = {ratio:.0%}"
                               + (f"; bcrypt was {share:.0%} of the service's CPU" if share else ""))
    return measure


# target 4: refresh rotations through PgBouncer (k6/scenarios/refresh.js)

def refresh_rate(v: View) -> Measured:
    figures = v.phase("refresh", "chains")
    if not figures:
        return NOT_MEASURED
    baseline = float(v.meta.get("refresh_baseline") or REFRESH_BASELINE)
    if v.meta.get("database") == "direct":
        return Measured(None, f"{figures['throughput']:.0f}/s straight to PostgreSQL: the target is through "
                              "PgBouncer (--database pgbouncer)")
    ratio = figures["throughput"] / baseline
    return Measured(ratio, f"{figures['throughput']:.0f} rotations/s vs {baseline:g}/s = {ratio:.2f}x "
                           f"({v.param('refresh', 'VUS', '16')} chains, {figures['errors']} errors)")


# target 5: the seed's scenarios with figures

def concurrent(phase: str) -> Measure:
    def measure(v: View) -> Measured:
        burst = v.extras("concurrent").get("bursts", {}).get(phase)
        if not burst or not burst["offered"]:
            return NOT_MEASURED
        admitted, refused = burst["admitted"], burst["refused"]
        wrong = (burst["late"] + burst["missing_retry_after"] + burst["timeouts"] + burst["other"]
                 + burst["unanswered"])
        return Measured(wrong, f"{burst['offered']} at once: {admitted['count']:.0f} admitted (p99 "
                               f"{ms(admitted['p99_ms'])}, {burst['late']} over {ms(analysis.ADMITTED_BOUND_MS)}), "
                               f"{refused['count']:.0f} x 503 (p99 {ms(refused['p99_ms'])}, "
                               f"{burst['missing_retry_after']} without Retry-After), {burst['timeouts']} timed out, "
                               f"{burst['unanswered']} unanswered, {burst['other']} other")
    return measure


def highest_reads(v: View) -> Measured:
    figures = v.phase("me", "me")
    if not figures:
        return NOT_MEASURED
    return Measured(figures["errors"], f"{figures['throughput']:.0f} reads/s with {v.param('me', 'VUS', '32')} "
                                       f"clients, p50 {ms(figures['p50_ms'])}, p99 {ms(figures['p99_ms'])}, "
                                       f"{figures['errors']} errors")


def refresh_under_load(v: View) -> Measured:
    chains, extra = v.phase("refresh", "chains"), v.extras("refresh")
    if not chains:
        return NOT_MEASURED
    wrong = chains["errors"] + extra.get("double_rotations", 1) + extra.get("rounds_without_winner", 1)
    return Measured(wrong, f"{chains['throughput']:.0f} rotations/s, {chains['errors']} errors, "
                           f"{extra.get('double_rotations', '?')} double rotations and "
                           f"{extra.get('rounds_without_winner', '?')} rounds without a winner in "
                           f"{len(extra.get('burst_rounds', {}))} bursts of {extra.get('burst_vus', '?')}")


# the first round's

def overload_admitted(v: View) -> Measured:
    admitted = v.extras("overload").get("admitted")
    if not admitted:
        return NOT_MEASURED
    if not admitted["count"]:
        return Measured(None, "no login was admitted")
    return Measured(admitted["p99_ms"], f"p99 {ms(admitted['p99_ms'])} over {admitted['count']:.0f} logins at "
                                        f"{v.extras('overload')['offered_rate']:.0f}/s offered")


def overload_refused(v: View) -> Measured:
    return _refusals(v.extras("overload"))


def overload_answered(v: View) -> Measured:
    return _answered(v.extras("overload"))


def scale(name: str, probe: str) -> Measure:
    def measure(v: View) -> Measured | None:
        users, grown = v.meta.get("users"), v.meta.get("scale_users")
        if not grown:
            return None  # only with --scale-users
        small, large = v.phase(f"latency@{users}", probe), v.phase(f"latency@{grown}", probe)
        if not small or not large:
            return NOT_MEASURED
        change = large["p50_ms"] / small["p50_ms"] - 1
        cpu = (f"; CPU per request {small['stack_cpu_ms_per_request']:.2f} → "
               f"{large['stack_cpu_ms_per_request']:.2f} ms" if small.get("stack_cpu_ms_per_request")
               and large.get("stack_cpu_ms_per_request") else "")
        return Measured(abs(change), f"{ms(small['p50_ms'])} → {ms(large['p50_ms'])} ({change:+.0%}) from "
                                     f"{users:,} to {grown:,} users{cpu}")
    return measure


def soak_growth(v: View) -> Measured:
    growth = v.extras("soak").get("rss_growth")
    if not growth:
        return Measured(None, "too short to tell (--soak-duration)")
    return Measured(growth["growth"], f"{growth['baseline_mib']:.0f} → {growth['final_mib']:.0f} MiB "
                                      f"({growth['growth']:+.1%}) over {growth['seconds']:.0f}s")


def _refusals(extra: dict[str, Any]) -> Measured:
    shed = extra.get("shed")
    if not shed:
        return NOT_MEASURED
    if not shed["count"]:
        return Measured(None, "nothing was refused")
    return Measured(shed["p99_ms"], f"{shed['count']:.0f} x 503, p50 {ms(shed['p50_ms'])}, p99 "
                                    f"{ms(shed['p99_ms'])}, max {ms(shed['max_ms'])}")


def _answered(extra: dict[str, Any]) -> Measured:
    if "timeouts" not in extra:
        return NOT_MEASURED
    wrong = extra["timeouts"] + extra["other_5xx"] + extra.get("missing_retry_after", 0)
    return Measured(wrong, f"{extra['timeouts']} timeouts, {extra['other_5xx']} other 5xx, "
                           f"{extra.get('missing_retry_after', 0)} 503s without Retry-After")


TARGETS = (
    Target("0.goodput", "retry storm (clients ignore Retry-After): logins/s ≥ 90% of raw bcrypt", "storm",
           0.9, True, "%", storm_goodput),
    Target("0.admitted", "retry storm: admitted logins p99 ≤ 2 s", "storm", 2000, False, "ms", storm_admitted),
    Target("0.refused", "retry storm: refusals fast, 503 p99 ≤ 50 ms", "storm", 50, False, "ms", storm_refused),
    Target("0.answered", "retry storm: no timeouts, no 5xx but 503, every 503 with Retry-After", "storm", 0, False,
           "", storm_answered, worst=True),
    Target("1.throughput", "me (warm cache) ≥ 60% of the bare Starlette endpoint's throughput", "me", 0.6, True, "%",
           me_throughput),
    Target("1.cpu", "me CPU per request ≤ 2x the bare endpoint's", "me", 2.0, False, "x", me_cpu),
    Target("2.honour.p99", "reads' p99 during a login storm (clients honour Retry-After) ≤ 2x without", "mixed",
           2.0, False, "x", storm_reads_p99("storm")),
    Target("2.honour.clean", "reads during that storm: 0 errors, 0 dropped", "mixed", 0, False, "",
           storm_reads_clean("storm"), worst=True),
    Target("2.honour.logins", "logins/s during that storm ≥ 90% of raw bcrypt", "mixed", 0.9, True, "%",
           storm_logins("storm")),
    Target("2.naive.p99", "reads' p99 during a retry storm (clients ignore Retry-After) ≤ 2x without", "mixed",
           2.0, False, "x", storm_reads_p99("naive")),
    Target("2.naive.clean", "reads during that storm: 0 errors, 0 dropped", "mixed", 0, False, "",
           storm_reads_clean("naive"), worst=True),
    Target("2.naive.logins", "logins/s during that storm ≥ 90% of raw bcrypt", "mixed", 0.9, True, "%",
           storm_logins("naive")),
    Target("3.login", "login throughput at saturation ≥ 95% of raw bcrypt, every run", "login", 0.95, True, "%",
           saturation("login"), worst=True),
    Target("3.register", "register throughput at saturation ≥ 95% of raw bcrypt, every run", "register", 0.95, True,
           "%", saturation("register"), worst=True),
    Target("4.refresh", "refresh through PgBouncer ≥ 1.5x the recorded baseline", "refresh", 1.5, True, "x",
           refresh_rate),
    Target("5.registrations", "concurrent registrations all answered: 201 within 2 s or 503 + Retry-After",
           "concurrent", 0, False, "", concurrent("registrations"), worst=True),
    Target("5.logins", "concurrent logins all answered: 200 within 2 s or 503 + Retry-After", "concurrent", 0, False,
           "", concurrent("logins"), worst=True),
    Target("5.reads", "authenticated reads at the highest rate k6 reaches here (me), 0 errors", "me", 0, False, "",
           highest_reads, worst=True),
    Target("5.refresh", "refresh under load: 0 errors, exactly one winner per burst of concurrent refreshes",
           "refresh", 0, False, "", refresh_under_load, worst=True),
    Target("r1.jwt", "JWT verification does not dominate the me profile (< 25% of samples)", "me", 0.25, False, "%",
           me_jwt),
    Target("r1.overload.admitted", "overload: admitted logins p99 ≤ 2 s", "overload", 2000, False, "ms",
           overload_admitted),
    Target("r1.overload.refused", "overload: refusals fast, 503 p99 ≤ 50 ms", "overload", 50, False, "ms",
           overload_refused),
    Target("r1.overload.answered", "overload: no timeouts, no 5xx but 503, every 503 with Retry-After", "overload",
           0, False, "", overload_answered, worst=True),
    Target("r1.scale.login", "login p50 changes < 20% from the seeded users to --scale-users (light load)",
           "latency", 0.2, False, "%", scale("login", "probe_logins")),
    Target("r1.scale.me", "me p50 changes < 20% from the seeded users to --scale-users (light load)", "latency", 0.2,
           False, "%", scale("me", "probe_reads")),
    Target("r1.soak", "soak: service RSS grows < 10% after warm-up", "soak", 0.1, False, "%", soak_growth),
)
BY_ID = {target.id: target for target in TARGETS}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """A row per target whose script ran: the figure, the verdict against the bound, and how it was measured."""
    view = View(results)
    ran = {run["script"].rsplit("/", 1)[-1].removesuffix(".js") for run in view.runs.values()}
    rows: list[dict[str, Any]] = []
    for target in TARGETS:
        if target.script not in ran:
            continue
        measured = target.measure(view)
        if measured is None:
            continue
        rows.append({"id": target.id, "target": target.text, "value": measured.value,
                     "met": target.met(measured.value), "measured": measured.text})
    return rows


def combine(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Rows of several runs → one row per target: the median (or worst) figure, judged again, with every run's."""
    if len(runs) == 1:
        return runs[0]
    order = list(dict.fromkeys(row["id"] for rows in runs for row in rows))
    combined = []
    for target_id in order:
        target = BY_ID[target_id]
        found = [(index, row) for index, rows in enumerate(runs, 1) for row in rows if row["id"] == target_id]
        values = [row["value"] for _, row in found if row["value"] is not None]
        if not values:
            combined.append({"id": target_id, "target": target.text, "value": None, "met": None,
                             "measured": "; ".join(f"run {index}: {row['measured']}" for index, row in found),
                             "runs": [None for _ in found]})
            continue
        if target.worst:
            value, how = (min(values) if target.higher else max(values)), "worst"
        else:
            value, how = series.percentile(values, 50), "median"
        index, closest = min(found, key=lambda item: abs(item[1]["value"] - value)
                             if item[1]["value"] is not None else math.inf)
        every = ", ".join("—" if row["value"] is None else target.show(row["value"]) for _, row in found)
        combined.append({"id": target_id, "target": target.text, "value": value, "met": target.met(value),
                         "measured": f"{how} {target.show(value)} of {len(found)} runs ({every}); run {index}: "
                                     f"{closest['measured']}",
                         "runs": [row["value"] for _, row in found]})
    return combined


def print_table(rows: list[dict[str, Any]], smoke: bool = False) -> None:
    if not rows:
        return
    print("\ntargets" + (" (a smoke run: tiny load at bcrypt cost 4, so the verdicts mean nothing):" if smoke
                         else " (issue 16's numbering; r1: the first round's):"))
    for row in rows:
        verdict = {True: "met   ", False: "MISSED", None: "n/a   "}[row["met"]]
        print(f"  {verdict} {row['id']:22} {row['target']}: {row['measured']}")


def ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "—"
    if value >= 10_000:
        return f"{value / 1000:.1f} s"
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"
