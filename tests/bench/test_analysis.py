"""The runner's pure parts: percentiles, steady windows, /metrics parsing, profile shares, charts."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

from k6 import analysis, profile, report, sampler, series, targets, usage


def request(at: float, duration: float = 10.0, *, status: int = 200, expected: bool = True) -> series.Request:
    return series.Request(at=at, scenario="login", name="login", status=status, duration=duration, expected=expected)


def test_percentiles_interpolate_between_ranks_like_numpy() -> None:
    values = [float(v) for v in range(1, 101)]
    assert series.percentile(values, 50) == 50.5
    assert math.isclose(series.percentile(values, 99), 99.01)
    assert math.isnan(series.percentile([], 99))


def test_the_steady_window_leaves_out_the_start_and_the_last_second() -> None:
    requests = [request(1000 + t / 10) for t in range(300)]  # 30 seconds
    start, end = series.window(requests)
    assert (round(start - 1000, 1), round(end - 1000, 1)) == (3.0, 28.9)


def test_throughput_counts_expected_answers_only_and_errors_are_reported() -> None:
    requests = [request(1000 + t / 10) for t in range(100)] + [request(1005, status=503, expected=False)]
    figures = series.stats(requests, (1000.0, 1010.0))
    assert figures["ok"] == 100 and figures["errors"] == 1
    assert figures["throughput"] == 10.0
    assert figures["statuses"] == {"200": 100, "503": 1}


def test_k6_csv_is_read_with_custom_metric_tags(tmp_path: Path) -> None:
    csv = tmp_path / "run.csv"
    csv.write_text(
        "metric_name,timestamp,metric_value,error_code,expected_response,method,name,scenario,status,extra_tags,metadata\n"
        "http_req_duration,1700000000500,12.5,,true,POST,burst,burst,200,round=0,\n"
        "http_req_waiting,1700000000500,12.0,,true,POST,burst,burst,200,round=0,\n"
        "burst_wins,1700000000500,1,,,,burst,burst,,round=0,\n"
    )
    points = series.read(csv, ["burst_wins"])
    assert points.requests == [series.Request(1700000000.5, "burst", "burst", 200, 12.5, True)]
    assert [(p.metric, p.value, p.tags) for p in points.custom] == [("burst_wins", 1.0, {"round": "0"})]


def test_metrics_keeps_gauges_of_queues_and_pools_only() -> None:
    text = (
        "# HELP auth_password_queue_depth jobs waiting\n"
        'auth_password_queue_depth{worker="1"} 3\n'
        'auth_password_queue_depth{worker="2"} 2\n'
        "auth_db_pool_checked_out 4.0\n"
        "auth_password_queue_wait_seconds_count 10\n"
        'auth_password_queue_wait_seconds_bucket{le="0.1"} 5\n'
        "process_resident_memory_bytes 1e6\n"
    )
    assert sampler.parse_metrics(text) == {"auth_password_queue_depth": 5.0, "auth_db_pool_checked_out": 4.0}


def test_profile_shares_count_each_sample_once_per_concern(tmp_path: Path) -> None:
    folded = tmp_path / "profile.txt"
    folded.write_text(  # as py-spy writes them: files relative to their sys.path entry
        'process 1:"python -m service.cli serve";run (uvicorn/server.py:1);me (service/routes/auth.py:9);'
        "verify_access (service/tokens.py:57);decode (jwt/api_jwt.py:3);verify (jwt/algorithms.py:9) 3\n"
        'process 1:"python -m service.cli serve";run (uvicorn/server.py:1);execute (sqlalchemy/orm/session.py:1) 1\n'
    )
    found = profile.analyse(profile.read(folded))
    shares = dict(found["concerns"])  # type: ignore[call-overload]
    assert found["samples"] == 4
    assert shares["JWT verification (tokens.verify_access: PyJWT, cryptography)"] == 0.75
    assert shares["database layer (SQLAlchemy, asyncpg)"] == 0.25
    assert dict(found["self_by_library"]) == {"jwt": 0.75, "sqlalchemy": 0.25}  # type: ignore[call-overload]


def test_frames_name_their_library() -> None:
    assert profile.library("Task.__step (asyncio/tasks.py:12)") == "asyncio"
    assert profile.library("ABCMeta.__instancecheck__ (<frozen abc>:119)") == "abc"
    assert profile.library("f (/venv/lib/python3.11/site-packages/redis/client.py:3)") == "redis"


def test_charts_are_well_formed_svg_with_a_line_per_series() -> None:
    svg = report.chart("latency (ms)", {"p50": [(0, 1.0), (1, 2.0)], "p99": [(0, 5.0), (1, 9.0)]},
                       marks=[(8.0, "ceiling")])
    root = ET.fromstring(svg)  # noqa: S314 - our own output
    assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) == 2
    ET.fromstring(report.bar_chart("shares", [("JWT", 0.1), ("database", 0.4)]))  # noqa: S314 - ours


def test_rss_growth_is_measured_after_the_warm_up() -> None:
    samples = [sampler.Sample(at=float(t), cpu={}, rss={"service": 100.0 + (5 if t > 60 else 0)}, processes={},
                              machine_cpu=0.0, metrics={}) for t in range(120)]
    growth = usage.rss_growth(samples)
    assert growth is not None
    assert (growth["baseline_mib"], growth["final_mib"], round(growth["growth"], 2)) == (100.0, 105.0, 0.05)


def test_a_burst_of_simultaneous_requests_counts_how_each_was_answered() -> None:
    def answer(status: int, duration: float) -> series.Request:
        return series.Request(at=1000.0, scenario="registrations", name="register", status=status,
                              duration=duration, expected=status in (201, 503))

    requests = [answer(201, 120.0), answer(201, 2500.0), answer(503, 4.0), answer(503, 6.0), answer(0, 15000.0)]
    found = analysis.burst_answers(requests, 201, offered=7, missing_retry_after=1)
    assert (found["within_bound"], found["late"], found["refused"]["count"], found["timeouts"], found["other"],
            found["unanswered"]) == (1, 1, 2, 1, 0, 2)
    run = {"script": "k6/scenarios/concurrent.js", "params": {}, "phases": {},
           "extra": {"bursts": {"registrations": found}}}
    row = targets.targets({"meta": {}, "ceilings": {}, "runs": {"concurrent": run}})[0]
    # late, without Retry-After, timed out, unanswered: each is a client the service failed
    assert (row["id"], row["value"], row["met"]) == ("5.registrations", 5, False)


def test_several_runs_are_judged_on_their_median_or_on_the_worst_run_where_a_target_holds_for_every_run() -> None:
    def run(login: float, me: float) -> list[dict[str, object]]:
        return [{"id": "3.login", "value": login, "met": login >= 0.95, "measured": f"{login}"},
                {"id": "1.throughput", "value": me, "met": me >= 0.6, "measured": f"{me}"}]

    rows = {row["id"]: row for row in targets.combine([run(0.97, 0.5), run(0.94, 0.62), run(0.99, 0.65)])}
    assert (rows["3.login"]["value"], rows["3.login"]["met"]) == (0.94, False)  # one run below 95%: missed
    assert (rows["1.throughput"]["value"], rows["1.throughput"]["met"]) == (0.62, True)  # the median run
    assert rows["1.throughput"]["runs"] == [0.5, 0.62, 0.65]
    assert rows["1.throughput"]["measured"].startswith("median 62.0% of 3 runs (50.0%, 62.0%, 65.0%); run 2: ")
