"""results.json → one self-contained HTML page: targets first, then each scenario with its charts.

Charts are inline SVG drawn here (no plotting library to install, nothing fetched when the page opens): latency
percentiles and throughput per second, CPU and resident memory of every process group, and the service's
queue and pool gauges when its /metrics exports them. Hover a line for its name.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

Series = list[tuple[float, float]]
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f", "#64748b")
GROUP_ORDER = ("service", "bare", "postgres", "pgbouncer", "redis", "k6", "runner", "other")
STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1180px;color:#0f172a;
padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 8px;border-bottom:1px solid #e2e8f0;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}.muted{color:#64748b}
table{border-collapse:collapse;margin:6px 0 12px;font-variant-numeric:tabular-nums}
td,th{padding:3px 10px;border-bottom:1px solid #f1f5f9;text-align:left;vertical-align:top}
th{font-weight:600;background:#f8fafc}td.n{text-align:right}
.met{color:#15803d;font-weight:600}.missed{color:#b91c1c;font-weight:600}.na{color:#64748b}
.charts{display:flex;flex-wrap:wrap;gap:8px}.charts svg{border:1px solid #e2e8f0;border-radius:6px;background:#fff}
.box{padding:8px 12px;border-radius:6px;margin:8px 0}.bad{background:#fef2f2;border:1px solid #fecaca}
.warn{background:#fffbeb;border:1px solid #fde68a}.good{background:#f0fdf4;border:1px solid #bbf7d0}
code{background:#f1f5f9;padding:1px 4px;border-radius:3px;font-size:12.5px}details{margin:6px 0}
"""


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    parts = [
        "<!doctype html><html lang=en><meta charset=utf-8>",
        f"<title>authsvc benchmark {_e(meta.get('started', ''))}</title><style>{STYLE}</style><body>",
        f"<h1>authsvc benchmark</h1><div class=muted>{_e(meta.get('started', ''))} · commit "
        f"{_e(meta.get('commit', '?'))} · service source {_e(meta.get('service_digest', '?'))} · "
        f"<code>{_e(meta.get('command', ''))}</code></div>",
        _failures(results.get("failures", [])),
        _setup(results),
        _targets(results.get("targets", [])),
        _ceilings(results),
        _overview(results),
        *(_run(results, label, run) for label, run in results["runs"].items()
          if run["script"] != "k6/scenarios/ceiling.js"),
        _profile(results.get("profile")),
        "</body></html>",
    ]
    return "\n".join(part for part in parts if part)


# sections

def _failures(failures: Sequence[str]) -> str:
    if not failures:
        return ""
    items = "".join(f"<li>{_e(failure)}</li>" for failure in failures)
    return f"<div class='box bad'><b>Problems in this run</b><ul>{items}</ul></div>"


def _setup(results: dict[str, Any]) -> str:
    meta, noise = results["meta"], results.get("noise", {})
    rows = [
        ("machine", f"{meta.get('cpus')} CPUs ({meta.get('available_cpus')} available to this process); load "
                    f"average before {_loads(meta.get('loadavg_before'))}, after {_loads(meta.get('loadavg_after'))}"),
        ("service", f"authsvc serve under uvicorn, {meta.get('workers')} workers, bcrypt cost "
                    f"{meta.get('bcrypt_cost')}, "
                    + ("PostgreSQL straight (statement cache on)" if meta.get("database") == "direct"
                       else "PostgreSQL through PgBouncer (transaction pooling)") + ", Redis, rate limits off"),
        ("service settings", ", ".join(f"{k}={v}" for k, v in sorted(meta.get("service_settings", {}).items()))),
        ("users", f"{meta.get('users'):,} seeded"
                  + (f", then {meta['scale_users']:,}" if meta.get("scale_users") else "")
                  + f" (COPY: {', '.join(f'{n} in {s}s' for n, s in meta.get('seed_seconds', {}).items())})"),
        ("load", f"{meta.get('vus')} VUs for closed-model scenarios, {meta.get('duration')} per phase, soak "
                 f"{meta.get('soak_duration')}" + (" — smoke run" if meta.get("smoke") else "")
                 + (f"; --set {' '.join(meta['settings'])}" if meta.get("settings") and not meta.get("smoke") else "")),
        ("tools", f"{meta.get('k6', '')} · Python {meta.get('python', '')}"),
        ("/metrics", meta.get("metrics_endpoint", "")),
    ]
    table = "".join(f"<tr><th>{_e(k)}</th><td>{_e(str(v))}</td></tr>" for k, v in rows)
    tone = "warn" if noise.get("noisy") else "good"
    return (f"<h2>Setup</h2><table>{table}</table>"
            f"<div class='box {tone}'><b>Noise:</b> {_e(noise.get('verdict', 'not measured'))}</div>")


def _targets(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return ""
    body = "".join(
        f"<tr><td class={ {True: 'met', False: 'missed', None: 'na'}[row['met']] }>"
        f"{ {True: 'met', False: 'missed', None: 'n/a'}[row['met']] }</td><td>{_e(row.get('id', ''))}</td>"
        f"<td>{_e(row['target'])}</td><td>{_e(row['measured'])}</td></tr>"
        for row in rows
    )
    return (f"<h2>Targets</h2><p class=muted>Ids follow issue 16's targets; r1: the first round's. Each is one figure "
            f"against one bound; over several runs, the median (or the worst run, where a target holds for every run)."
            f"</p><table><tr><th></th><th>id</th><th>target</th><th>measured</th></tr>{body}</table>")


def _ceilings(results: dict[str, Any]) -> str:
    repetitions = results.get("repetitions") or [{"ceilings": results.get("ceilings", {})}]
    rows, charts = [], []
    for index, repetition in enumerate(repetitions, 1):
        bcrypt, reads = repetition["ceilings"].get("bcrypt"), repetition["ceilings"].get("reads")
        which = f" · run {index}" if len(repetitions) > 1 else ""
        if bcrypt:
            rows.append(f"<tr><th>raw bcrypt (login and register ceiling){which}</th><td class=n>{bcrypt['rate']:.2f} "
                        f"hashes/s</td><td>cost {bcrypt['cost']}, {bcrypt['threads']} threads: "
                        f"{bcrypt['cpu_ms_per_hash']:.0f} ms of CPU per hash ({bcrypt['hashes']} hashes in "
                        f"{bcrypt['seconds']}s = {bcrypt['wall_rate']:.2f}/s by the clock, lower when other processes "
                        "took CPU)</td></tr>")
        if reads and reads.get("rate") is not None:
            rows.append(f"<tr><th>bare Starlette endpoint (reads ceiling){which}</th><td class=n>{reads['rate']:.0f} "
                        f"requests/s</td><td>constant JSON under the same uvicorn settings, {reads['vus']} VUs, p50 "
                        f"{_ms(reads.get('p50_ms'))}, p99 {_ms(reads.get('p99_ms'))}</td></tr>")
            run = results["runs"].get(reads.get("run", "ceiling"))
            if run:
                charts.append(_charts(results, run))
    if not rows:
        return ""
    return f"<h2>Ceilings, measured in this run</h2><table>{''.join(rows)}</table>{''.join(charts)}"


def _overview(results: dict[str, Any]) -> str:
    header = ("<tr><th>run</th><th>phase</th><th>throughput</th><th>of ceiling</th><th>p50</th><th>p95</th>"
              "<th>p99</th><th>max</th><th>errors</th><th>statuses</th><th>CPU service</th><th>CPU postgres</th>"
              "<th>CPU k6</th><th>CPU other</th><th>service CPU ms / request</th><th>bcrypt share of service CPU"
              "</th></tr>")
    rows = []
    for label, run in results["runs"].items():
        for phase, f in run["phases"].items():
            ratio = f.get("ceiling_ratio")
            cpu = f.get("cpu", {})
            rows.append(
                f"<tr><td>{_e(label)}</td><td>{_e(phase)}</td><td class=n>{f['throughput']:.1f}/s</td>"
                f"<td class=n>{'' if ratio is None else f'{ratio:.0%}'}</td><td class=n>{_ms(f['p50_ms'])}</td>"
                f"<td class=n>{_ms(f['p95_ms'])}</td><td class=n>{_ms(f['p99_ms'])}</td><td class=n>{_ms(f['max_ms'])}"
                f"</td><td class=n>{f['errors']}</td><td>{_e(_statuses(f['statuses']))}</td>"
                f"<td class=n>{_pct(cpu.get('service', cpu.get('bare')))}</td><td class=n>{_pct(cpu.get('postgres'))}"
                f"</td><td class=n>{_pct(cpu.get('k6'))}</td><td class=n>{_pct(_other(cpu))}</td>"
                f"<td class=n>{_num(f.get('cpu_ms_per_request'), 2)}</td><td class=n>"
                f"{'' if f.get('hash_share') is None else format(f['hash_share'], '.0%')}</td></tr>"
            )
    return (f"<h2>All phases</h2><p class=muted>Throughput counts expected answers per second in the steady window "
            f"(first seconds and last second left out); percentiles are over expected answers; CPU is % of one CPU "
            f"averaged over the window (other: processes not started by the benchmark). CPU per request and the "
            f"bcrypt share do not depend on how much CPU other processes took.</p>"
            f"<table>{header}{''.join(rows)}</table>")


def _run(results: dict[str, Any], label: str, run: dict[str, Any]) -> str:
    params = " ".join(f"{k}={v}" for k, v in run["params"].items()
                      if k not in ("BASE_URL", "SUMMARY_JSON", "PASSWORD", "RUN_ID"))
    thresholds = "".join(
        f"<li class={'met' if ok else 'missed'}>{'ok' if ok else 'crossed'}: <code>{_e(name)}</code></li>"
        for name, ok in run["thresholds"].items()
    )
    extra = _extra(run.get("extra", {}))
    return (f"<h2>{_e(label)}</h2><div class=muted><code>{_e(run['script'])}</code> · {_e(params)} · k6 exit "
            f"{run['exit_code']}</div><details><summary>thresholds</summary><ul>{thresholds}</ul></details>"
            f"{extra}{_charts(results, run)}")


def _extra(extra: dict[str, Any]) -> str:
    rows = []
    if "burst_rounds" in extra:
        rounds = ", ".join(f"round {r}: {n}" for r, n in extra["burst_rounds"].items())
        rows.append(("concurrent refreshes of one token", f"{extra['burst_vus']} at once per round; 200s per round: "
                     f"{rounds}; double rotations {extra['double_rotations']}, rounds without a winner "
                     f"{extra['rounds_without_winner']}"))
    if "admitted" in extra:
        a, s = extra["admitted"], extra["shed"]
        if "offered_rate" in extra:
            rows.append(("offered", f"{extra['offered_rate']:.0f} logins/s"))
        else:
            rows.append(("clients", f"{extra['clients']}, back to back, ignoring Retry-After"))
        rows.append(("admitted (200)", f"{a['count']}, p50 {_ms(a['p50_ms'])}, p99 {_ms(a['p99_ms'])}, max "
                     f"{_ms(a['max_ms'])}"))
        rows.append(("shed (503)", f"{s['count']}, p50 {_ms(s['p50_ms'])}, p99 {_ms(s['p99_ms'])}, max "
                     f"{_ms(s['max_ms'])}"))
        rows.append(("timeouts / other 5xx / 503 without Retry-After",
                     f"{extra['timeouts']} / {extra['other_5xx']} / {extra.get('missing_retry_after', 0)}"))
    for phase, burst in extra.get("bursts", {}).items():
        a, r = burst["admitted"], burst["refused"]
        rows.append((f"{phase}: {burst['offered']} at once",
                     f"admitted {a['count']:.0f} (p50 {_ms(a['p50_ms'])}, p99 {_ms(a['p99_ms'])}, max "
                     f"{_ms(a['max_ms'])}; {burst['late']} late), 503 {r['count']:.0f} (p99 {_ms(r['p99_ms'])}; "
                     f"{burst['missing_retry_after']} without Retry-After), timed out {burst['timeouts']}, "
                     f"unanswered {burst['unanswered']}, other {burst['other']}"))
    if extra.get("storm_p99_ratio") is not None:
        rows.append(("reads' p99 during the storm (clients honour Retry-After) ÷ alone",
                     f"{extra['storm_p99_ratio']:.2f}x"))
    if extra.get("naive_p99_ratio") is not None:
        rows.append(("reads' p99 during the retry storm (clients ignore Retry-After) ÷ alone",
                     f"{extra['naive_p99_ratio']:.2f}x"))
    if extra.get("dropped"):
        rows.append(("reads not sent (k6 out of VUs)", ", ".join(f"{k} {v}" for k, v in extra["dropped"].items())))
    growth = extra.get("rss_growth")
    if growth:
        rows.append(("service RSS after warm-up", f"{growth['baseline_mib']:.1f} → {growth['final_mib']:.1f} MiB "
                     f"({growth['growth']:+.1%}) over {growth['seconds']:.0f}s; max {growth['max_mib']:.1f} MiB"))
    if extra.get("counters"):
        rows.append(("k6 counters", ", ".join(f"{k} {v}" for k, v in sorted(extra["counters"].items()))))
    if not rows:
        return ""
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"


def _charts(results: dict[str, Any], run: dict[str, Any]) -> str:
    origin, begun, ended = run["origin"], run["begun"], run["ended"]
    charts = []
    multi = len(run["series"]) > 1
    for phase, s in run["series"].items():
        if len(s.get("p50", [])) < 3:
            continue  # a few points (a burst) read better in the table
        lines = {f"{phase} {q}" if multi else q: s[q] for q in ("p50", "p95", "p99") if q in s}
        charts.append(chart(f"latency{f' · {phase}' if multi else ''} (ms)", lines))
    throughput: dict[str, Series] = {}
    for phase, s in run["series"].items():
        throughput[f"{phase} ok/s"] = s.get("ok/s", [])
        if any(v for _, v in s.get("errors/s", [])):
            throughput[f"{phase} errors/s"] = s["errors/s"]
    marks = []
    if len(run["phases"]) == 1:  # one phase: draw its ceiling (several phases may have different ones)
        (only,) = run["phases"].values()
        if only.get("ceiling_ratio"):
            marks.append((only["throughput"] / only["ceiling_ratio"], "ceiling"))
    if any(len(v) >= 2 for v in throughput.values()):
        charts.append(chart("throughput (per second)", throughput, marks=marks))
    samples = [s for s in results.get("samples", []) if begun <= s["at"] <= ended]
    if len(samples) >= 2:
        cpu: dict[str, Series] = {}
        rss: dict[str, Series] = {}
        gauges: dict[str, Series] = {}
        for s in samples:
            t = s["at"] - origin
            for group, value in s["cpu"].items():
                cpu.setdefault(group, []).append((t, value))
            cpu.setdefault("other (not ours)", []).append((t, max(0.0, s["machine_cpu"] - sum(s["cpu"].values()))))
            for group, value in s["rss"].items():
                rss.setdefault(group, []).append((t, value))
            for name, value in s.get("metrics", {}).items():
                gauges.setdefault(name, []).append((t, value))
        charts.append(chart("CPU (% of one CPU)", _ordered(cpu)))
        charts.append(chart("resident memory (MiB)", _ordered({k: v for k, v in rss.items() if k != "runner"})))
        if gauges:
            charts.append(chart("service gauges from /metrics (queue, pool)", gauges))
        else:
            charts.append(_note("queue depth and pool use: the service exported no such gauges at /metrics in this "
                                 "run"))
    return f"<div class=charts>{''.join(charts)}</div>" if charts else ""


def _profile(profile: dict[str, Any] | None) -> str:
    if not profile:
        return ""
    concerns = bar_chart(f"share of CPU samples inside… ({profile['samples']} samples)", profile["concerns"])

    def table(title: str, rows: Iterable[tuple[str, float]]) -> str:
        body = "".join(f"<tr><td class=n>{share:.1%}</td><td><code>{_e(name)}</code></td></tr>" for name, share in rows)
        return f"<h3>{_e(title)}</h3><table>{body}</table>"

    return (f"<h2>Profile: {_e(profile['scenario'])} under load (py-spy)</h2>"
            f"<p class=muted>py-spy sampled every uvicorn worker at 200 Hz for {profile['duration']}s while k6 ran the "
            f"{_e(profile['scenario'])} scenario again ({_num(profile.get('throughput'))}/s under the profiler). "
            f"Raw stacks: <code>{_e(profile['file'])}</code> (folded; any flamegraph tool reads them).</p>"
            f"<div class=charts>{concerns}</div>"
            + table("self time by library (innermost frame)", profile["self_by_library"])
            + table("hottest functions, self time", profile["top_self"])
            + table("our functions on the stack most often (inclusive)", profile["top_inclusive"]))


# SVG

def chart(title: str, lines: dict[str, Series], *, marks: Sequence[tuple[float, str]] = (),
          width: int = 560, height: int = 220) -> str:
    """A line chart: x in seconds since the run began, y from zero; `marks` are labelled horizontal lines."""
    lines = {name: points for name, points in lines.items() if points}
    if not lines:
        return ""
    left, right, top, bottom = 54, 12, 40, 26
    xs = [x for points in lines.values() for x, _ in points]
    ys = [y for points in lines.values() for _, y in points if math.isfinite(y)] + [value for value, _ in marks]
    x0, x1 = min(xs), max(xs)
    x1 = x1 if x1 > x0 else x0 + 1
    y1 = _nice_ceiling(max(ys, default=1.0) * 1.05) or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return top + plot_h - min(max(y, 0.0), y1) / y1 * plot_h

    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
           f"font-family='system-ui,sans-serif' font-size='11'>",
           f"<text x='{left}' y='15' font-size='13' font-weight='600'>{_e(title)}</text>"]
    for tick in _ticks(0.0, y1):
        y = py(tick)
        out.append(f"<line x1='{left}' x2='{width - right}' y1='{y:.1f}' y2='{y:.1f}' stroke='#eef2f7'/>"
                   f"<text x='{left - 6}' y='{y + 4:.1f}' text-anchor='end' fill='#64748b'>{_short(tick)}</text>")
    for tick in _ticks(x0, x1):
        x = px(tick)
        out.append(f"<text x='{x:.1f}' y='{height - 8}' text-anchor='middle' fill='#64748b'>{_short(tick)}s</text>")
    out.append(f"<line x1='{left}' x2='{left}' y1='{top}' y2='{top + plot_h}' stroke='#94a3b8'/>"
               f"<line x1='{left}' x2='{width - right}' y1='{top + plot_h}' y2='{top + plot_h}' stroke='#94a3b8'/>")
    for value, label in marks:
        y = py(value)
        out.append(f"<line x1='{left}' x2='{width - right}' y1='{y:.1f}' y2='{y:.1f}' stroke='#0f172a' "
                   f"stroke-dasharray='5 4'/><text x='{width - right - 4}' y='{y - 4:.1f}' text-anchor='end'>"
                   f"{_e(label)} {_short(value)}</text>")
    legend_x = left
    for index, (name, points) in enumerate(lines.items()):
        color = PALETTE[index % len(PALETTE)]
        for segment in _segments(points):
            if len(segment) == 1:
                x, y = segment[0]
                out.append(f"<circle cx='{px(x):.1f}' cy='{py(y):.1f}' r='2.5' fill='{color}'><title>{_e(name)}</title>"
                           "</circle>")
            else:
                path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in segment if math.isfinite(y))
                out.append(f"<polyline points='{path}' fill='none' stroke='{color}' stroke-width='1.6'>"
                           f"<title>{_e(name)}</title></polyline>")
        label = name if len(name) <= 28 else name[:27] + "…"
        if legend_x + 14 + 6.2 * len(label) > width - right:
            continue  # no room left: the line still names itself on hover
        out.append(f"<rect x='{legend_x}' y='23' width='10' height='10' fill='{color}'/>"
                   f"<text x='{legend_x + 14}' y='32'>{_e(label)}</text>")
        legend_x += 24 + int(6.2 * len(label))
    out.append("</svg>")
    return "".join(out)


def bar_chart(title: str, rows: Sequence[tuple[str, float]], width: int = 760) -> str:
    """Horizontal bars of shares (0…1)."""
    bar_h, top, label_w = 20, 30, 430
    height = top + bar_h * len(rows) + 8
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
           f"font-family='system-ui,sans-serif' font-size='12'>"
           f"<text x='8' y='18' font-size='13' font-weight='600'>{_e(title)}</text>"]
    for index, (name, share) in enumerate(rows):
        y = top + index * bar_h
        length = max(1.0, share * (width - label_w - 70))
        out.append(f"<text x='{label_w - 6}' y='{y + 14}' text-anchor='end'>{_e(name)}</text>"
                   f"<rect x='{label_w}' y='{y + 3}' width='{length:.1f}' height='{bar_h - 6}' "
                   f"fill='{PALETTE[index % len(PALETTE)]}'/><text x='{label_w + length + 6:.1f}' y='{y + 14}'>"
                   f"{share:.1%}</text>")
    out.append("</svg>")
    return "".join(out)


def _note(text: str, width: int = 560, height: int = 220) -> str:
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
            f"font-family='system-ui,sans-serif' font-size='12'>"
            f"<foreignObject x='16' y='16' width='{width - 32}' height='{height - 32}'>"
            f"<div xmlns='http://www.w3.org/1999/xhtml' style='color:#64748b'>{_e(text)}</div></foreignObject></svg>")


def _segments(points: Series, gap: float = 2.5) -> list[Series]:
    """Splits a series where it has no points for more than `gap` seconds (between phases)."""
    segments: list[Series] = []
    for point in sorted(points):
        if segments and point[0] - segments[-1][-1][0] <= gap:
            segments[-1].append(point)
        else:
            segments.append([point])
    return segments


def _ordered(groups: dict[str, Series]) -> dict[str, Series]:
    def rank(name: str) -> int:
        head = name.split(" ")[0]
        return GROUP_ORDER.index(head) if head in GROUP_ORDER else len(GROUP_ORDER)

    return {name: groups[name] for name in sorted(groups, key=rank)}


def _nice_ceiling(value: float) -> float:
    if value <= 0:
        return 0.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    for step in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    span = high - low
    if span <= 0:
        return [low]
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(s * magnitude for s in (1, 2, 2.5, 5, 10) if s * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _short(value: float) -> str:
    if abs(value) >= 10_000:
        return f"{value / 1000:.0f}k"
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.1f}"


# text

def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _ms(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}%"


def _num(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _other(cpu: dict[str, float]) -> float | None:
    if "machine" not in cpu:
        return None
    return max(0.0, cpu["machine"] - sum(value for group, value in cpu.items() if group != "machine"))


def _statuses(statuses: dict[str, int]) -> str:
    return " ".join(f"{status}x{count}" for status, count in statuses.items())


def _loads(loads: Sequence[float] | None) -> str:
    return " ".join(f"{load:.2f}" for load in loads) if loads else "?"
